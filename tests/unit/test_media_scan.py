"""scan and partial_hash: the walk finds every media file once, in a stable order, obeys
include/exclude/hidden, survives symlink loops, odd names and unreadable folders; the
partial hash recognises copies and notices edits."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipsearch.errors import NotFoundError
from clipsearch.media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    MediaFile,
    kind_of,
    partial_hash,
    scan,
    scan_paths,
)
from clipsearch.media.identity import WINDOW

# The package attribute ``clipsearch.media.scan`` is the function; fetch the module itself.
scan_module = importlib.import_module("clipsearch.media.scan")


def make(root: Path, *relpaths: str, content: bytes = b"x") -> None:
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def rels(files: list[MediaFile], root: Path) -> list[str]:
    return [f.path.relative_to(root).as_posix() for f in files]


def run(root: Path, **kwargs: object) -> list[str]:
    """The relative paths `scan` yields. `scan_paths` (the walk of an index run) must
    yield the same files as plain tuples and report the same errors, so every walk below
    checks both."""
    given = kwargs.pop("on_error", None)
    reported: list[tuple[Path, str]] = []
    again: list[tuple[Path, str]] = []

    def first(p: Path, why: str) -> None:
        reported.append((p, why))
        given(p, why)  # type: ignore[operator]

    files = list(scan([root], on_error=given and first, **kwargs))  # type: ignore[arg-type]
    tuples = scan_paths([root], on_error=given and (lambda p, w: again.append((p, w))), **kwargs)  # type: ignore[arg-type]
    assert list(tuples) == as_tuples(files)
    assert again == reported
    return rels(files, root)


def as_tuples(files: list[MediaFile]) -> list[tuple[str, str, int, int]]:
    return [(str(f.path), f.kind, f.size, f.mtime_ns) for f in files]


# --- kinds ---------------------------------------------------------------------------------
def test_kind_of() -> None:
    assert kind_of("a/b/Photo.JPG") == "image"
    assert kind_of(Path("x.heic")) == "image"
    assert kind_of("clip.MP4") == "video"
    assert kind_of("notes.txt") is None
    assert kind_of(".jpg") is None  # a dot-file named ".jpg" has no extension
    assert {".mp4", ".mov", ".mkv", ".webm", ".m2ts", ".ogv"} <= VIDEO_EXTENSIONS
    assert {".jpg", ".jpeg", ".png", ".webp", ".heic", ".avif", ".tiff"} <= IMAGE_EXTENSIONS
    assert not IMAGE_EXTENSIONS & VIDEO_EXTENSIONS


# --- the walk ------------------------------------------------------------------------------
def test_finds_media_recursively_in_sorted_order(tmp_path: Path) -> None:
    make(tmp_path, "b.jpg", "a/z.mp4", "a/b/c.PNG", "a.webp", "notes.txt", "a/readme.md")
    (tmp_path / "zero.jpg").write_bytes(b"")

    files = list(scan([tmp_path]))

    assert rels(files, tmp_path) == ["a/b/c.PNG", "a/z.mp4", "a.webp", "b.jpg", "zero.jpg"]
    assert [f.kind for f in files] == ["image", "video", "image", "image", "image"]
    for f in files:
        assert f.path.is_absolute()
        st = f.path.stat()
        assert (f.size, f.mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert files[-1].size == 0  # zero-byte files are yielded; the decoder records them
    assert list(scan([tmp_path])) == files  # deterministic


def test_relative_root_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(tmp_path, "photos/a.jpg")
    monkeypatch.chdir(tmp_path)
    assert [f.path for f in scan(["photos"])] == [tmp_path / "photos" / "a.jpg"]


def test_missing_root_fails_before_anything_is_yielded(tmp_path: Path) -> None:
    make(tmp_path, "good/a.jpg")
    with pytest.raises(NotFoundError, match="not found"):
        scan([tmp_path / "good", tmp_path / "missing"])  # raises at the call, not mid-walk


def test_root_that_is_not_a_folder_or_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(NotFoundError):
        scan([fifo])


def test_file_root(tmp_path: Path) -> None:
    make(tmp_path, "one.jpg", "notes.txt")
    assert [f.path for f in scan([tmp_path / "one.jpg"])] == [tmp_path / "one.jpg"]
    assert list(scan([tmp_path / "notes.txt"])) == []


def test_overlapping_roots_yield_each_file_once(tmp_path: Path) -> None:
    make(tmp_path, "a.jpg", "sub/b.jpg")
    roots = [tmp_path, tmp_path / "sub", tmp_path / "a.jpg"]
    files = list(scan(roots))
    assert rels(files, tmp_path) == ["a.jpg", "sub/b.jpg"]
    assert list(scan_paths(roots)) == as_tuples(files)


def test_scan_paths_are_the_records_paths_for_file_roots_relative_roots_and_slash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index run compares the catalog with `scan_paths` strings and stores records made
    from them: each must be the ``str`` of the path `scan` gives the same file."""
    make(tmp_path, "photos/a.jpg", "photos/sub/b.mp4")
    monkeypatch.chdir(tmp_path)
    for roots in (
        ["photos"],
        ["photos/sub/"],
        [tmp_path / "photos" / "a.jpg"],
        ["//" + str(tmp_path)[1:]],
    ):
        files = list(scan(roots))
        assert files and list(scan_paths(roots)) == as_tuples(files)
        assert [Path(t[0]) for t in scan_paths(roots)] == [f.path for f in files]
    with pytest.raises(NotFoundError, match="not found"):
        scan_paths([tmp_path / "photos", tmp_path / "missing"])  # at the call, as scan


