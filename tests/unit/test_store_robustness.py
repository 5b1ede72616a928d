"""The catalog under faults: damaged files, newer schemas, migrations, a process killed
mid-write, a full disk, and readers running while the writer commits."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clipsearch.errors import DiskFullError, LibraryError
from clipsearch.store import (
    CATALOG_FILE,
    SCHEMA_VERSION,
    Catalog,
    ItemWrite,
    ModelBinding,
    migrations,
)

REPO = Path(__file__).resolve().parents[2]
DIM = 64
BINDING = ModelBinding(spec="tiny", fingerprint="fp", dim=DIM)


def writes(start: int, n: int, *, frames: int = 0, seed: int = 0) -> list[ItemWrite]:
    rng = np.random.default_rng(seed + start)
    out = []
    for i in range(start, start + n):
        if frames:
            v = rng.standard_normal((frames + 1, DIM)).astype(np.float32)
            ts = np.append(np.arange(frames, dtype=float), np.nan)
            out.append(
                ItemWrite(
                    f"/v/{i:05d}.mp4", None, "video", i, i, f"h{i}", "ok", vectors=v, timestamps=ts
                )
            )
        else:
            v = rng.standard_normal((1, DIM)).astype(np.float32)
            out.append(ItemWrite(f"/p/{i:05d}.jpg", None, "image", i, i, f"h{i}", "ok", vectors=v))
    return out


def run_python(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def integrity_ok(db: Path) -> bool:
    conn = sqlite3.connect(db)
    try:
        return (
            conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            and not conn.execute("PRAGMA foreign_key_check").fetchall()
        )
    finally:
        conn.close()


# -- damaged or foreign files ------------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [
        os.urandom(8192),
        b"hello, this is a text file\n" * 50,
        b"SQLite format 3\x00" + os.urandom(4000),
    ],
    ids=["random", "text", "bad-header"],
)
def test_garbage_catalog_is_a_library_error_with_path_and_advice(tmp_path, content):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / CATALOG_FILE).write_bytes(content)
    for kw in ({}, {"readonly": True}):
        with pytest.raises(LibraryError) as e:
            Catalog.open(lib, **kw)
        msg = str(e.value)
        assert str(lib / CATALOG_FILE) in msg and "index your folders again" in msg
    assert (lib / CATALOG_FILE).read_bytes() == content  # never "repaired" behind the user's back


def test_foreign_sqlite_database_is_refused(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    conn = sqlite3.connect(lib / CATALOG_FILE)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.commit()
    conn.close()
    with pytest.raises(LibraryError, match="another program"):
        Catalog.open(lib)


def test_an_empty_catalog_file_is_an_error_not_a_new_library(tmp_path):
    """A 0-byte catalog.sqlite is a catalog that lost its contents (a failed copy, a
    damaged disk); silently starting a new library would hide that."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / CATALOG_FILE).write_bytes(b"")
    for kw in ({}, {"readonly": True}, {"create": False}):
        with pytest.raises(LibraryError, match=r"empty \(0 bytes\)") as e:
            Catalog.open(lib, **kw)
        assert str(lib / CATALOG_FILE) in str(e.value)
    assert (lib / CATALOG_FILE).read_bytes() == b""  # left as it was, for the user to inspect


