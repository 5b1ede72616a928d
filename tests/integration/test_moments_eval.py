"""Moment evaluation end to end: index real videos into a library, score picture queries."""

from __future__ import annotations

import pytest

from clipsearch.eval.moments import FRAME_WINDOW, WHOLE_VIDEO, evaluate_moments, load_moments
from clipsearch.library import Library
from tests.fakes import ColourEncoder, make_image

pytest.importorskip("av")

SCENES = {
    "a": [("red", 3.0), ("green", 5.0), ("blue", 4.0)],
    "b": [("yellow", 4.0), ("magenta", 3.0), ("cyan", 5.0)],
    "c": [("white", 5.0), ("black", 4.0), ("grey", 3.0)],
}


@pytest.fixture
def colour_set(tmp_path):
    from tests.videogen import COLOURS, make_video, scene_spans

    videos = tmp_path / "videos"
    videos.mkdir()
    rows = ["video\tstart\tend\timage"]
    for vid, scenes in SCENES.items():
        make_video(videos / f"{vid}.mp4", scenes, moving_shape=False)
        for name, start, end in scene_spans(scenes):
            colour = COLOURS[name]  # the video's own shade, so the picture is never exact
            query = make_image(tmp_path / "queries" / f"{vid}-{name}.png", colour, (96, 72))
            rows.append(f"{vid}\t{start}\t{end}\t{query.relative_to(tmp_path)}")
    (tmp_path / "queries.tsv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_picture_queries_find_their_scene_and_beat_the_baselines(colour_set):
    ds = load_moments(colour_set / "queries.tsv", colour_set / "videos")
    assert len(ds.queries) == 9
    with Library(colour_set / "lib", encoder=ColourEncoder()) as lib:
        report = evaluate_moments(lib, ds, poolings=["peak", "mean"])
    ours = report.run("moments", "given video").metrics
    assert ours.recall[0.7] == 100.0 and ours.miou > 0.85
    whole = report.run(WHOLE_VIDEO, "given video").metrics
    assert whole.recall[0.5] == 0.0 and whole.miou < 0.45  # scenes are 25–42 % of a video
    window = report.run(FRAME_WINDOW, "given video").metrics
    assert window.miou < ours.miou
    corpus = report.run("peak", "corpus").metrics
    assert corpus.video_r1 == 100.0 and corpus.recall[0.7] == 100.0
    assert report.n_videos == 3 and report.window_s == 4.0
    d = report.to_dict()
    assert {(r["label"], r["setting"]) for r in d["runs"]} >= {
        ("peak", "corpus"),
        ("mean", "corpus"),
        ("moments", "given video"),
        (WHOLE_VIDEO, "corpus"),
        (FRAME_WINDOW, "given video"),
    }


def test_a_generated_moment_set_evaluates(tmp_path):
    from tests.momentgen import make_moment_set

    s = make_moment_set(
        tmp_path / "set",
        videos=2,
        min_scenes=3,
        max_scenes=3,
        min_scene_s=3.0,
        max_scene_s=6.0,
        fps=5,
        size=(160, 120),
    )
    assert [len(v.scenes) for v in s.videos] == [3, 3]
    assert all(q.end - q.start >= 3.0 for q in s.queries)
    ds = load_moments(s.tsv, s.root / "videos")
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        report = evaluate_moments(lib, ds)
    assert report.n_queries == 6
    ours = report.run("moments", "given video").metrics.miou
    assert ours > report.run(WHOLE_VIDEO, "given video").metrics.miou


def test_cli_eval_moments_json_report_and_a_reused_library(
    colour_set, tmp_path, monkeypatch, run_cli
):
    import json

    import clipsearch.library

    opened = []

    def colour_library(path, **kw):
        opened.append((path, kw.get("precision")))
        return Library(path, encoder=ColourEncoder())

    monkeypatch.setattr(clipsearch.library, "Library", colour_library)
    args = [
        "eval",
        "moments",
        str(colour_set / "queries.tsv"),
        "--videos",
        str(colour_set / "videos"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--pooling",
        "peak,mean",
    ]
    r = run_cli(*args, "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    rows = {(run["label"], run["setting"]): run for run in data["runs"]}
    assert rows[("moments", "given video")]["R1@0.7"] == 100.0
    assert rows[("peak", "corpus")]["video_R1"] == 100.0
    assert rows[("mean", "corpus")]["video_R1"] is not None
    assert rows[(WHOLE_VIDEO, "given video")]["R1@0.5"] == 0.0
    r = run_cli(*args, "--quiet", "--report", str(tmp_path / "rep"))
    assert r.exit_code == 0, r.stderr
    assert "right video first" in r.stdout and "best-frame window" in r.stdout
    assert "| given video | moments |" in (tmp_path / "rep" / "report.md").read_text()
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["n_queries"] == 9
    # one library per videos folder under the cache, reused; fp32 as every evaluation
    assert opened[0] == opened[1]
    assert str(opened[0][0]).startswith(str(tmp_path / "cache")) and opened[0][1] == "fp32"


@pytest.mark.parametrize(
    "extra, code, message",
    [
        ([], 1, "expected 'VIDEO START END##sentence'"),
        (["--format", "csv"], 2, "Invalid value for '--format'"),
        (["--pooling", "peak,median"], 2, "'median' is not one of 'peak', 'mean'"),
    ],
)
def test_cli_eval_moments_bad_input_is_one_clear_line(
    colour_set, tmp_path, run_cli, extra, code, message
):
    bad = tmp_path / "sta.txt"
    bad.write_text("a 1 2 no separator\n")
    r = run_cli("eval", "moments", bad, "--videos", colour_set / "videos", *extra)
    assert r.exit_code == code and r.stdout == ""
    assert r.stderr.startswith("error:") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
