"""Retrieval and classification metrics against hand-computed cases (ties, multi-caption)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.eval.metrics import (
    classification_metrics,
    media_to_text_ranks,
    rank_metrics,
    retrieval_metrics,
    text_to_media_ranks,
)

# 4 texts x 3 media; texts 0 and 3 describe media 0 (multi-caption).
S = np.array(
    [
        [0.3, 0.5, 0.3],  # t0 -> m0: m1 higher -> rank 2; ties with m2
        [0.5, 0.5, 0.7],  # t1 -> m1: m2 higher -> rank 2; ties with m0
        [0.4, 0.4, 0.4],  # t2 -> m2: nothing higher -> rank 1; ties with both
        [0.6, 0.8, 0.1],  # t3 -> m0: m1 higher -> rank 2
    ],
    dtype=np.float32,
)
GT = np.array([0, 1, 2, 0])


def test_text_to_media_ranks_hand_computed():
    ranks, tied = text_to_media_ranks(S, GT)
    assert ranks.tolist() == [2, 2, 1, 2]
    assert tied.tolist() == [1, 1, 2, 0]  # other media scoring exactly the gt's score


def test_media_to_text_uses_best_caption_and_ignores_other_gt_captions():
    # m0: captions t0 (0.3) and t3 (0.6); best 0.6; non-captions t1 0.5, t2 0.4 -> rank 1.
    #     (ranking by t0 alone would give rank 3: the ANY-caption convention matters)
    # m1: caption t1 0.5; t3 0.8 higher -> rank 2; t0 ties at 0.5.
    # m2: caption t2 0.4; t1 0.7 higher -> rank 2; no tie.
    ranks, tied = media_to_text_ranks(S, GT)
    assert ranks.tolist() == [1, 2, 2]
    assert tied.tolist() == [0, 1, 0]


def test_two_captions_of_one_media_tying_is_not_a_tie():
    S2 = np.array([[0.9, 0.1], [0.9, 0.2], [0.1, 0.8]], dtype=np.float32)
    ranks, tied = media_to_text_ranks(S2, [0, 0, 1])
    assert ranks.tolist() == [1, 1]
    assert tied.tolist() == [0, 0]


def test_retrieval_metrics_recall_median_mean_and_tie_counts():
    m = retrieval_metrics(S, GT, ks=(1, 2, 5))
    t = m.text_to_media
    assert t.recall == {1: 25.0, 2: 100.0, 5: 100.0}
    assert t.hits == {1: 1, 2: 4, 5: 4}
    assert t.median_rank == 2.0
    assert t.mean_rank == 1.75
    assert t.n_tied == 3
    v = m.media_to_text
    assert v.recall[1] == pytest.approx(100 / 3)
    assert v.median_rank == 2.0
    assert v.mean_rank == pytest.approx(5 / 3)
    assert v.n_tied == 1
    # tie-aware expectation (random order among equal scores), by hand:
    # t0 h=1 e=1, t1 h=1 e=1, t2 h=0 e=2, t3 h=1 e=0 -> P(rank<=1) = 0, 0, 1/3, 0
    assert t.expected_recall[1] == pytest.approx(100 * (1 / 3) / 4)
    assert t.expected_recall[2] == pytest.approx(100 * (0.5 + 0.5 + 2 / 3 + 1) / 4)
    assert t.expected_mean_rank == pytest.approx(1 + (1.5 + 1.5 + 1 + 1) / 4)
    d = m.to_dict()
    assert d["text_to_media"]["R@1"] == 25.0 and d["media_to_text"]["n"] == 3


def test_tied_ground_truth_wins_whatever_its_position():
    """Never located by position: a constant row ranks the gt 1st for every gt index."""
    S3 = np.full((5, 5), 0.25, dtype=np.float32)
    for g in range(5):
        ranks, tied = text_to_media_ranks(S3, [g] * 5)
        assert ranks.tolist() == [1] * 5
        assert tied.tolist() == [4] * 5


def test_ranks_equal_brute_force_on_random_ties():
    """Small integer scores give many ties; compare with a direct per-query loop."""
    rng = np.random.default_rng(0)
    n_media = 17
    gt = np.concatenate([np.arange(n_media), rng.integers(0, n_media, 30)])
    Sr = rng.integers(0, 4, size=(gt.size, n_media)).astype(np.float32)
    t_ranks, t_tied = text_to_media_ranks(Sr, gt)
    for t in range(gt.size):
        g = Sr[t, gt[t]]
        assert t_ranks[t] == 1 + sum(Sr[t, m] > g for m in range(n_media))
        assert t_tied[t] == sum(Sr[t, m] == g for m in range(n_media)) - 1
    m_ranks, m_tied = media_to_text_ranks(Sr, gt)
    for m in range(n_media):
        caps = [t for t in range(gt.size) if gt[t] == m]
        best = max(Sr[t, m] for t in caps)
        others = [Sr[t, m] for t in range(gt.size) if gt[t] != m]
        assert m_ranks[m] == 1 + sum(o > best for o in others)
        assert m_tied[m] == sum(o == best for o in others)


def test_without_ties_expected_figures_equal_the_plain_ones():
    rng = np.random.default_rng(3)
    Sr = rng.standard_normal((40, 15)).astype(np.float32)
    gt = np.arange(40) % 15
    m = retrieval_metrics(Sr, gt, ks=(1, 5, 10))
    for d in (m.text_to_media, m.media_to_text):
        assert d.n_tied == 0
        assert d.expected_recall == d.recall
        assert d.expected_mean_rank == pytest.approx(d.mean_rank)


def test_chunked_rows_give_the_same_ranks(monkeypatch):
    import clipsearch.eval.metrics as metrics

    rng = np.random.default_rng(1)
    Sr = rng.standard_normal((50, 20)).astype(np.float32)
    gt = rng.integers(0, 20, 50)
    gt[:20] = np.arange(20)
    full_t, full_m = text_to_media_ranks(Sr, gt)[0], media_to_text_ranks(Sr, gt)[0]
    monkeypatch.setattr(metrics, "_CHUNK_ROWS", 7)
    assert (text_to_media_ranks(Sr, gt)[0] == full_t).all()
    assert (media_to_text_ranks(Sr, gt)[0] == full_m).all()


def test_one_caption_per_media_is_symmetric():
    """MSR-VTT 1k-A: media→text on S equals text→media on Sᵀ (CLIP4Clip's sim.T)."""
    rng = np.random.default_rng(2)
    Sr = rng.standard_normal((30, 30)).astype(np.float32)
    eye = np.arange(30)
    assert (media_to_text_ranks(Sr, eye)[0] == text_to_media_ranks(Sr.T, eye)[0]).all()


@pytest.mark.parametrize(
    "bad, gt",
    [
        (np.zeros((0, 3)), []),
        (np.array([[0.1, np.nan]]), [0]),
        (np.array([[0.1, np.inf]]), [0]),
        (np.zeros(3), [0]),
        (np.zeros((2, 3)), [0]),  # wrong gt length
        (np.zeros((2, 3)), [0, 3]),  # out of range
        (np.zeros((2, 3)), [0.0, 1.0]),  # not integers
    ],
)
def test_malformed_input_is_a_usage_error(bad, gt):
    with pytest.raises(UsageError):
        text_to_media_ranks(bad, gt)


def test_media_without_caption_is_an_error_naming_it():
    with pytest.raises(UsageError, match="no caption"):
        media_to_text_ranks(np.zeros((2, 3), np.float32), [0, 1])


def test_rank_metrics_of_nothing_is_an_error():
    with pytest.raises(UsageError):
        rank_metrics(np.array([], dtype=np.int64))


def test_classification_hand_computed():
    logits = np.array(
        [
            [3.0, 1.0, 2.0],  # label 0: rank 1
            [1.0, 3.0, 2.0],  # label 2: rank 2
            [1.0, 2.0, 3.0],  # label 2: rank 1
            [2.0, 2.0, 1.0],  # label 1: tie with class 0 -> rank 1, tied
        ]
    )
    labels = [0, 2, 2, 1]
    m = classification_metrics(logits, labels, ks=(1, 2, 5))
    assert m.ranks.tolist() == [1, 2, 1, 1]
    assert m.top_k == {1: 75.0, 2: 100.0, 5: None}  # fewer than 5 classes: no top-5
    assert m.n_tied == 1
    # per class: class 0 1/1, class 1 1/1, class 2 1/2
    assert m.per_class_recall.tolist() == [100.0, 100.0, 50.0]
    assert m.mean_per_class_recall == pytest.approx(250 / 3)


def test_classification_class_without_samples_is_left_out_of_the_mean():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [0.0, 2.0, 1.0]])
    m = classification_metrics(logits, [0, 0, 1])  # class 2 has no sample
    assert np.isnan(m.per_class_recall[2])
    assert m.per_class_recall[:2].tolist() == [50.0, 100.0]
    assert m.mean_per_class_recall == 75.0


def test_ranks_and_tie_counts_are_integers_whatever_the_input():
    m = rank_metrics(np.array([1.0, 4.0]), tied=np.array([0.0, 2.0]))
    assert m.ranks.dtype == np.int64 and m.ties.dtype == np.int64
    assert m.ranks.tolist() == [1, 4] and m.ties.tolist() == [0, 2] and m.n_tied == 1
    assert rank_metrics([1, 2]).ties.dtype == np.int64
