"""Zero-shot classification: prompt-ensemble arithmetic, probabilities, labels, thresholds,
auto thresholds, per-moment video labels, and moderation policy files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from clipsearch.errors import NotFoundError, UsageError
from clipsearch.search import classify as C
from clipsearch.search.moderation import ModerationPolicy, PolicyError
from tests.fakes import TextTableEncoder

COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan"]


def test_prompt_ensemble_arithmetic_by_hand():
    # class "cat": prompts -> (2,0,0) and (0,3,0); normalised (1,0,0), (0,1,0);
    # mean (0.5, 0.5, 0); normalised (1/√2, 1/√2, 0). class "dog": (0,0,5), (0,4,3):
    # normalised (0,0,1), (0,0.8,0.6); mean (0, 0.4, 0.8); normalised (0, 1/√5, 2/√5).
    enc = TextTableEncoder(
        {
            "a photo of a cat.": [2, 0, 0],
            "a drawing of a cat.": [0, 3, 0],
            "a photo of a dog.": [0, 0, 5],
            "a drawing of a dog.": [0, 4, 3],
        },
        logit_scale=10.0,
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


# --- indexed items, tags, moderation: a catalog and the fake encoder, no Library ---------------
ITEMS = {
    "/p/red_a.jpg": "red",
    "/p/red_b.jpg": "red",
    "/p/red_c.png": "red",
    "/p/blue_a.jpg": "blue",
    "/p/blue_b.jpg": "blue",
    "/p/blue_c.png": "blue",
    "/p/green_a.jpg": "green",
    "/p/green_b.png": "green",
    "/p/yellow_a.jpg": "yellow",
}
CLIP = "/p/clip.mp4"  # 2 s red, then 2 s blue (frames 0.5 s apart)


@pytest.fixture
def catalog(tmp_path, fake_encoder):
    from tests.fakes import colour_image, write_catalog

    items: dict = {p: colour_image(c, seed=i) for i, (p, c) in enumerate(ITEMS.items())}
    items[CLIP] = [colour_image(c, seed=20 + i) for i, c in enumerate(["red"] * 4 + ["blue"] * 4)]
    cat = write_catalog(tmp_path / "lib", fake_encoder, items)
    yield cat
    cat.close()


def _tagged(catalog, label: str) -> set[str]:
    tags = catalog.tags(range(1, 100))
    return {catalog.item(i).path for i, t in tags.items() if label in t}


def test_items_are_classified_from_stored_vectors_without_decoding(catalog, fake_encoder):
    clf = C.build_classifier(fake_encoder, "red,blue,green,yellow", templates="simple")
    before = fake_encoder.images_encoded
    results = {r.path: r for r in C.classify_items(catalog, clf, top_k=2, per_moment=True)}
    assert fake_encoder.images_encoded == before
    for path, colour in ITEMS.items():
        assert results[path].prediction.labels[0] == colour
    clip = results[CLIP]
    assert set(clip.prediction.labels) == {"red", "blue"}
    assert [m.label for m in clip.moments] == ["red", "blue"]
    assert clip.moments[0].end == pytest.approx(2.0, abs=0.5)
    only_green = C.classify_items(catalog, clf, where=["path:/p/green*"])
    assert sorted(r.path for r in only_green) == ["/p/green_a.jpg", "/p/green_b.png"]


def test_auto_tags_split_each_label_by_the_items_own_scores(catalog, fake_encoder):
    clf = C.build_classifier(fake_encoder, "red,blue,purple")  # no item has any purple
    report = C.tag_items(catalog, clf, threshold="auto")
    assert report.thresholds["red"] is not None and report.thresholds["blue"] is not None
    red = _tagged(catalog, "red")
    assert {p for p, c in ITEMS.items() if c == "red"} <= red
    assert not red & {p for p, c in ITEMS.items() if c != "red"}
    assert report.counts["red"] == len(red)
    # purple matches nothing: its scores are one group, so auto tags no item and says so
    assert report.thresholds["purple"] is None and report.counts["purple"] == 0
    assert any("'purple'" in n for n in report.notes)


def test_retagging_one_label_keeps_the_others_and_dry_run_stores_nothing(catalog, fake_encoder):
    C.tag_items(catalog, C.build_classifier(fake_encoder, "red"), threshold=0.5)
    C.tag_items(catalog, C.build_classifier(fake_encoder, "blue"), threshold=0.5)
    assert _tagged(catalog, "red") and _tagged(catalog, "blue")
    report = C.tag_items(catalog, C.build_classifier(fake_encoder, "red"), threshold=1.0)
    assert report.counts["red"] == 0
    assert not _tagged(catalog, "red") and _tagged(catalog, "blue")
    dry = C.tag_items(catalog, C.build_classifier(fake_encoder, "red"), threshold=0.5, dry_run=True)
    assert dry.counts["red"] >= 3 and not _tagged(catalog, "red")


def test_auto_needs_enough_items(tmp_path, fake_encoder):
    from tests.fakes import colour_image, write_catalog

    small = write_catalog(tmp_path / "small", fake_encoder, {"/p/one.jpg": colour_image("red")})
    with pytest.raises(UsageError, match="at least 8 items"):
        C.tag_items(small, C.build_classifier(fake_encoder, "red"), threshold="auto")
    small.close()


def test_moderation_flags_items_with_reason_score_and_video_time(catalog, fake_encoder, tmp_path):
    from clipsearch.search.moderation import moderate

    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        '[labels]\n"red" = { threshold = 0.75, reason = "too red" }\n"yellow" = 0.75\n'
    )
    policy = ModerationPolicy.load(policy_file)
    flags, checked = moderate(catalog, fake_encoder, policy, tag=True)
    assert checked == len(ITEMS) + 1
    by_item: dict[str, list] = {}
    for f in flags:
        by_item.setdefault(f.path, []).append(f)
    reds = {p for p, c in ITEMS.items() if c == "red"}
    assert {p for p, fs in by_item.items() if fs[0].label == "red"} == reds | {CLIP}
    assert [f.reason for f in by_item["/p/yellow_a.jpg"]] == ["yellow"]
    (video_flag,) = by_item[CLIP]
    assert video_flag.reason == "too red" and 0.0 <= video_flag.t < 2.0  # its best (red) frame
    assert all(f.score >= f.threshold for f in flags)
    assert [f.score for f in flags] == sorted((f.score for f in flags), reverse=True)
    assert _tagged(catalog, "red") == reds | {CLIP}
    # pooled video vectors are half red: below the threshold, so not flagged
    pooled = ModerationPolicy(policy.rules, video="pooled")
    assert CLIP not in {f.path for f in moderate(catalog, fake_encoder, pooled)[0]}
