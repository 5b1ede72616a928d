"""ExactIndex: equal to an fp32 brute force (ids, scores, ties by id), filters, k > N,
empty cases, incremental add/remove, and the reduced-precision certificate."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.index import ExactIndex
from clipsearch.index import exact as exact_mod


def clustered(
    n: int, d: int, *, clusters: int = 50, spread: float = 0.6, seed: int = 0
) -> np.ndarray:
    """(n, d) float32 unit vectors in gaussian clusters around random unit centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)]
    x = x + spread * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def brute_force(ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int):
    """Reference: fp32 scores of every row, sorted by score desc then id asc, padded."""
    x = vectors.astype(np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for i, q in enumerate(queries):
        s = (x * q).sum(axis=1, dtype=np.float32)
        order = np.lexsort((ids, -s))[:k]
        out_ids[i, : len(order)] = ids[order]
        out_scores[i, : len(order)] = s[order]
    return out_ids, out_scores


def assert_same_top_k(got, ref_ids, ref_scores, *, atol=2e-6):
    """Scores equal within fp32 summation noise; ids equal except inside near-ties."""
    np.testing.assert_allclose(got.scores, ref_scores, atol=atol, rtol=0)
    for g_ids, r_ids, r_s in zip(got.ids, ref_ids, ref_scores, strict=True):
        for j in range(len(r_ids)):
            near_tie = (j > 0 and r_s[j - 1] - r_s[j] <= atol) or (
                j + 1 < len(r_s) and r_s[j] - r_s[j + 1] <= atol
            )
            if not near_tie:
                assert g_ids[j] == r_ids[j]
        assert set(g_ids[r_s > r_s[-1] + atol]) == set(r_ids[r_s > r_s[-1] + atol])


@pytest.fixture(scope="module")
def data():
    x = clustered(6000, 64, seed=1)
    ids = np.random.default_rng(2).permutation(6000).astype(np.int64) * 3 + 11
    rng = np.random.default_rng(3)
    held_out = clustered(40, 64, seed=1)  # same centres, other points
    near = unit(x[:20] + 0.3 * rng.standard_normal((20, 64)).astype(np.float32) / 8)
    queries = np.concatenate([held_out, near, x[100:110]]).astype(np.float32)
    return ids, x.astype(np.float16), queries


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_top_k_equals_fp32_brute_force(data, precision):
    ids, x, queries = data
    index = ExactIndex(ids, x, precision=precision)
    got = index.search(queries, 10)
    ref_ids, ref_scores = brute_force(ids, x, queries, 10)
    assert got.ids.dtype == np.int64 and got.scores.dtype == np.float32
    assert_same_top_k(got, ref_ids, ref_scores)
    # a stored vector finds itself first
    assert list(got.ids[-10:, 0]) == list(ids[100:110])


def test_many_blocks_merge_to_the_same_answer(data):
    ids, x, queries = data
    small_blocks = ExactIndex(ids, x, block_rows=700)
    ref_ids, ref_scores = brute_force(ids, x, queries, 25)
    assert_same_top_k(small_blocks.search(queries, 25), ref_ids, ref_scores)


def test_batch_equals_single_queries(data):
    ids, x, queries = data
    index = ExactIndex(ids, x)
    batch = index.search(queries[:8], 5)
    for i in range(8):
        single = index.search(queries[i], 5)  # (D,) input -> (1, k)
        assert single.ids.shape == (1, 5)
        np.testing.assert_array_equal(single.ids[0], batch.ids[i])
        np.testing.assert_array_equal(single.scores[0], batch.scores[i])


def test_ties_are_broken_by_ascending_id():
    rng = np.random.default_rng(0)
    base = unit(rng.standard_normal((1, 32)))
    others = unit(rng.standard_normal((500, 32)))
    x = np.concatenate([np.repeat(base, 7, axis=0), others]).astype(np.float16)
    ids = np.concatenate([[90, 12, 55, 3, 70, 41, 8], np.arange(1000, 1500)]).astype(np.int64)
    perm = rng.permutation(len(ids))
    index = ExactIndex(ids[perm], x[perm])
    got = index.search(base[0], 5)
    assert list(got.ids[0]) == [3, 8, 12, 41, 55]
    assert len(set(got.scores[0].tolist())) == 1


@pytest.mark.parametrize("n_queries", [1, 3])  # fp16 scan (1-2 queries) and bf16 scan
def test_certificate_failure_falls_back_to_an_exact_rescan(monkeypatch, n_queries):
    """Hundreds of rows within rounding noise of each other around the query: the reduced
    precision scan cannot rank them, the certificate fails, and the rescan still returns
    the fp32 truth."""
    rng = np.random.default_rng(7)
    q = unit(rng.standard_normal(64))
    crowd = unit(q + 0.02 * rng.standard_normal((400, 64)).astype(np.float32) / 8)
    rest = clustered(3000, 64, seed=8)
    x = np.concatenate([crowd, rest]).astype(np.float16)
    ids = np.arange(len(x), dtype=np.int64) + 1
    queries = (
        np.concatenate([q[None, :], unit(crowd[: n_queries - 1])]) if n_queries > 1 else q[None, :]
    )
    calls = []
    original = exact_mod.Scan._rescan
    monkeypatch.setattr(
        exact_mod.Scan,
        "_rescan",
        lambda self, *a, **kw: calls.append(a[-1]) or original(self, *a, **kw),
    )
    got = ExactIndex(ids, x, precision="bf16").search(queries, 10)
    assert calls == (["fp16"] if n_queries == 1 else ["bf16"])
    ref_ids, ref_scores = brute_force(ids, x, queries, 10)
    assert_same_top_k(got, ref_ids, ref_scores, atol=1e-6)


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_scan_error_bound_covers_every_row(data, mode):
    """The bound the certificate relies on holds for all rows and queries (module doc)."""
    import torch

    ids, x, queries = data
    index = ExactIndex(ids, x, precision="bf16")
    scan = index._scan
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    table = scan.mirror if mode == "bf16" else torch.from_numpy(index.rows.vectors)
    approx = (torch.from_numpy(queries).to(dtype) @ table.T).float().numpy()
    exact = queries @ index.rows.vectors.astype(np.float32).T
    bound, c_out = scan._bounds(queries, mode)
    slack = bound[:, None] + c_out * np.abs(approx) - np.abs(approx - exact)
    assert (slack >= 0).all()
    assert np.abs(approx - exact).max() > 1e-5  # the scan really is approximate


def test_k_larger_than_the_index_pads_with_minus_one():
    x = clustered(7, 16, seed=3).astype(np.float16)
    ids = np.array([5, 1, 9, 3, 7, 2, 8], dtype=np.int64)
    got = ExactIndex(ids, x).search(x[:2], 12)
    assert got.ids.shape == (2, 12)
    assert (got.ids[:, 7:] == -1).all() and np.isneginf(got.scores[:, 7:]).all()
    assert sorted(got.ids[0, :7]) == sorted(ids)
    assert (np.diff(got.scores[:, :7], axis=1) <= 0).all()


def test_empty_index_and_empty_filters():
    empty = ExactIndex(np.empty(0, np.int64), np.empty((0, 16), np.float16))
    assert len(empty) == 0
    m = empty.search(np.ones(16, np.float32) / 4, 3)
    assert (m.ids == -1).all() and np.isneginf(m.scores).all()
    x = clustered(50, 16).astype(np.float16)
    index = ExactIndex(np.arange(50), x)
    q = x[:2].astype(np.float32)
    for allowed in (np.empty(0, np.int64), np.array([1000, 2000])):
        m = index.search(q, 4, allowed=allowed)
        assert (m.ids == -1).all() and np.isneginf(m.scores).all()


@pytest.mark.parametrize("fraction", [0.01, 0.2, 0.7])
def test_filters_equal_brute_force_on_the_allowed_rows(data, fraction):
    ids, x, queries = data
    rng = np.random.default_rng(11)
    keep = rng.random(len(ids)) < fraction
    allowed = np.concatenate([ids[keep], [-5, 10**12]])  # unknown ids are ignored
    got = ExactIndex(ids, x).search(queries, 10, allowed=rng.permutation(allowed))
    ref_ids, ref_scores = brute_force(ids[keep], x[keep], queries, 10)
    assert_same_top_k(got, ref_ids, ref_scores)
    assert np.isin(got.ids[got.ids >= 0], ids[keep]).all()


def test_add_and_remove_keep_results_exact(data):
    ids, x, queries = data
    index = ExactIndex(ids[:4000], x[:4000])
    index.add(ids[4000:5000], x[4000:5000])  # interleaved ids (ids are a permutation)
    gone = ids[:300]
    assert index.remove(np.concatenate([gone, [10**9]])) == 300
    index.add(ids[5000:] + 10**6, x[5000:])  # appended ids
    live_ids = np.concatenate([ids[300:5000], ids[5000:] + 10**6])
    live_x = np.concatenate([x[300:5000], x[5000:]])
    assert len(index) == len(live_ids)
    got = index.search(queries, 10)
    ref_ids, ref_scores = brute_force(live_ids, live_x, queries, 10)
    assert_same_top_k(got, ref_ids, ref_scores)
    assert not np.isin(got.ids, gone).any()
    # a removed vector queried directly no longer finds itself
    assert index.search(x[:1].astype(np.float32), 1).ids[0, 0] != ids[0]


def test_bad_input_is_refused_with_a_clear_error(data):
    ids, x, _ = data
    index = ExactIndex(ids[:100], x[:100])
    with pytest.raises(UsageError, match="dim"):
        index.search(np.ones(8, np.float32), 3)
    with pytest.raises(UsageError, match="NaN"):
        index.search(np.full(64, np.nan, np.float32), 3)
    with pytest.raises(UsageError, match="k must"):
        index.search(x[:1].astype(np.float32), 0)
    with pytest.raises(UsageError, match="already"):
        index.add(ids[:1], x[:1])
    with pytest.raises(UsageError, match="duplicates"):
        ExactIndex(np.array([1, 1]), x[:2])
    with pytest.raises(UsageError, match="ids but"):
        ExactIndex(np.array([1, 2, 3]), x[:2])
    bad = x[:2].copy()
    bad[0, 0] = np.inf
    with pytest.raises(UsageError, match="NaN or infinity"):
        ExactIndex(np.array([1, 2]), bad)
    assert len(index) == 100  # nothing was half-added


def test_scan_memory_is_bounded_per_block():
    """No (Q, N) score matrix: a block holds at most ~4M scores for a big batch."""
    x = clustered(10, 16).astype(np.float16)
    scan = ExactIndex(np.arange(10), x)._scan
    assert scan._block_rows(1024) * 1024 <= (1 << 22)
    assert scan._block_rows(1) <= 65536


@pytest.fixture
def without_torch(monkeypatch):
    """The scan as a process that never imported torch runs it (numpy, fp32)."""
    from clipsearch.index import numpy_scan

    modes = []
    original = exact_mod.Scan._mode
    monkeypatch.setattr(numpy_scan, "torch_loaded", lambda: False)
    monkeypatch.setattr(
        exact_mod.Scan, "_mode", lambda self, q: modes.append(original(self, q)) or modes[-1]
    )
    return modes


@pytest.mark.parametrize("fraction", [None, 0.01, 0.3])
def test_numpy_scan_equals_brute_force_with_and_without_filters(data, without_torch, fraction):
    ids, x, queries = data
    index = ExactIndex(ids, x, precision="fp32", block_rows=700)  # many blocks to merge
    if fraction is None:
        keep = np.ones(len(ids), dtype=bool)
        got = index.search(queries, 10)
    else:
        keep = np.random.default_rng(5).random(len(ids)) < fraction
        got = index.search(queries, 10, allowed=ids[keep])
    assert without_torch and set(without_torch) == {"numpy"}
    ref_ids, ref_scores = brute_force(ids[keep], x[keep], queries, 10)
    assert_same_top_k(got, ref_ids, ref_scores)
    allowed = None if fraction is None else ids[keep]
    single = index.search(queries[0], 3, allowed=allowed)  # one query, as a CLI search runs
    np.testing.assert_array_equal(single.ids[0], ref_ids[0, :3])


def test_numpy_scan_certificate_failure_rescans_exactly(monkeypatch, without_torch):
    rng = np.random.default_rng(7)
    q = unit(rng.standard_normal(64))
    crowd = unit(q + 0.02 * rng.standard_normal((400, 64)).astype(np.float32) / 8)
    x = np.concatenate([crowd, clustered(3000, 64, seed=8)]).astype(np.float16)
    ids = np.arange(len(x), dtype=np.int64) + 1
    calls = []
    original = exact_mod.Scan._rescan
    monkeypatch.setattr(
        exact_mod.Scan,
        "_rescan",
        lambda self, *a, **kw: calls.append(a[-1]) or original(self, *a, **kw),
    )
    # a bound inflated beyond any score gap forces the certificate to fail
    monkeypatch.setattr(exact_mod, "_SAFETY", 1e5)
    got = ExactIndex(ids, x, precision="fp32").search(q[None, :], 10)
    assert calls == ["numpy"]
    ref_ids, ref_scores = brute_force(ids, x, q[None, :], 10)
    assert_same_top_k(got, ref_ids, ref_scores, atol=1e-6)
