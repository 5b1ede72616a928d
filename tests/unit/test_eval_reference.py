"""Our metrics equal the reference implementations on the same matrices.

- CLIP_benchmark (``clip_benchmark.metrics.zeroshot_retrieval.evaluate`` and
  ``zeroshot_classification``), run for real on the same embeddings: equal hit counts and
  equal values at their precision, with and without several captions per image.
- CLIP4Clip's ``compute_metrics`` (ArrowLuo/CLIP4Clip ``metrics.py``), restated below
  as the reference formula: equal R@K, MdR, MnR to the last bit without ties.
- Ties: what each reference does, and how ours relates (documented in docs/eval.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.eval.metrics import (
    classification_metrics,
    media_to_text_ranks,
    rank_metrics,
    retrieval_metrics,
    text_to_media_ranks,
)

torch = pytest.importorskip("torch")
zr = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
zc = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")

KS = (1, 5, 10)


def clip4clip_compute_metrics(x: np.ndarray) -> dict[str, float]:
    """CLIP4Clip metrics.py compute_metrics: locates the gt by matching sorted scores."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)
    d = d[:, np.newaxis]
    ind = sx - d
    ind = np.where(ind == 0)
    ind = ind[1]
    return {
        "R1": float(np.sum(ind == 0)) * 100 / len(ind),
        "R5": float(np.sum(ind < 5)) * 100 / len(ind),
        "R10": float(np.sum(ind < 10)) * 100 / len(ind),
        "MedianR": np.median(ind) + 1,
        "MeanR": np.mean(ind) + 1,
    }


