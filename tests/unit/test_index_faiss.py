"""FaissIndex: recall measured (and reached) against exact search, filters vs brute force
(1% exact, wider via ID selectors), deletions (remove_ids / tombstones), lossy codes
rescored exactly, and the autofaiss-style backend choice."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.index import ExactIndex, FaissIndex, autotune, choose_backend

faiss = pytest.importorskip("faiss")

N, D = 8000, 48


def clustered(
    n: int, d: int, *, clusters: int = 60, spread: float = 0.8, seed: int = 0
) -> np.ndarray:
    """(n, d) float32 unit vectors in gaussian clusters (fixed centres for a given d)."""
    centres = np.random.default_rng(1234).standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)]
    x = x + spread * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean(
            [
                len(np.intersect1d(g[g >= 0], t[t >= 0])) / max(1, (t >= 0).sum())
                for g, t in zip(got, truth, strict=True)
            ]
        )
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # 2 shared cores: FAISS's OpenMP spin-waits badly when oversubscribed.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    x = clustered(N, D, seed=1).astype(np.float16)
    ids = np.arange(N, dtype=np.int64) * 7 + 3
    queries = clustered(60, D, seed=99)  # held-out points of the same clusters
    exact = ExactIndex(ids, x)
    return ids, x, queries, exact


@pytest.fixture(scope="module")
def hnsw(data):
    ids, x, _, _ = data
    return FaissIndex(ids, x, factory="HNSW16")


@pytest.fixture(scope="module")
def ivf(data):
    ids, x, _, _ = data
    return FaissIndex(ids, x, factory="IVF64,Flat")


@pytest.mark.parametrize("name", ["hnsw", "ivf"])
def test_recall_reaches_target_and_the_stored_value_is_what_we_measure(request, data, name):
    ids, _x, queries, exact = data
    index: FaissIndex = request.getfixturevalue(name)
    info = index.info()
    assert info.backend == "faiss" and info.recall_target == 0.95
    assert info.recall_queries == 500
    assert set(info.params) & {"efSearch", "nprobe"}
    # Recompute both halves through the public search path: the held-out rows as queries,
    # answers restricted to the rows that were indexed while tuning.
    held = autotune.held_out_positions(N, 1000, seed=0)
    indexed = np.setdiff1d(ids, ids[held])
    sample = autotune.held_out_queries(index.rows, held, seed=0)
    truth = autotune.exact_truth(index.rows, sample, 10, mask=np.isin(ids, indexed))
    # the FAISS path with those rows filtered out and the tuned parameters unboosted
    positions = np.searchsorted(ids, indexed)
    found = index._ann(sample.queries, 11, positions, 1.0, fallback=False).ids[:, :10]
    tune_rows, check_rows = autotune.tune_and_check(len(sample))
    assert not set(tune_rows) & set(check_rows)
    tuned = autotune.recall_at_k(found[tune_rows], truth[tune_rows])
    checked = autotune.recall_at_k(found[check_rows], truth[check_rows])
    # The parameters reach the target on the queries that tuned them; what is stored is
    # the recall of the others (IVF scans the same lists: identical; HNSW now also walks
    # through the added nodes).
    tol = 0.0 if name == "ivf" else 0.015
    assert tuned >= 0.95 - tol
    assert checked == pytest.approx(info.recall_at_10, abs=tol)
    assert info.recall_at_10 >= 0.92  # near the target, measured, not assumed
    # and it generalises to held-out queries
    assert recall(index.search(queries, 10).ids, exact.search(queries, 10).ids) >= 0.9


def test_tuning_raises_parameters_until_the_target(data):
    ids, x, _, _ = data
    low = FaissIndex(ids, x, factory="IVF64,Flat", recall_target=0.5)
    high = FaissIndex(ids, x, factory="IVF64,Flat", recall_target=0.99)
    assert low.params["nprobe"] < high.params["nprobe"]
    assert high.info().recall_at_10 >= 0.99
    untuned = FaissIndex(ids, x, factory="IVF64,Flat", tune=False)
    assert untuned.info().recall_at_10 is not None  # measured even when not tuned
    assert untuned.info().recall_target is None


def test_unreachable_target_stops_at_the_cap_and_reports_it(data, monkeypatch):
    ids, x, _, _ = data
    monkeypatch.setattr(autotune, "EF_SEARCH_LADDER", (10, 12))  # a low cap
    index = FaissIndex(ids, x, factory="HNSW8", recall_target=0.999, tuning_queries=200)
    info = index.info()
    assert info.params["efSearch"] == 12
    assert info.recall_at_10 < 0.999
    assert index.tune(0.999, n_queries=200) == index.info().recall_at_10 < 0.999


def test_lossy_codes_are_rescored_exactly(data):
    ids, x, queries, exact = data
    index = FaissIndex(ids, x, factory="IVF32,PQ8x8", tuning_queries=200)
    got = index.search(queries, 10)
    x32 = x.astype(np.float32)
    pos = np.searchsorted(ids, got.ids)
    true_scores = np.einsum("qkd,qd->qk", x32[pos], queries)
    np.testing.assert_allclose(got.scores, true_scores, atol=2e-6)
    assert recall(got.ids, exact.search(queries, 10).ids) >= 0.9


@pytest.mark.parametrize("name", ["hnsw", "ivf"])
def test_selective_filter_returns_the_true_top_k(request, data, name):
    ids, _x, queries, exact = data
    index: FaissIndex = request.getfixturevalue(name)
    allowed = ids[np.random.default_rng(5).random(N) < 0.01]
    got = index.search(queries, 10, allowed=allowed)
    ref = exact.search(queries, 10, allowed=allowed)
    np.testing.assert_array_equal(got.ids, ref.ids)
    np.testing.assert_allclose(got.scores, ref.scores, atol=2e-6)


@pytest.mark.parametrize("name", ["hnsw", "ivf"])
def test_wide_filter_uses_selectors_and_stays_inside_the_filter(request, data, name, monkeypatch):
    ids, _x, queries, exact = data
    index: FaissIndex = request.getfixturevalue(name)
    monkeypatch.setattr("clipsearch.index.faiss_backend.EXACT_FILTER_MIN_ROWS", 100)
    allowed = ids[np.random.default_rng(6).random(N) < 0.15]
    got = index.search(queries, 10, allowed=allowed)
    assert np.isin(got.ids, allowed).all()
    assert recall(got.ids, exact.search(queries, 10, allowed=allowed).ids) >= 0.9


def test_empty_or_unknown_filters_return_nothing(hnsw, data):
    _, _, queries, _ = data
    for allowed in (np.empty(0, np.int64), np.array([-1, 2])):
        m = hnsw.search(queries[:3], 5, allowed=allowed)
        assert (m.ids == -1).all() and np.isneginf(m.scores).all()


def test_exact_flag_forces_exact_results(hnsw, data):
    _, _, queries, exact = data
    got = hnsw.search(queries, 10, exact=True)
    ref = exact.search(queries, 10)
    np.testing.assert_array_equal(got.ids, ref.ids)


def test_k_larger_than_the_index():
    x = clustered(300, 16, seed=4).astype(np.float16)
    index = FaissIndex(np.arange(300), x, factory="HNSW8", tuning_queries=50)
    m = index.search(x[:2].astype(np.float32), 500)
    assert m.ids.shape == (2, 500)
    assert sorted(m.ids[0, :300]) == list(range(300))
    assert (m.ids[:, 300:] == -1).all()


def test_hnsw_deletes_by_tombstones_and_asks_for_a_rebuild(data):
    ids, x, _queries, _ = data
    index = FaissIndex(ids[:3000], x[:3000], factory="HNSW16", tuning_queries=100)
    gone = ids[:200]
    assert index.remove(gone) == 200
    assert index.tombstones.size == 200 and not index.needs_rebuild
    # deleted rows are never returned, even when queried with themselves
    m = index.search(x[:200].astype(np.float32), 10)
    assert not np.isin(m.ids, gone).any()
    assert len(index) == 2800
    with pytest.raises(UsageError, match="rebuild"):
        index.add(gone[:1], x[:1])
    index.remove(ids[200:400])
    assert index.needs_rebuild  # 400 tombstones > 10% of 3000


def test_ivf_deletes_for_real_and_added_rows_are_found(data):
    ids, x, _queries, _ = data
    index = FaissIndex(ids[:4000], x[:4000], factory="IVF32,Flat", tuning_queries=100)
    index.remove(ids[:500])
    assert index.faiss_index.ntotal == 3500 and index.tombstones.size == 0
    index.add(ids[4000:4500], x[4000:4500])
    m = index.search(x[4000:4500].astype(np.float32), 1)
    assert (m.ids[:, 0] == ids[4000:4500]).mean() >= 0.98
    assert not np.isin(index.search(x[:500].astype(np.float32), 10).ids, ids[:500]).any()


def test_bad_factory_and_input_are_usage_errors(data):
    ids, x, _, _ = data
    with pytest.raises(UsageError, match="FAISS cannot build"):
        FaissIndex(ids[:100], x[:100], factory="NoSuchIndex42")
    with pytest.raises(UsageError, match="recall_target"):
        FaissIndex(ids[:100], x[:100], factory="Flat", recall_target=1.5)
    index = FaissIndex(ids[:100], x[:100], factory="Flat", tuning_queries=20)
    with pytest.raises(UsageError, match="dim"):
        index.search(np.ones(3, np.float32), 1)


def test_choose_backend_follows_autofaiss_rules():
    gib = 1 << 30
    assert choose_backend(10_000, 512, 8 * gib) == "exact"
    assert choose_backend(10_000, 512, 8 * gib, flat_threshold=1000) == "HNSW32"
    assert choose_backend(1_000_000, 512, 6 * gib) == "HNSW32"
    # HNSW does not fit 1.5 GiB at 1M x 512 (needs 4n(d+2M)); n >= 1M -> quantization
    assert choose_backend(1_000_000, 512, gib + gib // 2).startswith("OPQ")
    # 500k: m_hnsw = floor((budget/(4n) - d)/2) = floor((1.1e9/2e6 - 512)/2) = 19
    assert choose_backend(500_000, 512, 1_100_000_000) == "HNSW19"
    # 500k in 1.05 GB: HNSW M < 8, IVF-Flat (1.02 GB) fits
    assert choose_backend(500_000, 512, 1_050_000_000) == "IVF2048,Flat"
    assert autotune.candidate_backends(500_000, 512, 2 * gib) == [
        "HNSW32",
        "IVF2048,Flat",
        autotune.quantized_factory(500_000, 512, 2 * gib),
    ]
    key = choose_backend(10_000_000, 512, 6 * gib)
    assert key == "OPQ256_768,IVF65536_HNSW32,PQ256x8"
    for n, budget in [(1_000_000, gib), (50_000_000, 4 * gib)]:
        faiss.index_factory(512, choose_backend(n, 512, budget), faiss.METRIC_INNER_PRODUCT)


def test_nb_clusters_is_capped_by_training_points():
    assert autotune.nb_clusters(100_000) == 1024  # 4*sqrt(1e5) = 1265 -> 2^10
    assert autotune.nb_clusters(5_000) == 128  # capped at n/39
    assert autotune.nb_clusters(2_000_000) == 16_384


@pytest.mark.parametrize("spacing", [1, 10**9])  # dense ids: bitmap selector; sparse: hash set
def test_filter_selectors_for_dense_and_sparse_ids(spacing, monkeypatch):
    x = clustered(3000, 24, seed=12).astype(np.float16)
    ids = np.arange(3000, dtype=np.int64) * spacing + 5
    index = FaissIndex(ids, x, factory="IVF16,Flat", tuning_queries=100)
    monkeypatch.setattr("clipsearch.index.faiss_backend.EXACT_FILTER_MIN_ROWS", 0)
    monkeypatch.setattr("clipsearch.index.faiss_backend.EXACT_FILTER_FRACTION", 0.0)
    allowed = ids[np.random.default_rng(1).random(3000) < 0.2]
    q = clustered(30, 24, seed=13)
    got = index.search(q, 10, allowed=allowed)
    assert np.isin(got.ids, allowed).all()
    ref = ExactIndex(ids, x).search(q, 10, allowed=allowed)
    assert recall(got.ids, ref.ids) >= 0.9


def test_auto_falls_through_candidates_until_the_target_is_met(monkeypatch):
    x = clustered(3000, 32, seed=21).astype(np.float16)
    ids = np.arange(3000, dtype=np.int64)
    assert autotune.candidate_backends(3000, 32, 1 << 30, flat_threshold=0)[:2] == [
        "HNSW32",
        "IVF64,Flat",
    ]
    monkeypatch.setattr(autotune, "EF_SEARCH_LADDER", (10,))  # HNSW capped low: misses 0.99
    index = FaissIndex(
        ids, x, factory="auto", memory_budget_bytes=1 << 30, recall_target=0.99, tuning_queries=200
    )
    info = index.info()
    assert info.factory == "IVF64,Flat" and info.recall_at_10 >= 0.99
    assert list(info.rejected) == ["HNSW32"] and info.rejected["HNSW32"] < 0.99
    # the adopted index is complete and searchable
    assert len(index) == 3000 and index.faiss_index.ntotal == 3000
    assert (index.search(x[:20].astype(np.float32), 1).ids[:, 0] == ids[:20]).all()


def test_threads_option_sets_faiss_threads(data):
    ids, x, _, _ = data
    FaissIndex(ids[:500], x[:500], factory="Flat", tuning_queries=20, threads=1)
    assert faiss.omp_get_max_threads() == 1
