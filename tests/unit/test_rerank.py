"""Hubness rerankers, modality-gap correction and composed queries against hand-computed cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.eval.rerank import RerankContext
from clipsearch.search import gap, rerank

# Two gallery items, three queries, a bank of two queries that both pick gallery item 0.
S = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.6]], dtype=np.float32)  # (Q=3, G=2)
BANK = np.array([[0.9, 0.3], [0.8, 0.2]], dtype=np.float32)  # (B=2, G=2)


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def test_inverted_softmax_matches_the_formula_by_hand():
    beta = 2.0
    out = rerank.inverted_softmax(S, BANK, beta=beta)
    col0 = lse(beta * 0.9, beta * 0.8) / beta
    col1 = lse(beta * 0.3, beta * 0.2) / beta
    expected = np.array(
        [[0.9 - col0, 0.1 - col1], [0.2 - col0, 0.8 - col1], [0.5 - col0, 0.6 - col1]]
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_activation_set_is_the_top1_of_every_bank_query():
    assert rerank.activation_mask(BANK).tolist() == [True, False]
    bank = np.array([[0.9, 0.3, 0.0], [0.1, 0.2, 0.7]])
    assert rerank.activation_mask(bank).tolist() == [True, False, True]
    assert rerank.activation_mask(bank, k=2).tolist() == [True, True, True]


def test_qbnorm_normalises_only_queries_whose_raw_top1_is_activated():
    beta = 2.0
    out = rerank.dynamic_inverted_softmax(S, BANK, beta=beta)
    col0 = lse(beta * 0.9, beta * 0.8) / beta
    col1 = lse(beta * 0.3, beta * 0.2) / beta
    # row 0's top-1 is item 0, in A: normalised; rows 1 and 2 pick item 1, not in A: raw.
    np.testing.assert_allclose(out[0], [0.9 - col0, 0.1 - col1], atol=1e-6)
    np.testing.assert_array_equal(out[1:], S[1:])


def test_qbnorm_ranks_like_the_reference_exp_divide_form():
    # The reference (ioanacroi/qb-norm) divides exp(β·s) by the bank's column sums of
    # exp(β·s_b) for activated queries and keeps raw scores otherwise; per query, the
    # order of the gallery must be the same as ours.
    rng = np.random.default_rng(3)
    g = _unit(rng.standard_normal((40, 8)))
    q, b = _unit(rng.standard_normal((25, 8))), _unit(rng.standard_normal((60, 8)))
    sims, bank, beta = q @ g.T, b @ g.T, 20.0
    active = np.isin(np.argmax(sims, axis=1), np.unique(np.argmax(bank, axis=1)))
    reference = sims.astype(np.float64).copy()
    reference[active] = np.exp(beta * sims[active]) / np.exp(beta * bank).sum(axis=0)
    ours = rerank.dynamic_inverted_softmax(sims, bank, beta=beta)
    assert 0 < active.sum() < len(active)  # both branches exercised
    for r in range(len(sims)):
        assert (
            np.argsort(-ours[r], kind="stable").tolist()
            == np.argsort(-reference[r], kind="stable").tolist()
        )


def test_inverted_softmax_demotes_a_hub_that_wins_every_query():
    # Gallery item 0 is a hub: 0.6 for every query, whereas each query's own item scores 0.55.
    n = 4
    sims = np.full((n, n + 1), 0.1, dtype=np.float32)
    sims[:, 0] = 0.6
    sims[np.arange(n), np.arange(1, n + 1)] = 0.55
    bank = sims[[0, 1, 2, 3, 0, 1, 2, 3]]  # other queries of the same kind
    assert (np.argmax(sims, axis=1) == 0).all()
    fixed = rerank.inverted_softmax(sims, bank, beta=20.0)
    assert np.argmax(fixed, axis=1).tolist() == [1, 2, 3, 4]
    fixed = rerank.dynamic_inverted_softmax(sims, bank, beta=20.0)
    assert np.argmax(fixed, axis=1).tolist() == [1, 2, 3, 4]


def test_dual_inverted_softmax_by_hand_with_self_masking():
    bq, bg = 1.0, 2.0
    gallery_bank = rerank.self_masked(np.array([[1.0, 0.4], [0.4, 1.0]]), np.array([0, 1]))
    assert np.isneginf(gallery_bank[0, 0]) and np.isneginf(gallery_bank[1, 1])
    out = rerank.dual_inverted_softmax(S, BANK, gallery_bank, beta_q=bq, beta_g=bg)
    q_term = [lse(0.9, 0.8), lse(0.3, 0.2)]
    g_term = [bg * 0.4, bg * 0.4]  # each item normalised by the other item only
    expected = S - (np.array(q_term) + np.array(g_term))[None, :] / (bq + bg)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # log of the product of the two inverted softmaxes, divided by (bq + bg): same value
    prod = (np.exp(bq * S[0, 1]) / math.exp(q_term[1])) * (
        np.exp(bg * S[0, 1]) / math.exp(g_term[1])
    )
    assert out[0, 1] == pytest.approx(math.log(prod) / (bq + bg), abs=1e-6)


def test_dual_dynamic_applies_each_factor_by_its_own_activation_set():
    # Query bank activates item 0 only; gallery bank activates item 1 only.
    gallery_bank = np.array([[-np.inf, 0.9], [-np.inf, 0.5], [0.1, 0.3]])  # every row picks 1
    out = rerank.dual_inverted_softmax(S, BANK, gallery_bank, beta_q=1.0, beta_g=1.0, dynamic=True)
    q_term = np.array([lse(0.9, 0.8), lse(0.3, 0.2)])
    g_term = np.array([lse(0.1), lse(0.9, 0.5, 0.3)])
    # query 0 (top-1 item 0): only the query-bank factor; queries 1, 2 (top-1 item 1): only
    # the gallery-bank factor.
    np.testing.assert_allclose(out[0], S[0] - q_term / 2, atol=1e-6)
    np.testing.assert_allclose(out[1:], S[1:] - g_term[None, :] / 2, atol=1e-6)


@pytest.mark.parametrize("method", ["is", "qbnorm", "dbnorm", "dbnorm-dynamic"])
def test_precomputed_bank_terms_equal_the_matrix_forms(method):
    rng = np.random.default_rng(7)
    g = _unit(rng.standard_normal((50, 16)))
    q, b = _unit(rng.standard_normal((9, 16))), _unit(rng.standard_normal((30, 16)))
    ids = np.arange(100, 150)[::-1].copy()  # catalog ids in no particular order
    terms = rerank.build_bank_terms(g, ids, b, beta_q=20, beta_g=10, gallery_bank_size=100)
    sims = q @ g.T
    gb = rerank.self_masked(g @ g.T, np.arange(50))
    expected = {
        "is": lambda: rerank.inverted_softmax(sims, b @ g.T, beta=20),
        "qbnorm": lambda: rerank.dynamic_inverted_softmax(sims, b @ g.T, beta=20),
        "dbnorm": lambda: rerank.dual_inverted_softmax(sims, b @ g.T, gb, beta_q=20, beta_g=10),
        "dbnorm-dynamic": lambda: rerank.dual_inverted_softmax(
            sims, b @ g.T, gb, beta_q=20, beta_g=10, dynamic=True
        ),
    }[method]()
    got = np.stack(
        [terms.rescore(ids, sims[r], method=method, top1=ids[np.argmax(sims[r])]) for r in range(9)]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bank_terms_are_chunked_consistently(monkeypatch):
    rng = np.random.default_rng(1)
    g, b = _unit(rng.standard_normal((37, 8))), _unit(rng.standard_normal((11, 8)))
    whole = rerank.build_bank_terms(g, np.arange(37), b, gallery_bank_size=10)
    monkeypatch.setattr(rerank, "_CHUNK", 5)
    chunked = rerank.build_bank_terms(g, np.arange(37), b, gallery_bank_size=10)
    np.testing.assert_allclose(chunked.query_lse, whole.query_lse, rtol=1e-6)
    np.testing.assert_allclose(chunked.gallery_lse, whole.gallery_lse, rtol=1e-6)
    assert (chunked.query_active == whole.query_active).all()
    assert (chunked.gallery_active == whole.gallery_active).all()


def test_unknown_items_keep_raw_scores_and_none_is_identity():
    g = np.eye(3, dtype=np.float32)
    terms = rerank.build_bank_terms(g, np.array([1, 2, 3]), g[:1], gallery_bank_size=0)
    out = terms.rescore(np.array([1, 99]), np.array([0.5, 0.4]), method="is", top1=1)
    assert out[1] == pytest.approx(0.4)
    assert out[0] != pytest.approx(0.5)
    np.testing.assert_allclose(
        terms.rescore(np.array([1]), np.array([0.5]), method="none", top1=1), [0.5]
    )
    with pytest.raises(UsageError, match="gallery bank"):
        terms.rescore(np.array([1]), np.array([0.5]), method="dbnorm", top1=1)
    with pytest.raises(UsageError, match="unknown reranker"):
        terms.rescore(np.array([1]), np.array([0.5]), method="magic", top1=1)


def test_bank_terms_round_trip_through_a_file(tmp_path: Path):
    rng = np.random.default_rng(2)
    g, b = _unit(rng.standard_normal((20, 8))), _unit(rng.standard_normal((5, 8)))
    terms = rerank.build_bank_terms(g, np.arange(20), b, gallery_bank_size=8, key="abc")
    terms.save(tmp_path / "bank.npz")
    back = rerank.BankTerms.load(tmp_path / "bank.npz")
    assert back.key == "abc" and back.n_gallery_bank == 8 and back.beta_q == terms.beta_q
    np.testing.assert_array_equal(back.query_lse, terms.query_lse)
    np.testing.assert_array_equal(back.gallery_active, terms.gallery_active)


def test_empty_bank_or_gallery_is_a_clear_error():
    with pytest.raises(UsageError, match="bank is empty"):
        rerank.inverted_softmax(S, np.zeros((0, 2)))
    with pytest.raises(UsageError, match="need S"):
        rerank.inverted_softmax(S, np.zeros((2, 3)))
    with pytest.raises(UsageError, match="non-empty"):
        rerank.build_bank_terms(np.zeros((0, 4)), np.zeros(0, np.int64), np.ones((2, 4)))


def test_eval_rerankers_plug_into_the_harness_context():
    rng = np.random.default_rng(4)
    texts, media = _unit(rng.standard_normal((6, 8))), _unit(rng.standard_normal((5, 8)))
    sims = texts @ media.T
    fns = rerank.eval_rerankers()
    assert set(fns) == {"is", "qbnorm", "dbnorm", "dbnorm-dynamic"}
    ctx = RerankContext(texts, media, "text_to_media")  # no bank: the queries themselves
    np.testing.assert_allclose(fns["is"](sims, ctx), rerank.inverted_softmax(sims, sims), atol=1e-6)
    bank = _unit(rng.standard_normal((7, 8)))
    ctx = RerankContext(texts, media, "text_to_media", query_bank=bank)
    np.testing.assert_allclose(
        fns["qbnorm"](sims, ctx), rerank.dynamic_inverted_softmax(sims, bank @ media.T), atol=1e-6
    )
    assert fns["dbnorm"](sims, ctx).shape == sims.shape


# --- modality gap ----------------------------------------------------------------------------
def test_gap_vector_and_corrected_similarity_by_hand():
    imgs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    txts = np.array([[0.0, 0.0, 1.0]])
    g = gap.estimate_gap(imgs, txts)
    np.testing.assert_allclose(g.delta, [0.5, 0.5, -1.0])
    assert g.magnitude == pytest.approx(math.sqrt(1.5))
    # center: subtract mean(img) = (0.5, 0.5, 0): the two images become opposite (cos −1)
    np.testing.assert_allclose(
        gap.corrected_similarity(imgs[:1], imgs, g, mode="center"), [[1.0, -1.0]], atol=1e-6
    )
    # shift: x − Δ; by hand for image 0: (0.5, −0.5, 1), image 1: (−0.5, 0.5, 1) -> cos 0/1.5
    np.testing.assert_allclose(
        gap.corrected_similarity(imgs[:1], imgs, g, mode="shift"), [[1.0, 0.5 / 1.5]], atol=1e-6
    )
    with pytest.raises(UsageError, match="mode"):
        g.correct(imgs, mode="sideways")
    with pytest.raises(UsageError):
        gap.estimate_gap(np.zeros((0, 3)), txts)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