# --- include / exclude / hidden ------------------------------------------------------------
@pytest.fixture
def album(tmp_path: Path) -> Path:
    make(
        tmp_path,
        "top.jpg",
        "top.png",
        "2019/a.jpg",
        "2019/deep/b.jpg",
        "2020/raw/c.jpg",
        "2020/d.PNG",
        "node_modules/pkg/logo.png",
        "clips/e.mp4",
    )
    return tmp_path


def test_include_matches_base_name_at_any_depth(album: Path) -> None:
    assert run(album, include=["*.png"]) == ["2020/d.PNG", "node_modules/pkg/logo.png", "top.png"]


def test_include_with_slash_is_anchored_at_the_root(album: Path) -> None:
    assert run(album, include=["2019/*.jpg"]) == ["2019/a.jpg"]
    assert run(album, include=["2019/**"]) == ["2019/a.jpg", "2019/deep/b.jpg"]
    assert run(album, include=["**/b.jpg", "top.*"]) == ["2019/deep/b.jpg", "top.jpg", "top.png"]
    assert run(album, include=["**/top.jpg"]) == ["top.jpg"]  # **/ also matches no folder


def test_exclude_prunes_folders(album: Path) -> None:
    assert run(album, exclude=["node_modules", "**/raw/**", "*.mp4"]) == [
        "2019/a.jpg",
        "2019/deep/b.jpg",
        "2020/d.PNG",
        "top.jpg",
        "top.png",
    ]
    assert run(album, exclude=["20??"]) == [
        "clips/e.mp4",
        "node_modules/pkg/logo.png",
        "top.jpg",
        "top.png",
    ]


@pytest.mark.parametrize("pattern", ["raw", "**/raw/**", "2020/raw/**", "2020/raw"])
def test_excluded_folder_is_not_entered(album: Path, pattern: str) -> None:
    (album / "2020" / "raw" / "broken.jpg").symlink_to(album / "nowhere")
    errors: list[tuple[Path, str]] = []
    found = run(album, exclude=[pattern], on_error=lambda p, why: errors.append((p, why)))
    assert "2020/raw/c.jpg" not in found and "2020/d.PNG" in found
    assert errors == []  # the broken link inside was never looked at


def test_exclude_wins_over_include_and_matching_ignores_case(album: Path) -> None:
    assert run(album, include=["*.JPG"], exclude=["2019/**"]) == ["2020/raw/c.jpg", "top.jpg"]


def test_character_classes(album: Path) -> None:
    assert run(album, include=["[ab].jpg"]) == ["2019/a.jpg", "2019/deep/b.jpg"]
    assert run(album, include=["[!ab].jpg"]) == ["2020/raw/c.jpg"]