class _LookupModel:
    """A 'CLIP model' whose inputs are row indices into fixed embedding tables."""

    def __init__(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
        self.image_emb, self.text_emb = image_emb, text_emb

    def encode_image(self, idx: torch.Tensor) -> torch.Tensor:
        return self.image_emb[idx]

    def encode_text(self, idx: torch.Tensor) -> torch.Tensor:
        return self.text_emb[idx]


def _run_clip_benchmark_retrieval(n_images: int, caps_per_image: list[int], seed: int, monkeypatch):
    """Run CLIP_benchmark's evaluate on random embeddings; return (their metrics, S, gt)."""
    g = torch.Generator().manual_seed(seed)
    image_emb = torch.randn(n_images, 32, generator=g)
    text_emb = torch.randn(sum(caps_per_image), 32, generator=g)
    captions, starts = [], np.cumsum([0, *caps_per_image])
    for i in range(n_images):
        captions.append([str(t) for t in range(starts[i], starts[i + 1])])
    batch = 7  # deliberately not a divisor: exercises batchify's last partial batch
    loader = [
        (torch.arange(lo, min(lo + batch, n_images)), captions[lo : lo + batch])
        for lo in range(0, n_images, batch)
    ]
    seen = {}
    real_batchify = zr.batchify

    def spy(func, X, Y, *args, **kwargs):
        seen.setdefault("scores", X)  # the first call gets the (texts, images) score matrix
        return real_batchify(func, X, Y, *args, **kwargs)

    monkeypatch.setattr(zr, "batchify", spy)
    theirs = zr.evaluate(
        _LookupModel(image_emb, text_emb),
        loader,
        lambda texts: torch.tensor([int(t) for t in texts]),
        "cpu",
        amp=False,
        recall_k_list=list(KS),
    )
    gt = np.repeat(np.arange(n_images), caps_per_image)
    return theirs, seen["scores"].numpy(), gt


@pytest.mark.parametrize(
    "n_images, caps",
    [(40, [1] * 40), (30, [5] * 30), (25, [1, 2, 3, 4, 5] * 5)],
    ids=["one-caption", "five-captions", "ragged-captions"],
)
def test_equal_to_clip_benchmark_on_random_embeddings(n_images, caps, monkeypatch):
    theirs, S, gt = _run_clip_benchmark_retrieval(
        n_images, caps, seed=n_images, monkeypatch=monkeypatch
    )
    ours = retrieval_metrics(S, gt, ks=KS)
    assert ours.text_to_media.n_tied == 0 and ours.media_to_text.n_tied == 0  # precondition
    for k in KS:
        for direction, key in (
            (ours.text_to_media, f"image_retrieval_recall@{k}"),
            (ours.media_to_text, f"text_retrieval_recall@{k}"),
        ):
            # same hit count, and the same float32 value CLIP_benchmark reports (a fraction)
            assert np.float32(direction.hits[k]) / np.float32(direction.n) == np.float32(
                theirs[key]
            )
            assert direction.recall[k] == pytest.approx(100 * theirs[key], rel=1e-6)
    # the comparison is not vacuous: these random sets are neither all hits nor all misses
    assert 0 < ours.text_to_media.recall[5] < 100


def test_per_query_hits_equal_clip_benchmark_recall_at_k():
    rng = np.random.default_rng(5)
    n_media, gt = 20, np.repeat(np.arange(20), 3)
    S = rng.standard_normal((gt.size, n_media)).astype(np.float32)
    pos = np.zeros_like(S, dtype=bool)
    pos[np.arange(gt.size), gt] = True
    t_ranks, _ = text_to_media_ranks(S, gt)
    m_ranks, _ = media_to_text_ranks(S, gt)
    for k in KS:
        theirs_t = zr.recall_at_k(torch.from_numpy(S), torch.from_numpy(pos), k) > 0
        theirs_m = (
            zr.recall_at_k(torch.from_numpy(S.T.copy()), torch.from_numpy(pos.T.copy()), k) > 0
        )
        assert (theirs_t.numpy() == (t_ranks <= k)).all()
        assert (theirs_m.numpy() == (m_ranks <= k)).all()


def test_ties_clip_benchmark_topk_breaks_by_position_ours_lets_the_gt_win():
    """A gt that ties with another candidate at the top (e.g. a duplicate image).

    torch.topk returns exactly k indices and picks among equal scores in an unspecified
    order, so for two mirrored queries (gt first / gt second of the tied pair) exactly one
    is a hit at K=1. Ours counts both as hits (rank = 1 + #strictly higher) and reports
    both as tied.
    """
    S = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1]], dtype=np.float32)
    gt = np.array([0, 1])
    pos = np.zeros_like(S, dtype=bool)
    pos[np.arange(2), gt] = True
    theirs = zr.recall_at_k(torch.from_numpy(S), torch.from_numpy(pos), 1) > 0
    assert int(theirs.sum()) == 1  # one of the two, depending on topk's tie order
    ranks, tied = text_to_media_ranks(S, gt)
    assert ranks.tolist() == [1, 1] and tied.tolist() == [1, 1]
    # ours with a random tie order expects what topk does on average: one hit in two
    assert rank_metrics(ranks, ks=(1,), tied=tied).expected_recall[1] == 50.0
    # Below the boundary ties change nothing: at K=2 both agree on hits.
    theirs2 = zr.recall_at_k(torch.from_numpy(S), torch.from_numpy(pos), 2) > 0
    assert theirs2.all() and (ranks <= 2).all()


def test_equal_to_clip4clip_without_ties_both_directions():
    rng = np.random.default_rng(7)
    S = rng.standard_normal((60, 60)).astype(np.float32)
    eye = np.arange(60)
    ours = retrieval_metrics(S, eye, ks=KS)
    for m, ref in (
        (ours.text_to_media, clip4clip_compute_metrics(S)),
        (ours.media_to_text, clip4clip_compute_metrics(S.T)),  # CLIP4Clip's video→text
    ):
        assert m.n_tied == 0
        assert (m.recall[1], m.recall[5], m.recall[10]) == (ref["R1"], ref["R5"], ref["R10"])
        assert m.median_rank == ref["MedianR"]
        assert m.mean_rank == ref["MeanR"]
    assert 0 < ours.text_to_media.recall[10] < 100


