"""The per-query relevance cut: parsing ``min_score``, the background threshold on text-like
and image-like score distributions, the library sample, and the evaluation helpers."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.eval.cutoff import cut_quality, cut_thresholds, oracle_global_threshold
from clipsearch.search.relevance import (
    Background,
    BackgroundCache,
    background_threshold,
    parse_min_score,
    resolve_min_score,
    z_for,
)
from tests.fakes import ColourEncoder, colour_image, write_catalog


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("none", "none"),
        (None, "none"),
        ("0.2", 0.2),
        (0.25, 0.25),
        (-0.5, -0.5),
    ],
)
def test_parse_min_score(value, want):
    assert parse_min_score(value) == want


@pytest.mark.parametrize("value", ["high", "", "1.5", 2, float("nan"), True])
def test_bad_min_score_says_what_is_accepted(value):
    with pytest.raises(UsageError, match="min_score"):
        parse_min_score(value)


def test_z_grows_with_the_library_so_false_alarms_stay_constant():
    zs = [z_for(n) for n in (100, 1_000, 10_000, 1_000_000)]
    assert zs == sorted(zs)
    assert zs[1] == pytest.approx(3.09, abs=0.01) and zs[3] == pytest.approx(4.75, abs=0.01)


def text_like(rng, mean: float, n: int = 4000, relevant: int = 30) -> np.ndarray:
    """CLIP-like text→image scores: unrelated ~ N(mean, 0.025), relevant +0.15."""
    s = rng.normal(mean, 0.025, n)
    s[:relevant] += 0.15
    return s


def test_the_cut_follows_each_query_where_a_global_threshold_cannot():
    rng = np.random.default_rng(0)
    low, high = text_like(rng, 0.10), text_like(rng, 0.22)
    z = z_for(4000)
    t_low, t_high = background_threshold(low, z=z), background_threshold(high, z=z)
    for scores, t in ((low, t_low), (high, t_high)):
        assert (scores[:30] >= t).mean() >= 0.9  # relevant kept
        assert (scores[30:] >= t).sum() <= 3  # about α = 1 unrelated item passes
    assert t_high - t_low == pytest.approx(0.12, abs=0.02)  # it moved with the background
    # no single threshold does both: the low query's relevant sit where the high one's junk is
    assert np.median(low[:30]) < np.quantile(high[30:], 0.9)


def test_image_queries_crowded_below_one_are_cut_between_clusters():
    """Image→image cosines as a random-weight tiny ViT gives them on synthetic pictures
    (the quantiles below were measured by benchmarks/relevance_cut.py): unrelated
    0.57–0.96, same-background pictures ≥ 0.996. A cut on raw cosines lands above 1; on
    −ln(1 − s) it falls in the gap."""
    rng = np.random.default_rng(1)
    levels = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]
    measured = [0.573, 0.619, 0.753, 0.801, 0.887, 0.95, 0.957, 0.96, 0.962]
    background = np.interp(rng.uniform(size=2700), levels, measured)
    relevant = rng.uniform(0.996, 1.0, 300)
    scores = np.concatenate([background, relevant])
    t = background_threshold(scores, z=z_for(3000))
    assert background.max() < t < relevant.min()
    mu, sigma = np.median(scores), 1.4826 * np.median(np.abs(scores - np.median(scores)))
    assert mu + z_for(3000) * sigma > 1.0  # the same rule on raw cosines shows nothing


def test_a_query_with_no_answer_shows_next_to_nothing():
    rng = np.random.default_rng(2)
    scores = rng.normal(0.15, 0.025, (50, 5000))
    thresholds = cut_thresholds(scores, np.zeros_like(scores, dtype=bool))
    q = cut_quality(scores, np.zeros_like(scores, dtype=bool), thresholds["auto α=1 (default)"])
    assert q.junk_shown < 3 and q.queries == 0 and q.empty_queries == 50


def test_cut_quality_counts_by_hand():
    scores = np.array([[0.9, 0.8, 0.3, 0.1], [0.5, 0.4, 0.3, 0.2], [0.9, 0.1, 0.1, 0.1]])
    relevant = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=bool)
    q = cut_quality(scores, relevant, np.array([0.5, 0.35, 0.95]))
    # query 0 shows 2 of 3 relevant (P 1, R 2/3); query 2 shows nothing (P 0, R 0)
    assert q.precision == pytest.approx(0.5) and q.recall == pytest.approx(1 / 3)
    assert q.f1 == pytest.approx(0.4) and q.shown == pytest.approx(1.0)
    assert q.junk_shown == 2 and q.empty_ok == 0.0
    t, best = oracle_global_threshold(scores, relevant)
    assert best.f1 >= q.f1
    assert cut_quality(scores, relevant, np.full(3, t)) == best


def test_library_sample_is_fixed_and_drawn_again_after_a_change(tmp_path):
    enc = ColourEncoder()
    items = {f"/p/{i}.jpg": colour_image(c, seed=i) for i, c in enumerate(["red", "blue"] * 10)}
    cat = write_catalog(tmp_path / "lib", enc, items)
    a = Background.from_catalog(cat, size=8)
    b = Background.from_catalog(cat, size=8)
    assert a.vectors.shape == (8, enc.dim) and a.library_size == 20
    np.testing.assert_array_equal(a.vectors, b.vectors)  # same seed, same cut each search
    cache = BackgroundCache(cat, size=8)
    first = cache.get()
    assert cache.get() is first
    cat.delete_items([1])
    assert cache.get() is not first and cache.get().library_size == 19
    q = enc.encode_texts(["red"])[0]
    assert resolve_min_score("none", q, cache) is None
    assert resolve_min_score(0.3, q, cache) == 0.3
    assert resolve_min_score("auto", q, cache) == pytest.approx(cache.get().threshold(q))
    cat.close()


def test_an_empty_library_has_no_cut(tmp_path):
    from clipsearch.store import Catalog

    with Catalog.open(tmp_path / "empty") as cat:
        bg = Background.from_catalog(cat)
        assert bg.library_size == 0 and bg.threshold(np.ones(4, np.float32)) is None
