"""Zero-shot classification: prompt-ensemble arithmetic, probabilities, labels, thresholds,
auto thresholds, per-moment video labels, and moderation policy files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from clipsearch.errors import NotFoundError, UsageError
from clipsearch.models.base import Encoder
from clipsearch.search import classify as C
from clipsearch.search.moderation import ModerationPolicy, PolicyError

COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan"]


class TableEncoder(Encoder):
    """Text vectors from a fixed table (deliberately not unit length, to test the
    normalisation steps); images are not used."""

    spec = "table"
    fingerprint = "table-v1"
    dim = 3
    logit_scale = 10.0

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.table = {k: np.asarray(v, dtype=np.float32) for k, v in table.items()}

    def preprocess(self, image):  # pragma: no cover - not used
        raise NotImplementedError

    def encode_pixels(self, pixels):  # pragma: no cover - not used
        raise NotImplementedError

    def encode_texts(self, texts):
        return np.stack([self.table[t] for t in texts])


def test_prompt_ensemble_arithmetic_by_hand():
    # class "cat": prompts -> (2,0,0) and (0,3,0); normalised (1,0,0), (0,1,0);
    # mean (0.5, 0.5, 0); normalised (1/√2, 1/√2, 0). class "dog": (0,0,5), (0,4,3):
    # normalised (0,0,1), (0,0.8,0.6); mean (0, 0.4, 0.8); normalised (0, 1/√5, 2/√5).
    enc = TableEncoder(
        {
            "a photo of a cat.": [2, 0, 0],
            "a drawing of a cat.": [0, 3, 0],
            "a photo of a dog.": [0, 0, 5],
            "a drawing of a dog.": [0, 4, 3],
        }
    )
    clf = C.build_classifier(
        enc, "cat, dog", templates=["a photo of a {c}.", "a drawing of a {c}."]
    )
    r2, r5 = math.sqrt(0.5), 1 / math.sqrt(5)
    np.testing.assert_allclose(clf.weights, [[r2, r2, 0], [0, r5, 2 * r5]], atol=1e-6)
    # probabilities: softmax(logit_scale · cosine) with the model's own scale (10 here)
    x = np.array([[1.0, 0.0, 0.0]])
    s_cat, s_dog = r2, 0.0
    p_cat = math.exp(10 * s_cat) / (math.exp(10 * s_cat) + math.exp(10 * s_dog))
    (pred,) = clf.predict(x, top_k=5)
    assert pred.labels == ("cat", "dog")
    assert pred.probs[0] == pytest.approx(p_cat, rel=1e-6)
    assert pred.scores == pytest.approx((s_cat, s_dog), abs=1e-6)
    assert sum(pred.probs) == pytest.approx(1.0)


def test_images_of_a_colour_are_classified_as_that_colour(tmp_path, fake_encoder, make_image):
    for c in COLOURS:
        make_image(tmp_path / "pics" / f"{c}.jpg", c, seed=len(c))
    (tmp_path / "pics" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    clf = C.build_classifier(fake_encoder, COLOURS, templates="imagenet")
    results = C.classify_files(fake_encoder, clf, [tmp_path / "pics"], top_k=3)
    by_name = {Path(r.path).name: r for r in results}
    assert set(by_name) == {f"{c}.jpg" for c in COLOURS} | {"broken.jpg"}
    assert by_name["broken.jpg"].error and by_name["broken.jpg"].prediction is None
    for c in COLOURS:
        pred = by_name[f"{c}.jpg"].prediction
        assert pred.labels[0] == c
        assert pred.probs[0] > 0.9 and len(pred.labels) == 3
        assert list(pred.probs) == sorted(pred.probs, reverse=True)
    assert by_name["red.jpg"].to_dict()["top"][0]["label"] == "red"


def test_classify_files_errors(tmp_path, fake_encoder):
    clf = C.build_classifier(fake_encoder, "red,blue")
    with pytest.raises(NotFoundError):
        C.classify_files(fake_encoder, clf, [tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no image or video"):
        C.classify_files(fake_encoder, clf, [tmp_path / "empty"])
    with pytest.raises(UsageError, match="top-k"):
        clf.predict(np.zeros((1, fake_encoder.dim)), top_k=0)


def test_video_is_classified_by_pooled_vector_and_per_moment(tmp_path, fake_encoder):
    from tests.videogen import make_video

    video = make_video(tmp_path / "clip.mp4", (("red", 2.0), ("blue", 2.0)), fps=10, size=(64, 48))
    clf = C.build_classifier(fake_encoder, "red,blue,green")
    (res,) = C.classify_files(fake_encoder, clf, [video], top_k=3, per_moment=True, sampler="fps:2")
    assert res.kind == "video" and res.error is None
    assert set(res.prediction.labels[:2]) == {"red", "blue"}  # half red, half blue
    assert [m.label for m in res.moments] == ["red", "blue"]
    red, blue = res.moments
    assert red.start == pytest.approx(0.0) and blue.end == pytest.approx(4.0, abs=0.3)
    assert red.end == pytest.approx(2.0, abs=0.3) and red.end == pytest.approx(blue.start)


def test_moments_group_runs_of_the_same_top_label(fake_encoder):
    clf = C.build_classifier(fake_encoder, "red,blue")
    frames = fake_encoder.encode_texts(["red", "red", "blue", "blue", "blue", "red"])
    ts = np.arange(6, dtype=np.float64)
    moments = C.moments_from_frames(clf, ts, frames, duration=6.0)
    assert [(m.label, m.start, m.end) for m in moments] == [
        ("red", 0.0, 1.5),
        ("blue", 1.5, 4.5),
        ("red", 4.5, 6.0),
    ]


def test_labels_from_text_or_file(tmp_path):
    assert C.parse_labels(" cat , dog,,  hot  dog ") == ["cat", "dog", "hot dog"]
    f = tmp_path / "labels.txt"
    f.write_text("# animals\ncat\n\n  dog \n")
    assert C.parse_labels(str(f)) == ["cat", "dog"]
    assert C.parse_labels(["a", "b"]) == ["a", "b"]
    for bad, why in (
        (" , ,", "no labels"),
        ("cat,Cat", "duplicate labels: Cat"),
        ([], "no labels"),
    ):
        with pytest.raises(UsageError, match=why):
            C.parse_labels(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(UsageError, match="no labels"):
        C.parse_labels(str(empty))


@pytest.mark.parametrize("bad", [1.5, -1.01, "nan", "high", True, None])
def test_threshold_outside_the_cosine_range_is_refused(bad):
    with pytest.raises(UsageError, match="between -1 and 1"):
        C.check_threshold(bad)


def test_threshold_accepts_numbers_and_numeric_text():
    assert C.check_threshold("0.25") == 0.25
    assert C.check_threshold(-1) == -1.0


def test_long_labels_are_truncated_with_a_note_not_a_print(fake_encoder, capsys):
    long = "a " + "very " * 90 + "red thing"
    clf = C.build_classifier(fake_encoder, [long, "blue"])
    assert len(clf.notes) == 1 and "truncated" in clf.notes[0] and "77" in clf.notes[0]
    assert capsys.readouterr() == ("", "")
    assert C.build_classifier(fake_encoder, "red,blue").notes == ()


@pytest.mark.slow  # loads open_clip (session fixture)
def test_token_count_uses_the_models_tokenizer(tiny_encoder):
    ctx = tiny_encoder.context_length
    text = "a photo of a cat."
    ids = np.asarray(tiny_encoder.tokenizer([text]))[0]
    assert C.token_count(tiny_encoder, text) == int((ids != 0).sum()) == 8  # sot 6 eot
    clf = C.build_classifier(tiny_encoder, ["cat", " ".join(["dog"] * ctx)])
    assert len(clf.notes) == 1 and "dog dog" in clf.notes[0]


def test_auto_threshold_splits_two_groups_and_refuses_one_bell():
    rng = np.random.default_rng(0)
    two = np.r_[rng.normal(0.10, 0.02, 90), rng.normal(0.80, 0.02, 10)]
    thr, eta = C.auto_threshold(two)
    assert 0.2 < thr < 0.7 and eta > 0.9
    assert ((two >= thr) == (np.arange(100) >= 90)).all()
    thr, eta = C.auto_threshold(rng.normal(0.2, 0.05, 500))
    assert thr is None and 0.55 < eta < 0.7  # one bell curve: η ≈ 2/π
    assert C.auto_threshold(np.full(20, 0.3)) == (None, 0.0)


# --- moderation policies ---------------------------------------------------------------------
GOOD_POLICY = """\
# house rules
templates = "simple"
video = "pooled"