def test_a_bare_string_pattern_is_one_pattern(album: Path) -> None:
    assert run(album, include="*.mp4") == ["clips/e.mp4"]


def test_hidden_files_and_folders_are_skipped_by_default(tmp_path: Path) -> None:
    make(tmp_path, "seen.jpg", ".hidden.jpg", ".cache/x.jpg", "ok/._AppleDouble.jpg")
    assert run(tmp_path) == ["seen.jpg"]
    assert run(tmp_path, hidden=True) == [
        ".cache/x.jpg",
        ".hidden.jpg",
        "ok/._AppleDouble.jpg",
        "seen.jpg",
    ]


def test_hidden_root_itself_is_walked(tmp_path: Path) -> None:
    make(tmp_path, ".photos/a.jpg")
    assert run(tmp_path / ".photos") == ["a.jpg"]


# --- symlinks ------------------------------------------------------------------------------
def test_symlink_loop_terminates(tmp_path: Path) -> None:
    make(tmp_path, "a/one.jpg", "a/b/two.jpg")
    (tmp_path / "a" / "b" / "up").symlink_to(tmp_path / "a")  # a/b/up -> a: a cycle
    (tmp_path / "a" / "self").symlink_to(tmp_path / "a" / "self")  # points at itself
    errors: list[tuple[Path, str]] = []

    found = run(tmp_path, on_error=lambda p, why: errors.append((p, why)))

    assert found == ["a/b/two.jpg", "a/one.jpg"]
    assert [p.name for p, _ in errors] == ["self"]


def test_folder_symlinked_twice_is_walked_once(tmp_path: Path) -> None:
    make(tmp_path, "real/x.jpg", "real/y.mp4")
    (tmp_path / "link1").symlink_to(tmp_path / "real")
    (tmp_path / "link2").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "alias.jpg").symlink_to(tmp_path / "real" / "x.jpg")

    files = run(tmp_path)

    # First path in walk order wins: alias.jpg, then link1/ (sorted before real/).
    assert files == ["alias.jpg", "link1/y.mp4"]


def test_hard_links_are_one_file(tmp_path: Path) -> None:
    make(tmp_path, "a.jpg")
    os.link(tmp_path / "a.jpg", tmp_path / "b.jpg")
    assert run(tmp_path) == ["a.jpg"]


def test_broken_symlink_is_reported_and_skipped(tmp_path: Path) -> None:
    make(tmp_path, "a.jpg", "z.jpg")
    (tmp_path / "m.jpg").symlink_to(tmp_path / "gone.jpg")
    errors: list[tuple[Path, str]] = []

    found = run(tmp_path, on_error=lambda p, why: errors.append((p, why)))

    assert found == ["a.jpg", "z.jpg"]
    assert errors == [(tmp_path / "m.jpg", "broken symbolic link")]
    assert run(tmp_path) == ["a.jpg", "z.jpg"]  # without a callback: skipped silently


def test_follow_symlinks_false_ignores_links(tmp_path: Path) -> None:
    make(tmp_path, "real/x.jpg", "elsewhere/y.jpg")
    (tmp_path / "real" / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "real" / "alias.jpg").symlink_to(tmp_path / "elsewhere" / "y.jpg")
    errors: list[tuple[Path, str]] = []

    found = run(
        tmp_path / "real", follow_symlinks=False, on_error=lambda p, w: errors.append((p, w))
    )

    assert found == ["x.jpg"]
    assert errors == []


