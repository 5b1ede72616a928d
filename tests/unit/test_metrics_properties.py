"""Retrieval and classification metrics against a brute-force reference, with the rules
that must hold for any score matrix (docs/eval.md#metrics):

- ranks and tie counts equal a per-query loop over the definitions, whatever the ties;
- R@K never decreases as K grows, and R@K ≥ its tie-random expectation ≥ 0;
- media→text on more than one chunk of rows (2,048) equals the unchunked reference;
- the JSON summaries carry every field a report reads, under its documented name.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clipsearch.errors import UsageError
from clipsearch.eval.metrics import (
    classification_metrics,
    media_to_text_ranks,
    rank_metrics,
    retrieval_metrics,
    text_to_media_ranks,
)

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)


# -- the reference: the definitions of eval/metrics.py's docstring, one query at a time ---------
def reference_text_to_media(S: np.ndarray, gt: np.ndarray) -> tuple[list[int], list[int]]:
    ranks, ties = [], []
    for t in range(S.shape[0]):
        g = S[t, gt[t]]
        ranks.append(1 + sum(S[t, m] > g for m in range(S.shape[1])))
        ties.append(sum(S[t, m] == g for m in range(S.shape[1]) if m != gt[t]))
    return ranks, ties


def reference_media_to_text(S: np.ndarray, gt: np.ndarray) -> tuple[list[int], list[int]]:
    ranks, ties = [], []
    for m in range(S.shape[1]):
        best = max(S[t, m] for t in range(S.shape[0]) if gt[t] == m)
        others = [S[t, m] for t in range(S.shape[0]) if gt[t] != m]
        ranks.append(1 + sum(o > best for o in others))
        ties.append(sum(o == best for o in others))
    return ranks, ties


def reference_summary(ranks: list[int], ties: list[int], ks) -> dict[str, object]:
    """R@K, MdR, MnR and the tie-random expectations, computed the long way."""
    n = len(ranks)
    out: dict[str, object] = {}
    for k in ks:
        out[f"R@{k}"] = 100 * sum(r <= k for r in ranks) / n
    out["MdR"] = float(np.median(ranks))
    out["MnR"] = sum(ranks) / n
    out["n"] = n
    out["n_tied"] = sum(e > 0 for e in ties)
    for k in ks:
        # gt placed uniformly among its e tied rivals: positions h+1 .. h+1+e
        p = [
            sum(r + j <= k for j in range(e + 1)) / (e + 1)
            for r, e in zip(ranks, ties, strict=True)
        ]
        out[f"R@{k} ties-random"] = 100 * sum(p) / n
    out["MnR ties-random"] = sum(r + e / 2 for r, e in zip(ranks, ties, strict=True)) / n
    return out


def assert_summary_equal(got: dict[str, object], want: dict[str, object]) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@st.composite
def retrieval_cases(draw, max_texts: int = 9, max_media: int = 6):
    """(S, gt): small integer scores (so ties are common), every media captioned."""
    n_media = draw(st.integers(1, max_media))
    extra = draw(st.lists(st.integers(0, n_media - 1), max_size=max_texts - n_media))
    gt = np.array(draw(st.permutations([*range(n_media), *extra])), dtype=np.int64)
    S = draw(hnp.arrays(np.float32, (gt.size, n_media), elements=st.integers(-2, 2).map(float)))
    return S, gt


KS = st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True)


# -- retrieval ------------------------------------------------------------------------------
@PROPERTY
@given(retrieval_cases())
def test_ranks_and_ties_equal_the_brute_force_reference(case):
    S, gt = case
    ranks, ties = text_to_media_ranks(S, gt)
    assert (ranks.tolist(), ties.tolist()) == reference_text_to_media(S, gt)
    assert ranks.dtype == ties.dtype == np.int64
    ranks, ties = media_to_text_ranks(S, gt)
    assert (ranks.tolist(), ties.tolist()) == reference_media_to_text(S, gt)
    assert ranks.dtype == ties.dtype == np.int64


@PROPERTY
@given(retrieval_cases(), KS)
def test_every_summary_field_equals_the_reference(case, ks):
    S, gt = case
    m = retrieval_metrics(S, gt, ks=ks)
    d = m.to_dict()
    assert set(d) == {"text_to_media", "media_to_text"}
    assert_summary_equal(d["text_to_media"], reference_summary(*reference_text_to_media(S, gt), ks))
    assert_summary_equal(d["media_to_text"], reference_summary(*reference_media_to_text(S, gt), ks))
    json.dumps(d)  # a report writes it as it is


@PROPERTY
@given(retrieval_cases(), KS)
def test_recall_grows_with_k_and_bounds_its_tie_random_expectation(case, ks):
    S, gt = case
    ks = sorted(ks)
    m = retrieval_metrics(S, gt, ks=ks)
    for d in (m.text_to_media, m.media_to_text):
        recalls = [d.recall[k] for k in ks]
        assert recalls == sorted(recalls)
        assert all(0 <= r <= 100 for r in recalls)
        expected = [d.expected_recall[k] for k in ks]
        assert expected == sorted(expected)
        for k in ks:
            # the gt wins its ties: the plain figure is the optimistic one
            assert d.expected_recall[k] <= d.recall[k] + 1e-9
            assert d.hits[k] == sum(d.ranks <= k)
        assert d.expected_mean_rank >= d.mean_rank
        assert 1 <= d.median_rank <= d.ranks.max()


def test_separate_media_to_text_matrix_is_the_one_ranked_that_way():
    """A reranker normalises each direction on its own: media→text must use its matrix."""
    S = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)  # everything right
    S_m2t = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)  # everything wrong
    m = retrieval_metrics(S, [0, 1], ks=(1, 50), S_media_to_text=S_m2t)
    assert m.text_to_media.ranks.tolist() == [1, 1]
    assert m.media_to_text.ranks.tolist() == [2, 2]
    assert m.media_to_text.recall == {1: 0.0, 50: 100.0}  # custom K in both directions
    assert m.text_to_media.recall == {1: 100.0, 50: 100.0}
    assert retrieval_metrics(S, [0, 1]).media_to_text.ranks.tolist() == [1, 1]


def test_media_to_text_over_several_chunks_of_texts_equals_the_reference():
    """COCO has 25k captions: rows are compared 2,048 at a time, and the per-chunk
    counts of higher and tied texts must add up (they are not recomputed per chunk)."""
    rng = np.random.default_rng(4)
    n_media, n_texts = 5, 2048 * 2 + 100
    gt = np.concatenate([np.arange(n_media), rng.integers(0, n_media, n_texts - n_media)])
    S = rng.integers(0, 6, size=(n_texts, n_media)).astype(np.float32)
    # Captions score at most 3: other texts beat and tie the best one in every chunk.
    S[np.arange(n_texts), gt] = rng.integers(0, 4, n_texts)
    ranks, ties = media_to_text_ranks(S, gt)
    want_ranks, want_ties = [], []
    for m in range(n_media):
        best = S[gt == m, m].max()
        others = S[gt != m, m]
        want_ranks.append(1 + int((others > best).sum()))
        want_ties.append(int((others == best).sum()))
    assert ranks.tolist() == want_ranks and ties.tolist() == want_ties
    assert min(want_ties) > 0 and max(want_ranks) > 1  # the case has ties and misses
    t_ranks, t_ties = text_to_media_ranks(S, gt)
    gs = S[np.arange(n_texts), gt][:, None]
    assert t_ranks.tolist() == (1 + (gs < S).sum(axis=1)).tolist()
    assert t_ties.tolist() == ((gs == S).sum(axis=1) - 1).tolist()


@pytest.mark.parametrize(
    ("S", "gt", "t2m", "m2t"),
    [
        # one query: a single text against three media, the media captioned by it alone
        (np.array([[0.2, 0.5, 0.5]]), [1], [1], None),
        # one column: every text describes the only media
        (np.array([[0.3], [0.1], [0.3]]), [0, 0, 0], [1, 1, 1], [1]),
    ],
)
def test_one_query_or_one_column_matrices(S, gt, t2m, m2t):
    ranks, _ = text_to_media_ranks(S, gt)
    assert ranks.tolist() == t2m
    if m2t is None:
        with pytest.raises(UsageError, match="2 media have no caption"):
            media_to_text_ranks(S, gt)
    else:
        assert media_to_text_ranks(S, gt)[0].tolist() == m2t
    d = rank_metrics(ranks, ks=(1, 10)).to_dict()
    assert d["n"] == len(gt) and d["R@1"] == 100.0


def test_one_query_with_a_tie_counts_one_tied_query():
    ranks, ties = text_to_media_ranks(np.array([[0.2, 0.5, 0.5]]), [1])
    d = rank_metrics(ranks, ks=(1,), tied=ties)
    assert d.to_dict() == {
        "R@1": 100.0,
        "MdR": 1.0,
        "MnR": 1.0,
        "n": 1,
        "n_tied": 1,
        "R@1 ties-random": 50.0,
        "MnR ties-random": 1.5,
    }


def test_rank_summary_fields_by_hand():
    m = rank_metrics(np.array([1, 2, 3, 10]), ks=(1, 5), tied=np.array([0, 2, 0, 1]))
    assert m.to_dict() == {
        "R@1": 25.0,
        "R@5": 75.0,
        "MdR": 2.5,
        "MnR": 4.0,
        "n": 4,
        "n_tied": 2,
        "R@1 ties-random": 25.0,
        # rank 2 with 2 tied: positions 2, 3, 4 are all within 5
        "R@5 ties-random": 75.0,
        "MnR ties-random": 4.0 + (2 / 2 + 1 / 2) / 4,
    }
    assert m.n == 4 and m.ties.tolist() == [0, 2, 0, 1]


def test_rank_summary_without_tie_counts_has_no_ties():
    m = rank_metrics([3, 1], ks=(1, 2))
    assert m.n_tied == 0 and m.ties.tolist() == [0, 0]
    assert m.expected_recall == m.recall == {1: 50.0, 2: 50.0}
    assert m.expected_mean_rank == m.mean_rank == 2.0


def test_media_without_captions_error_names_the_first_one():
    with pytest.raises(UsageError) as e:
        media_to_text_ranks(np.zeros((2, 5), np.float32), [0, 3])
    msg = str(e.value)
    assert "3 media have no caption (first: index 1)" in msg
    assert "drop them before computing media→text ranks" in msg


@pytest.mark.parametrize(
    ("S", "gt", "words"),
    [
        (np.zeros((0, 3)), [], "similarity matrix must be a non-empty 2-D array, got shape (0, 3)"),
        (np.zeros((3, 0)), [0, 0, 0], "non-empty 2-D array, got shape (3, 0)"),
        (np.zeros(3), [0], "non-empty 2-D array, got shape (3,)"),
        (np.array([[0.1, np.nan]]), [0], "contains NaN or infinite values; check the embeddings"),
        (np.array([[-np.inf, 0.1]]), [0], "contains NaN or infinite values"),
        (np.zeros((2, 3)), [0], "text_to_media must be 2 integer indices, got shape (1,)"),
        (np.zeros((2, 3)), [0.0, 1.0], "text_to_media must be 2 integer indices"),
        (np.zeros((2, 3)), [0, 3], "text_to_media has indices outside [0, 3)"),
        (np.zeros((2, 3)), [-1, 0], "text_to_media has indices outside [0, 3)"),
    ],
)
def test_malformed_input_errors_say_what_is_wrong(S, gt, words):
    for ranks in (text_to_media_ranks, media_to_text_ranks):
        with pytest.raises(UsageError) as e:
            ranks(S, gt)
        assert words in str(e.value)


def test_integer_scores_are_ranked_like_floats():
    S = np.array([[2, 1, 2], [0, 5, 1]])
    assert text_to_media_ranks(S, [0, 1])[0].tolist() == [1, 1]
    assert text_to_media_ranks(S, [0, 1])[1].tolist() == [1, 0]


def test_no_queries_error():
    with pytest.raises(UsageError, match="no queries to evaluate"):
        rank_metrics([])


# -- classification -------------------------------------------------------------------------
@st.composite
def classification_cases(draw):
    n_classes = draw(st.integers(1, 6))
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=1, max_size=10))
    logits = draw(
        hnp.arrays(np.float64, (len(labels), n_classes), elements=st.integers(-2, 2).map(float))
    )
    return logits, np.array(labels)


@PROPERTY
@given(classification_cases(), st.lists(st.integers(1, 8), min_size=1, max_size=4, unique=True))
def test_classification_equals_the_reference(case, ks):
    logits, labels = case
    n, n_classes = logits.shape
    m = classification_metrics(logits, labels, ks=ks)
    ranks = [1 + int((logits[i] > logits[i, labels[i]]).sum()) for i in range(n)]
    tied = [int((logits[i] == logits[i, labels[i]]).sum()) - 1 for i in range(n)]
    assert m.ranks.tolist() == ranks
    for k in ks:
        want = 100 * sum(r <= k for r in ranks) / n if k <= n_classes else None
        assert m.top_k[k] == pytest.approx(want)
    per_class = []
    for c in range(n_classes):
        mine = [r for r, y in zip(ranks, labels, strict=True) if y == c]
        per_class.append(100 * sum(r == 1 for r in mine) / len(mine) if mine else np.nan)
    np.testing.assert_allclose(m.per_class_recall, per_class)
    present = [p for p in per_class if not np.isnan(p)]
    assert m.mean_per_class_recall == pytest.approx(sum(present) / len(present))
    assert m.n == n and m.n_tied == sum(e > 0 for e in tied)
    d = m.to_dict()
    assert d == {
        **{f"top{k}": m.top_k[k] for k in ks},
        "mean_per_class_recall": m.mean_per_class_recall,
        "n": n,
        "n_tied": m.n_tied,
    }
    json.dumps(d)


def test_top_k_with_k_equal_to_the_number_of_classes_is_reported():
    logits = np.array([[0.1, 0.5, 0.9], [0.9, 0.1, 0.5]])
    m = classification_metrics(logits, [0, 1], ks=(1, 3, 4))
    assert m.top_k == {1: 0.0, 3: 100.0, 4: None}
    assert m.to_dict() == {
        "top1": 0.0,
        "top3": 100.0,
        "top4": None,
        "mean_per_class_recall": 0.0,
        "n": 2,
        "n_tied": 0,
    }


def test_a_class_without_samples_is_nan_without_a_warning():
    """A report prints no numpy RuntimeWarning for a class that no sample has."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]]), [0, 0])
    assert m.per_class_recall[0] == 50.0 and np.isnan(m.per_class_recall[1:]).all()
    assert m.mean_per_class_recall == 50.0


def test_classification_errors_name_logits_and_labels():
    with pytest.raises(UsageError, match=r"logits must be a non-empty 2-D array"):
        classification_metrics(np.zeros(4), [0])
    with pytest.raises(UsageError, match=r"labels has indices outside \[0, 2\)"):
        classification_metrics(np.zeros((1, 2)), [2])
    with pytest.raises(UsageError, match=r"labels must be 1 integer indices"):
        classification_metrics(np.zeros((1, 2)), [0, 1])
