"""Duplicate detection: union-find, neighbour pairs, exact groups, near-duplicate images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.search import dedup
from clipsearch.store import ItemRecord
from tests.fakes import PALETTE

NAMES = list(PALETTE)


def pattern(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A 4x3 grid of random palette colours: distinct layouts and colour mixes per seed
    (the fake encoder sees colours and a coarse layout, so plain-colour images would all
    look alike to it)."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, len(NAMES), size=(3, 4))
    cells = np.array([[PALETTE[NAMES[c]] for c in row] for row in grid], dtype=np.uint8)
    return Image.fromarray(cells).resize(size, Image.Resampling.NEAREST)


def reencoded(im: Image.Image, quality: int = 50) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def near_copies(im: Image.Image) -> list[Image.Image]:
    w, h = im.size
    dx, dy = int(0.05 * w), int(0.05 * h)
    return [reencoded(im), im.resize((w // 2, h // 2)), im.crop((dx, dy, w - dx, h - dy))]


def test_union_find_components():
    uf = dedup.UnionFind(7)
    for a, b in [(0, 3), (3, 5), (1, 6), (5, 0)]:
        uf.union(a, b)
    assert uf.groups() == [[0, 3, 5], [1, 6]]
    assert uf.find(5) == uf.find(0) != uf.find(2)


def test_neighbour_pairs_by_hand():
    v = np.array(
        [[1, 0, 0], [0.99, 0.141, 0], [0, 1, 0], [0, 0.96, 0.28], [0, 0, 1]], dtype=np.float32
    )
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    i, j, s = dedup.neighbour_pairs(v, threshold=0.95, k=3)
    pairs = sorted(zip(i.tolist(), j.tolist(), strict=True))
    assert pairs == [(0, 1), (2, 3)]  # each pair once, i < j; (3, 4) at 0.28 is below
    assert np.all(s >= 0.95)
    i, _, _ = dedup.neighbour_pairs(
        v, threshold=0.95, k=3, groups=np.array(["a", "b", "a", "a", "a"])
    )
    assert i.tolist() == [2]  # 0 and 1 are of different kinds
    assert len(dedup.neighbour_pairs(v[:1], threshold=0.5)[0]) == 0


def test_components_are_transitive_along_a_chain():
    # a chain of five vectors, each 0.98 from the next: every item sees only its two
    # neighbours (k=2), yet the union of those edges joins the whole chain.
    angles = np.arange(5) * np.arccos(0.98)
    v = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    i, j, _ = dedup.neighbour_pairs(v, threshold=0.97, k=2)
    uf = dedup.UnionFind(5)
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        uf.union(a, b)
    assert uf.groups() == [[0, 1, 2, 3, 4]]
    assert float(v[0] @ v[4]) < 0.97  # transitive: the ends are not similar themselves


def test_near_duplicate_images_are_grouped_with_their_copies(fake_encoder):
    originals = [pattern(seed) for seed in range(10)]
    images, truth = list(originals), list(range(10))
    for k in (2, 5, 7):
        copies = near_copies(originals[k])
        images += copies
        truth += [k] * len(copies)
    vectors = fake_encoder.encode_images(images)
    i, j, _ = dedup.neighbour_pairs(vectors, threshold=0.95, k=5)
    uf = dedup.UnionFind(len(images))
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        uf.union(a, b)
    got = uf.groups()
    expected = [[k] + [p for p, t in enumerate(truth) if t == k and p >= 10] for k in (2, 5, 7)]
    assert got == expected


def test_exact_search_matches_brute_force():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((30, 6)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids, scores = dedup.exact_search(v, batch=7)(v[:9], 4)
    full = v[:9] @ v.T
    for r in range(9):
        assert set(ids[r].tolist()) == set(np.argsort(-full[r])[:4].tolist())
        np.testing.assert_allclose(np.sort(scores[r]), np.sort(full[r])[-4:], atol=1e-6)


def _record(
    i: int, path: Path, h: str, *, w: int = 10, size: int = 100, mtime: int = 0
) -> ItemRecord:
    return ItemRecord(
        i, str(path), None, "image", size, mtime, h, "ok", None, w, w, None, None, 0.0
    )


def test_exact_groups_are_confirmed_by_the_full_content(tmp_path):
    a, b, c, d = (tmp_path / n for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"))
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    c.write_bytes(b"other bytes")  # partial-hash collision with a and b, different content
    recs = [_record(1, a, "h1"), _record(2, b, "h1"), _record(3, c, "h1"), _record(4, d, "h2")]
    groups, notes = dedup.exact_groups(recs)
    assert groups == [[1, 2]] and notes == []
    groups, _ = dedup.exact_groups(recs, verify=False)
    assert groups == [[1, 2, 3]]
    e = tmp_path / "e.jpg"  # unreadable (missing) copy: grouped by partial hash, noted
    groups, notes = dedup.exact_groups([_record(4, d, "h2"), _record(5, e, "h2")])
    assert groups == [[4, 5]] and len(notes) == 2 and "cannot be read" in notes[0]


def test_keep_suggestions_prefer_the_best_copy(tmp_path):
    big = _record(1, tmp_path / "z/big.jpg", "x", w=100, size=10)
    small = _record(2, tmp_path / "a/small.jpg", "y", w=50, size=99)
    assert sorted([small, big], key=dedup._near_rank)[0] is big  # larger resolution first
    old = _record(3, tmp_path / "deep/er/old.jpg", "h", mtime=1)
    new = _record(4, tmp_path / "new.jpg", "h", mtime=2)
    assert sorted([new, old], key=dedup._exact_rank)[0] is old  # identical: the oldest


@pytest.mark.parametrize("threshold", [1.2, -3])
def test_bad_threshold_is_refused(threshold):
    from clipsearch.errors import UsageError

    with pytest.raises(UsageError, match="between -1 and 1"):
        dedup.find_duplicates(None, threshold=threshold)  # type: ignore[arg-type]


def test_duplicates_in_a_catalog_exact_by_content_and_near_by_embedding(tmp_path, fake_encoder):
    from clipsearch.index import ExactIndex
    from tests.fakes import colour_image, write_catalog

    photos = tmp_path / "photos"
    photos.mkdir()
    original, copy = photos / "blue_a.jpg", photos / "blue_a copy.jpg"
    for path in (original, copy):
        colour_image("blue", seed=1).save(path, quality=95)  # identical bytes
    grid = pattern(5, (320, 240))
    items = {
        str(original): Image.open(original).convert("RGB"),
        str(copy): Image.open(copy).convert("RGB"),
        str(photos / "grid.png"): grid,
        str(photos / "grid small.jpg"): reencoded(grid.resize((160, 120)), quality=85),
        **{str(photos / f"{c}.jpg"): colour_image(c, seed=9) for c in ("red", "green", "yellow")},
    }
    same = {"content_hash": "h:blue", "size": original.stat().st_size}
    fields = {str(original): {**same, "mtime_ns": 1}, str(copy): {**same, "mtime_ns": 2}}
    catalog = write_catalog(tmp_path / "lib", fake_encoder, items, fields=fields)
    table = catalog.load_vectors()
    index = ExactIndex(table.ids, table.vectors, precision="fp32")
    calls = []

    def vector_index():
        calls.append(1)
        return index

    report = dedup.find_duplicates(catalog, index=vector_index, threshold=0.97, k=5)
    groups = {g.kind: g for g in report.groups}
    assert len(report.groups) == 2 and calls == [1]
    exact = groups["exact"]
    assert exact.keep.path == str(original)  # the older of two identical files
    assert [m.path for m in exact.remove] == [str(copy)]
    near = groups["near"]
    assert Path(near.keep.path).name == "grid.png"  # the larger resolution
    assert [Path(m.path).name for m in near.remove] == ["grid small.jpg"]
    assert near.remove[0].similarity >= 0.97 and report.removable == 2
    exact_only = dedup.find_duplicates(catalog, index=vector_index, near=False)
    assert [g.kind for g in exact_only.groups] == ["exact"] and calls == [1]  # index not needed
    no_index = dedup.find_duplicates(catalog, threshold=0.97, k=5)  # exact blockwise search
    assert [g.to_dict() for g in no_index.groups] == [g.to_dict() for g in report.groups]
    catalog.close()
