"""The accuracy gate's arithmetic, and the gate on encoders: a degraded one must fail."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.models.agreement import (
    MIN_COSINE,
    AgreementReport,
    measure_agreement,
    top_k_overlap,
)
from clipsearch.models.base import l2_normalize
from tests.fakes import DegradedImageEncoder


def _unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, d)))


def test_identical_vectors_pass_with_perfect_figures():
    ref = _unit_rows(60, 16, 0)
    report = measure_agreement(ref, ref.copy(), _unit_rows(8, 16, 1))
    assert report.passed and report.reason == ""
    assert report.min_cosine == pytest.approx(1.0, abs=1e-6)
    assert report.text_overlap == 1.0 and report.image_overlap == 1.0
    assert (report.check_images, report.text_queries, report.image_queries) == (60, 8, 60)


def test_noisy_vectors_fail_on_cosine():
    ref = _unit_rows(60, 16, 0)
    noisy = ref + 0.3 * _unit_rows(60, 16, 2)  # cos ~0.96
    report = measure_agreement(ref, noisy, _unit_rows(8, 16, 1))
    assert not report.passed
    assert report.min_cosine < MIN_COSINE
    assert "min cosine" in report.reason


def test_high_cosine_but_scrambled_neighbours_fail_on_overlap():
    # Near-duplicate images: all vectors within a small cone, so a perturbation far too small
    # to move any cosine below 0.99 still reorders every neighbour list.
    rng = np.random.default_rng(3)
    centre = np.zeros(32, np.float32)
    centre[0] = 1.0
    ref = l2_normalize(centre + 0.01 * rng.standard_normal((80, 32)))
    cand = l2_normalize(ref + 0.006 * rng.standard_normal((80, 32)))
    queries = l2_normalize(centre + 0.01 * rng.standard_normal((8, 32)))
    report = measure_agreement(ref, cand, queries)
    assert report.min_cosine >= MIN_COSINE
    assert not report.passed
    assert "overlap" in report.reason


def test_top_k_overlap_leaves_the_query_out_of_its_own_neighbours():
    g = np.eye(4, dtype=np.float32)
    g[1] = l2_normalize(np.array([1, 0.1, 0, 0], np.float32))
    g[2] = l2_normalize(np.array([1, 0, 0.2, 0], np.float32))
    # Candidate swaps which of items 1 and 2 is nearer to item 0.
    c = g.copy()
    c[1], c[2] = g[2], g[1]
    full = top_k_overlap(g[:1], g, c, 1)
    assert full.tolist() == [1.0]  # without exclusion item 0 finds itself in both
    ov = top_k_overlap(g, g, c, 1, exclude_diagonal=True)
    assert ov[0] == 0.0  # nearest other item: 1 under ref, 2 under candidate


def test_report_round_trips_through_a_dict():
    ref = _unit_rows(40, 8, 0)
    r = measure_agreement(ref, ref, _unit_rows(4, 8, 1), reference_img_s=10.0, candidate_img_s=25.0)
    d = r.to_dict()
    assert d["speedup"] == pytest.approx(2.5)
    assert AgreementReport.from_dict(d) == r


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError):
        measure_agreement(_unit_rows(10, 8, 0), _unit_rows(9, 8, 0), np.zeros((0, 8)))


@pytest.fixture
def check_pixels(tiny_encoder, tmp_path, make_image):
    from PIL import Image

    colours = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"]
    paths = [make_image(tmp_path / f"{i}.jpg", colours[i % 8], seed=i) for i in range(48)]
    return np.stack([tiny_encoder.preprocess(Image.open(p).convert("RGB")) for p in paths])


def test_gate_fails_a_degraded_encoder_and_passes_a_faithful_one(tiny_encoder, check_pixels):
    texts = tiny_encoder.encode_texts(["a red square", "a blue sky", "green grass", "night"])
    ref = tiny_encoder.encode_pixels(check_pixels)
    degraded = DegradedImageEncoder(tiny_encoder, noise=0.1).encode_pixels(check_pixels)
    faithful = DegradedImageEncoder(tiny_encoder, noise=0.0).encode_pixels(check_pixels)
    bad = measure_agreement(ref, degraded, texts)
    good = measure_agreement(ref, faithful, texts)
    assert not bad.passed and bad.min_cosine < MIN_COSINE
    assert good.passed and good.min_cosine > 0.9999