def damage_page(db: Path, fraction: float) -> None:
    """Overwrite 4 KB inside the first page at or after ``fraction`` of the file that holds
    rows (not its first bytes). An empty table's root page is all unused space: random
    bytes there lose nothing, and no check can tell them from the free space they replace."""
    con = sqlite3.connect(db)
    try:
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        holding = sorted(p for (p,) in con.execute("SELECT pageno FROM dbstat WHERE ncell > 0"))
    finally:
        con.close()
    raw = bytearray(db.read_bytes())
    page = next(p for p in holding if p >= int(len(raw) * fraction) // page_size + 1)
    at = (page - 1) * page_size + 100
    raw[at : at + 4096] = np.random.default_rng(5).bytes(4096)
    db.write_bytes(bytes(raw))


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_damage_anywhere_in_a_small_catalog_is_reported_on_open(tmp_path, fraction):
    """Damage in pages that `stats` never reads used to pass unnoticed by status and
    index; SQLite's quick_check on open reports it, to every command."""
    lib = tmp_path / "lib"
    with Catalog.open(lib) as c:
        c.bind_model(BINDING)
        c.write_items(writes(0, 3000))
    damage_page(lib / CATALOG_FILE, fraction)
    for kw in ({}, {"readonly": True}):
        with pytest.raises(LibraryError, match=r"damaged.*index your folders again") as e:
            Catalog.open(lib, **kw)
        assert str(lib / CATALOG_FILE) in str(e.value) and len(str(e.value)) < 800


def test_truncated_catalog_fails_with_library_error_not_sqlite_error(tmp_path):
    lib = tmp_path / "lib"
    with Catalog.open(lib) as c:
        c.bind_model(BINDING)
        c.write_items(writes(0, 2000))
    db = lib / CATALOG_FILE
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    with pytest.raises(LibraryError, match="damaged"), Catalog.open(lib) as c:
        c.load_vectors()
        c.stats()
        c.vector_ids()


# -- schema versions and migrations ------------------------------------------------------------
def test_newer_schema_is_refused_with_upgrade_advice(tmp_path):
    lib = tmp_path / "lib"
    Catalog.open(lib).close()
    conn = sqlite3.connect(lib / CATALOG_FILE)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    for kw in ({}, {"readonly": True}):
        with pytest.raises(LibraryError, match="newer clipsearch") as e:
            Catalog.open(lib, **kw)
        assert "Upgrade clipsearch" in str(e.value)


def test_migration_names_are_numbered_in_order():
    names = [m.__name__ for m in migrations.MIGRATIONS]
    assert names[0] == "m001_initial"
    for n, name in enumerate(names, start=1):
        assert name.startswith(f"m{n:03d}_")
    assert len(names) == SCHEMA_VERSION


def test_upgrade_from_version_1_keeps_data(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    db = lib / CATALOG_FILE
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrations.migrate(conn, db, target=1) == 1
    conn.execute(
        "INSERT INTO items (path, kind, size, mtime_ns, status, indexed_at) VALUES ('/a.jpg', 'image', 1, 1, 'ok', 0)"
    )
    conn.execute(
        "INSERT INTO vectors (item_id, t, vector) VALUES (1, NULL, ?)",
        (np.ones(DIM, "<f2").tobytes(),),
    )
    conn.close()
    with pytest.raises(LibraryError, match="read-only open cannot"):
        Catalog.open(lib, readonly=True)
    with Catalog.open(lib) as c:
        assert c.stats()["schema_version"] == SCHEMA_VERSION
        assert c.item_by_path("/a.jpg").kind == "image"
        c.set_tags({1: {"x": 1.0}}, source="t")  # the m002 table exists
        assert c.cuts([1]) == {}  # m005: shots not known for what an older version indexed
        np.testing.assert_array_equal(c.item_vectors([1])[1], np.ones(DIM, np.float32))


def test_upgrade_from_version_4_keeps_read_text_and_capture_times_and_adds_shots(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    db = lib / CATALOG_FILE
    conn = sqlite3.connect(db, isolation_level=None)
    before = SCHEMA_VERSION - 1
    assert before == 4 and migrations.MIGRATIONS[before].__name__ == "m005_shots"
    assert migrations.migrate(conn, db, target=before) == before
    conn.execute(
        "INSERT INTO items (path, kind, size, mtime_ns, status, indexed_at, duration) "
        "VALUES ('/v.mp4', 'video', 1, 1, 'ok', 0, 9.0)"
    )
    conn.execute(
        "INSERT INTO texts (item_id, source, t, text, body) VALUES (1, 'ocr', 2.0, 'EXIT', 'exit')"
    )
    conn.execute(
        "INSERT INTO capture_times (item_id, taken_ns, offset_min, source) "
        "VALUES (1, 7, 60, 'container')"
    )
    conn.close()
    with Catalog.open(lib) as c:
        assert c.stats()["schema_version"] == SCHEMA_VERSION
        assert c.texts.texts(1) == [("ocr", 2.0, "EXIT")]
        taken = c.capture_times([1])[1]
        assert (taken.ns, taken.offset_min, taken.source) == (7, 60, "container")
        assert c.cuts([1]) == {}  # shots not known until the video is indexed again


def test_failing_migration_rolls_back_completely(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    Catalog.open(lib).close()

    def m003_broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        conn.execute("ALTER TABLE items ADD COLUMN rating INTEGER")
        conn.execute("THIS IS NOT SQL")

    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, m003_broken))
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(LibraryError):
        Catalog.open(lib)
    conn = sqlite3.connect(lib / CATALOG_FILE)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert (
        conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0]
        == 0
    )
    assert "rating" not in [r[1] for r in conn.execute("PRAGMA table_info(items)")]
    conn.close()


# -- crashes -----------------------------------------------------------------------------------
def test_process_killed_inside_a_write_transaction_keeps_previous_state(tmp_path):
    lib = tmp_path / "lib"
    code = f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store_robustness import writes, BINDING
        from clipsearch.store import Catalog
        cat = Catalog.open({str(lib)!r})
        cat.bind_model(BINDING)
        cat.write_items(writes(0, 50))
        # Die the moment the second batch starts inserting vectors: its items are already
        # upserted inside the open transaction.
        cat._conn.set_trace_callback(lambda sql: os._exit(7) if "INSERT INTO vectors" in sql else None)
        cat.write_items(writes(50, 50) + writes(0, 10, seed=99))
        os._exit(0)
    """
    proc = run_python(code)
    assert proc.returncode == 7, proc.stderr
    assert integrity_ok(lib / CATALOG_FILE)
    with Catalog.open(lib) as c:
        s = c.stats()
        assert s["items"]["ok"] == 50 and s["vectors"] == 50 and c.generation() == 1
        assert c.item_by_path("/p/00060.jpg") is None
        before = writes(0, 1)[0].vectors[0].astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(
            c.item_vectors([c.item_by_path("/p/00000.jpg").id]).popitem()[1], before
        )
        c.write_items(writes(50, 50))  # the next run resumes
        assert c.stats()["items"]["ok"] == 100 and c.generation() == 2


def test_kill_9_at_a_random_moment_leaves_whole_batches(tmp_path):
    lib = tmp_path / "lib"
    code = f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store_robustness import writes, BINDING
        from clipsearch.store import Catalog
        cat = Catalog.open({str(lib)!r})
        cat.bind_model(BINDING)
        for b in range(10_000):
            cat.write_items(writes(b * 20, 20, frames=7))
            print(b + 1, flush=True)
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        committed = 0
        while committed < 15:
            line = proc.stdout.readline()
            assert line, "writer died early"
            committed = int(line)
        time.sleep(0.07)  # then kill wherever the writer happens to be
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # The writer printed each batch number after its commit returned.
        committed = max([committed, *(int(x) for x in proc.stdout.read().split())])
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert integrity_ok(lib / CATALOG_FILE)
    with Catalog.open(lib) as c:
        s = c.stats()
        n = s["items"]["ok"]
        assert n % 20 == 0  # whole batches only
        assert (
            committed <= n // 20 <= committed + 1
        )  # nothing committed lost; at most the batch in flight
        assert s["vectors"] == 8 * n and s["frames"] == 7 * n
        assert c.generation() == n // 20
        table = c.load_vectors()
        counts = np.bincount(table.item_ids)
        assert set(counts[counts > 0].tolist()) == {8}


# -- disk full ---------------------------------------------------------------------------------
def test_disk_full_rolls_back_the_batch_and_keeps_earlier_data(tmp_path):
    lib = tmp_path / "lib"
    with Catalog.open(lib) as c:
        c.bind_model(BINDING)
        c.write_items(writes(0, 100))
        gen = c.generation()
        before = c.load_vectors()
        pages = c._conn.execute("PRAGMA page_count").fetchone()[0]
        c._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # ~32 KiB of room left
        with pytest.raises(DiskFullError) as e:
            c.write_items(writes(100, 500))
        msg = str(e.value)
        assert "Free some disk space" in msg and "run the same command again" in msg
        assert c.generation() == gen and c.stats()["items"]["ok"] == 100
        after = c.load_vectors()
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_array_equal(after.vectors, before.vectors)
        with Catalog.open(lib, readonly=True) as reader:
            assert reader.stats()["items"]["ok"] == 100
        c._conn.execute("PRAGMA max_page_count = 1073741823")  # space freed
        c.write_items(writes(100, 500))
        assert c.stats()["items"]["ok"] == 600 and c.generation() == gen + 1
    assert integrity_ok(lib / CATALOG_FILE)


# -- readers while the writer commits ----------------------------------------------------------
def test_reader_is_not_blocked_by_a_writer_inside_its_transaction(tmp_path):
    lib = tmp_path / "lib"
    writer = Catalog.open(lib)
    writer.bind_model(BINDING)
    writer.write_items(writes(0, 10))
    inside, release = threading.Event(), threading.Event()

    def pause(sql: str) -> None:
        if "INSERT INTO vectors" in sql and not inside.is_set():
            inside.set()
            release.wait(20)

    writer._conn.set_trace_callback(pause)
    t = threading.Thread(target=writer.write_items, args=(writes(10, 10),))
    t.start()
    try:
        assert inside.wait(20)  # the writer holds the write lock, its batch half-written
        t0 = time.perf_counter()
        with Catalog.open(lib, readonly=True) as ro, Catalog.open(lib) as rw:
            for reader in (ro, rw):
                assert reader.stats()["items"]["ok"] == 10  # the last committed state
                assert len(reader.load_vectors()) == 10
                assert reader.generation() == 1
        assert time.perf_counter() - t0 < 5  # far below busy_timeout: nobody waited
    finally:
        release.set()
        t.join(20)
    writer._conn.set_trace_callback(None)
    with Catalog.open(lib, readonly=True) as ro:
        assert ro.stats()["items"]["ok"] == 20 and ro.generation() == 2
    writer.close()


def test_reader_process_sees_only_whole_batches_while_writer_runs(tmp_path):
    lib = tmp_path / "lib"
    Catalog.open(lib).close()
    code = f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store_robustness import writes, BINDING
        from clipsearch.store import Catalog
        cat = Catalog.open({str(lib)!r})
        cat.bind_model(BINDING)
        for b in range(40):
            cat.write_items(writes(b * 10, 10, frames=3))
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env)
    seen, last_gen = 0, -1
    with Catalog.open(lib, readonly=True) as reader:
        while True:
            done = proc.poll() is not None
            table = reader.load_vectors()
            counts = np.bincount(table.item_ids) if len(table) else np.zeros(1, int)
            assert set(counts[counts > 0].tolist()) <= {4}  # never a partial item
            assert len(table) % 40 == 0  # never a partial batch
            assert table.generation >= last_gen
            last_gen, seen = table.generation, len(table) // 4
            if done:
                break
    assert proc.wait(timeout=60) == 0
    assert seen == 400 and last_gen == 40


def test_a_healthy_catalog_with_tags_opens(tmp_path):
    """SQLite 3.40's quick_check reports NULLs in the NOT NULL columns of WITHOUT ROWID
    tables (tags) that hold none; a healthy library must still open."""
    lib = tmp_path / "lib"
    with Catalog.open(lib) as c:
        c.bind_model(BINDING)
        ids = c.write_items(writes(0, 20))
        c.set_tags({i: {"red": 0.9, "blue": 0.4} for i in ids}, source="test")
    with Catalog.open(lib) as c, Catalog.open(lib, readonly=True) as r:
        assert c.tags(ids[:1]) == r.tags(ids[:1]) == {ids[0]: {"red": 0.9, "blue": 0.4}}


def test_a_real_null_in_a_not_null_column_is_damage(tmp_path):
    lib = tmp_path / "lib"
    with Catalog.open(lib) as c:
        c.bind_model(BINDING)
        ids = c.write_items(writes(0, 5))
    conn = sqlite3.connect(lib / CATALOG_FILE)
    conn.execute("PRAGMA writable_schema = ON")  # what a damaged page can amount to
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = replace(sql, 'path TEXT NOT NULL', 'path TEXT') "
        "WHERE name = 'items'"
    )
    conn.commit()
    conn.close()
    conn = sqlite3.connect(lib / CATALOG_FILE)
    conn.execute("UPDATE items SET path = NULL WHERE id = ?", (ids[0],))
    conn.commit()
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = replace(sql, 'path TEXT', 'path TEXT NOT NULL') "
        "WHERE name = 'items'"
    )
    conn.commit()
    conn.close()
    with pytest.raises(LibraryError, match=r"damaged .*NULL value in items\.path"):
        Catalog.open(lib)
