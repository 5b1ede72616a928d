"""Moment-retrieval datasets and metrics (clipsearch.eval.moments)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipsearch.errors import DatasetError, UsageError
from clipsearch.eval.moments import (
    best_frame_window,
    load_moments,
    moment_metrics,
    temporal_iou,
)


@pytest.fixture
def videos(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    for name in ("3MSZA.mp4", "AO8RW.mkv", "NUsG9BgSes0_210.0_360.0.mp4", "v00.mp4"):
        (d / name).write_bytes(b"x")
    return d


def test_charades_sta_lines(tmp_path, videos):
    ann = tmp_path / "charades_sta_test.txt"
    ann.write_text(
        "3MSZA 24.3 30.4##person turned a light on.\n"
        "\n"
        "AO8RW 0.0 6.9##a person is putting a book on a shelf.\n"
        "ZZZZZ 1 2##a video we do not have.\n"
        "3MSZA 9.0 9.0##an empty window.\n"
    )
    ds = load_moments(ann, videos)
    assert [(q.video, q.windows, q.text) for q in ds.queries] == [
        ("3MSZA", ((24.3, 30.4),), "person turned a light on."),
        ("AO8RW", ((0.0, 6.9),), "a person is putting a book on a shelf."),
    ]
    assert ds.videos["AO8RW"].endswith("AO8RW.mkv")
    assert ds.skipped.missing_videos == ["ZZZZZ"] and ds.skipped.bad_windows == 1


def test_charades_sta_malformed_line_names_the_line(tmp_path, videos):
    ann = tmp_path / "sta.txt"
    ann.write_text("3MSZA 24.3 30.4##ok\n3MSZA 24.3 30.4 no separator\n")
    with pytest.raises(DatasetError, match=r"sta.txt:2: expected 'VIDEO START END##sentence'"):
        load_moments(ann, videos)


def test_qvhighlights_jsonl_keeps_every_window(tmp_path, videos):
    ann = tmp_path / "highlight_val_release.jsonl"
    rows = [
        {
            "qid": 2579,
            "query": "A girl and her mother cooked while talking with each other on facetime.",
            "duration": 150,
            "vid": "NUsG9BgSes0_210.0_360.0",
            "relevant_windows": [[0, 70], [80, 90]],
        }
    ]
    ann.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_moments(ann, videos)
    (q,) = ds.queries
    assert q.qid == "2579" and q.windows == ((0.0, 70.0), (80.0, 90.0))
    assert q.text.startswith("A girl") and q.image is None


def test_qvhighlights_test_split_without_windows_is_explained(tmp_path, videos):
    ann = tmp_path / "highlight_test_release.jsonl"
    ann.write_text(json.dumps({"qid": 1, "query": "q", "vid": "v00", "duration": 150}) + "\n")
    with pytest.raises(DatasetError, match="hides them in its test split"):
        load_moments(ann, videos)


def test_picture_tsv_with_and_without_header(tmp_path, videos):
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "a.jpg").write_bytes(b"x")
    for text in (
        "video\tstart\tend\timage\nv00\t3.0\t7.5\tqueries/a.jpg\nv00\t1\t2\tqueries/missing.jpg\n",
        "v00\t3.0\t7.5\tqueries/a.jpg\nv00\t1\t2\tqueries/missing.jpg\n",
    ):
        ann = tmp_path / "queries.tsv"
        ann.write_text(text)
        ds = load_moments(ann, videos)
        (q,) = ds.queries
        assert q.windows == ((3.0, 7.5),) and q.image == str((tmp_path / "queries/a.jpg").resolve())
        assert ds.skipped.missing_images == ["queries/missing.jpg"]


def test_no_usable_query_and_bad_format_are_clear_errors(tmp_path, videos):
    ann = tmp_path / "sta.txt"
    ann.write_text("NOPE 1 2##nothing here\n")
    with pytest.raises(DatasetError, match="no video file for 'NOPE'"):
        load_moments(ann, videos)
    with pytest.raises(UsageError, match="unknown moment format"):
        load_moments(ann, videos, fmt="csv")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="not found"):
        load_moments(tmp_path / "nothing.txt", videos)


def test_temporal_iou_takes_the_best_window():
    assert temporal_iou((2.0, 4.0), [(2.0, 4.0)]) == 1.0
    assert temporal_iou((0.0, 4.0), [(2.0, 6.0)]) == pytest.approx(2 / 6)
    assert temporal_iou((0.0, 1.0), [(2.0, 3.0)]) == 0.0
    assert temporal_iou((10.0, 20.0), [(0.0, 5.0), (12.0, 20.0)]) == pytest.approx(0.8)


def test_metrics_count_thresholds_inclusively():
    m = moment_metrics([0.3, 0.5, 0.69, 0.7, 0.0], video_hits=[True, True, True, True, False])
    assert m.recall == {0.3: 80.0, 0.5: 60.0, 0.7: 20.0}
    assert m.miou == pytest.approx(0.438) and m.video_r1 == 80.0
    assert m.to_dict()["R1@0.5"] == 60.0


def test_best_frame_window_is_centred_and_kept_inside():
    t = np.arange(10) + 0.5
    s = np.zeros(10)
    s[5] = 1.0
    assert best_frame_window(t, s, duration=10.0, width=4.0) == (3.5, 7.5)
    s = np.zeros(10)
    s[0] = 1.0
    assert best_frame_window(t, s, duration=10.0, width=4.0) == (0.0, 4.0)
    assert best_frame_window(t, s, duration=3.0, width=4.0) == (0.0, 3.0)