def test_clip4clip_counts_a_tied_query_several_times():
    """CLIP4Clip's np.where(sorted == gt) yields one entry per tied position, so a tied
    query adds extra 'queries' (len(ind) > n) and shifts every figure; ours keeps one rank
    per query and reports the tie."""
    S = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],
            [0.7, 0.7, 0.7, 0.1],  # gt (col 1) ties with cols 0 and 2 at the top
            [0.1, 0.2, 0.8, 0.3],
            [0.1, 0.9, 0.2, 0.4],  # gt (col 3) below col 1
        ],
        dtype=np.float32,
    )
    eye = np.arange(4)
    ref = clip4clip_compute_metrics(S)
    ours = retrieval_metrics(S, eye, ks=KS).text_to_media
    assert ours.ranks.tolist() == [1, 1, 1, 2]
    assert ours.recall[1] == 75.0 and ours.n_tied == 1
    # reference: row 1 contributes positions 0, 1 and 2, so there are 6 "queries" for 4
    # rows, 3 of them at position 0: R@1 = 50 where every row but the last is a hit.
    assert ref["R1"] == 3 * 100 / 6
    assert ref["MeanR"] == 1 + (0 + 0 + 1 + 2 + 0 + 1) / 6


def clip_benchmark_accuracy(output, target, topk=(1,)):
    """``zeroshot_classification.accuracy`` of clip-benchmark 1.6.2, restated: the shipped
    function calls ``float()`` on a 1-element array, which numpy >= 2.4 refuses
    (TypeError). Same topk-based formula; where the shipped one runs, both must agree."""
    try:
        shipped = zc.accuracy(output, target, topk=topk)
    except TypeError:
        shipped = None
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    restated = [float(correct[:k].reshape(-1).float().sum(0).item()) / n for k in topk]
    assert shipped is None or shipped == restated
    return restated


def _random_logits(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.standard_normal((n, c)).astype(np.float32)
    logits[np.arange(n), labels] += 1.0  # better than chance, still many errors
    return logits, labels


@pytest.mark.parametrize("n_classes", [3, 12])
def test_classification_equal_to_clip_benchmark(n_classes):
    from sklearn.metrics import balanced_accuracy_score

    logits, labels = _random_logits(200, n_classes, seed=n_classes)
    ours = classification_metrics(logits, labels)
    assert ours.n_tied == 0
    out, target = torch.from_numpy(logits), torch.from_numpy(labels)
    if n_classes >= 5:
        acc1, acc5 = clip_benchmark_accuracy(out, target, topk=(1, 5))
        assert round(acc5 * 200) == int((ours.ranks <= 5).sum())
        assert ours.top_k[5] == pytest.approx(100 * acc5, rel=1e-12)
    else:
        (acc1,) = clip_benchmark_accuracy(out, target, topk=(1,))
        assert ours.top_k[5] is None  # CLIP_benchmark reports NaN for top-5 below 5 classes
    assert round(acc1 * 200) == int((ours.ranks <= 1).sum())
    assert ours.top_k[1] == pytest.approx(100 * acc1, rel=1e-12)
    bal = balanced_accuracy_score(labels, logits.argmax(axis=1))
    assert ours.mean_per_class_recall == pytest.approx(100 * bal, rel=1e-12)
    assert 0 < ours.top_k[1] < 100


def test_build_classifier_equals_clip_benchmark_zero_shot_classifier():
    from clipsearch.search.zeroshot import build_classifier
    from tests.fakes import TextTableEncoder

    classnames = ["cat", "dog", "sea otter"]
    templates = ["a photo of a {c}.", "a drawing of the {c}.", "{c}"]
    prompts = [t.replace("{c}", c) for c in classnames for t in templates]
    table = torch.randn(len(prompts), 16, generator=torch.Generator().manual_seed(3))
    index = {p: i for i, p in enumerate(prompts)}

    class Model:
        def encode_text(self, idx):
            return table[idx]

    theirs = zc.zero_shot_classifier(
        Model(),
        lambda texts: torch.tensor([index[t] for t in texts]),
        classnames,
        templates,
        "cpu",
        amp=False,
    )  # (D, C)
    # unnormalised rows on purpose: build_classifier must normalise each prompt itself
    encoder = TextTableEncoder(dict(zip(prompts, table.numpy(), strict=True)))
    ours = build_classifier(encoder, classnames, templates, batch_size=4)  # (C, D)
    np.testing.assert_allclose(ours, theirs.numpy().T, atol=1e-6)