# --- unreadable folders --------------------------------------------------------------------
def test_unreadable_folder_is_reported_and_walk_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reporting path, simulated so it runs as root too (root ignores chmod 000)."""
    make(tmp_path, "a/one.jpg", "locked/secret.jpg", "z/two.jpg")
    locked = str(tmp_path / "locked")
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(scan_module.os, "scandir", scandir)
    errors: list[tuple[Path, str]] = []

    found = run(tmp_path, on_error=lambda p, why: errors.append((p, why)))

    assert found == ["a/one.jpg", "z/two.jpg"]
    assert errors == [(Path(locked), "cannot read folder: permission denied")]


def test_chmod_000_folder_for_real(tmp_path: Path) -> None:
    make(tmp_path, "a/one.jpg", "locked/secret.jpg")
    locked = tmp_path / "locked"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: permission bits do not stop root from reading")
        errors: list[tuple[Path, str]] = []
        found = run(tmp_path, on_error=lambda p, why: errors.append((p, why)))
        assert found == ["a/one.jpg"]
        assert errors == [(locked, "cannot read folder: permission denied")]
    finally:
        locked.chmod(0o755)


# --- odd names -----------------------------------------------------------------------------
def test_odd_file_names(tmp_path: Path) -> None:
    names = ["with space.jpg", "ünïcødé 写真.png", "new\nline.jpg", "-dash.jpg", "tab\t.webp"]
    make(tmp_path, *names)
    raw = os.fsencode(tmp_path) + b"/latin1-\xe9t\xe9.jpg"  # not valid UTF-8
    with open(raw, "wb") as f:
        f.write(b"x")

    files = list(scan([tmp_path]))

    assert sorted(f.path.name for f in files) == sorted(
        [*names, os.fsdecode(b"latin1-\xe9t\xe9.jpg")]
    )
    for f in files:
        assert f.path.exists()  # each path round-trips to the same file on disk
    assert raw in {os.fsencode(f.path) for f in files}
    assert list(scan_paths([tmp_path])) == as_tuples(files)


# --- partial_hash --------------------------------------------------------------------------
def test_partial_hash_of_a_copy_is_equal_and_an_edit_changes_it(tmp_path: Path) -> None:
    data = bytearray(os.urandom(5 * WINDOW))
    original = tmp_path / "original.mp4"
    original.write_bytes(data)
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(original, copy)

    digest = partial_hash(original)
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert partial_hash(copy) == digest
    assert partial_hash(copy, size=copy.stat().st_size) == digest

    for offset in (0, len(data) // 2, len(data) - 1):  # one byte in each window
        edited = bytearray(data)
        edited[offset] ^= 0xFF
        copy.write_bytes(edited)
        assert partial_hash(copy) != digest, offset
    copy.write_bytes(data + b"\x00")  # same windows but one byte longer
    assert partial_hash(copy) != digest


def test_partial_hash_reads_only_three_windows_of_a_big_file(tmp_path: Path) -> None:
    data = bytearray(os.urandom(8 * WINDOW))
    path = tmp_path / "big.mkv"
    path.write_bytes(data)
    digest = partial_hash(path)
    data[WINDOW + 10] ^= 0xFF  # between the first and middle windows: documented blind spot
    path.write_bytes(data)
    assert partial_hash(path) == digest


def test_partial_hash_of_a_small_file_covers_every_byte(tmp_path: Path) -> None:
    data = bytearray(os.urandom(3 * WINDOW))
    path = tmp_path / "small.jpg"
    path.write_bytes(data)
    digest = partial_hash(path)
    for offset in range(WINDOW - 5, len(data), WINDOW // 2):
        edited = bytearray(data)
        edited[offset] ^= 1
        path.write_bytes(edited)
        assert partial_hash(path) != digest, offset


def test_partial_hash_of_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        partial_hash(tmp_path / "gone.jpg")


@settings(max_examples=500, deadline=None)
@given(
    name=st.text(alphabet=st.sampled_from(list("aB.jJpPgGmM4-_ ")), max_size=12)
    | st.sampled_from(["a.JPG", ".jpg", "...jpg", "..a.jpg", "a.", "x.tar.mp4", ".hidden.png"])
)
def test_the_walks_extension_check_is_splitexts(name):
    """The walk reads a file name's kind without os.path.splitext: the same answer."""
    module = importlib.import_module("clipsearch.media.scan")
    suffix = os.path.splitext(name)[1].lower()
    expected = None
    if suffix in module.IMAGE_EXTENSIONS:
        expected = "image"
    elif suffix in module.VIDEO_EXTENSIONS:
        expected = "video"
    assert module._kind_of_name(name) == expected
    assert module.kind_of(f"/some/dir/{name}") == expected