[labels]
"a weapon" = 0.27
blood = { threshold = 0.25, reason = "graphic violence" }
'nudity' = -0.5
"""


def test_policy_file_is_parsed_with_reasons_and_lines(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text(GOOD_POLICY)
    policy = ModerationPolicy.load(f)
    assert policy.templates == "simple" and policy.video == "pooled"
    assert [(r.label, r.threshold, r.reason, r.line) for r in policy.rules] == [
        ("a weapon", 0.27, "a weapon", 6),
        ("blood", 0.25, "graphic violence", 7),
        ("nudity", -0.5, "nudity", 8),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[labels]\n"a" = 0.2\n"b" = 1.5\n', r"line 3: .*between -1 and 1"),
        ('[labels]\n"a" = 0.2\n"b" = "high"\n', r"line 3: .*between -1 and 1"),
        ('[labels]\n"a" = 0.2\n"A" = 0.3\n', r"line 3: duplicate label 'A'"),
        ('[labels]\n"a" = 0.2\n"b" = { reason = "x" }\n', r"line 3: 'b': expected"),
        ('colour = "red"\n[labels]\n"a" = 0.2\n', r"line 1: unknown setting 'colour'"),
        ('video = "min"\n[labels]\n"a" = 0.2\n', r"line 1: video must be"),
        ('templates = "default"\n', r"no \[labels\] table"),
        ('[labels]\n"a" = 0.2\n"a" = 0.3\n', r"line 3: .*not valid TOML"),
        ('[labels]\n"a" = \n', r"line 2: .*not valid TOML"),
        ('[labels]\n"  " = 0.2\n', r"line 2: a label is empty"),
    ],
)
def test_policy_errors_name_the_line_and_the_reason(text, message):
    with pytest.raises(PolicyError, match=message):
        ModerationPolicy.parse(text, source="policy.toml")


def test_unreadable_policy_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        ModerationPolicy.load(tmp_path / "nope.toml")
