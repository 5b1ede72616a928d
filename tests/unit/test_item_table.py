"""Item tables (how encoded files travel from Ray workers and through Parquet shards):
a write read back is the write, capture time included; a shard written before capture
times travelled with it still reads (its items are dated on the next index run)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.media.capture_time import CaptureTime
from clipsearch.store import item_table
from clipsearch.store.records import ItemWrite

pq = pytest.importorskip("pyarrow.parquet")


def writes() -> list[ItemWrite]:
    vec = np.eye(4, dtype=np.float32)[:1]
    return [
        ItemWrite(
            path="/m/a.jpg",
            root_id=1,
            kind="image",
            size=10,
            mtime_ns=5,
            content_hash="h",
            status="ok",
            vectors=vec,
            taken=CaptureTime(1_500_000_000 * 10**9, 120, "exif"),
        ),
        ItemWrite(
            path="/m/b.jpg",
            root_id=1,
            kind="image",
            size=11,
            mtime_ns=6,
            content_hash="g",
            status="ok",
            vectors=vec,
            taken=CaptureTime(6, None, "mtime"),
        ),
        ItemWrite(
            path="/m/c.jpg",
            root_id=1,
            kind="image",
            size=1,
            mtime_ns=7,
            content_hash=None,
            status="failed",
            error="empty file",
        ),
    ]


def test_capture_times_survive_a_shard(tmp_path):
    path = tmp_path / "part-0.parquet"
    pq.write_table(item_table.writes_to_table(writes()), path)
    (back,) = list(item_table.read_shard(path))
    assert [w.taken for w in back] == [w.taken for w in writes()]
    assert [w.path for w in back] == ["/m/a.jpg", "/m/b.jpg", "/m/c.jpg"]


def test_a_shard_without_capture_times_still_reads(tmp_path):
    table = item_table.writes_to_table(writes()).drop_columns(list(item_table.TAKEN_COLUMNS))
    path = tmp_path / "old.parquet"
    pq.write_table(table, path)
    (back,) = list(item_table.read_shard(path))
    assert [w.path for w in back] == ["/m/a.jpg", "/m/b.jpg", "/m/c.jpg"]
    assert all(w.taken is None for w in back)
    np.testing.assert_array_equal(back[0].vectors, writes()[0].vectors.astype(np.float16))


def a_video(cuts) -> ItemWrite:
    return ItemWrite(
        path="/m/v.mp4",
        root_id=1,
        kind="video",
        size=100,
        mtime_ns=8,
        content_hash="v",
        status="ok",
        vectors=np.eye(4, dtype=np.float32)[:3],
        timestamps=np.array([0.0, 1.0, np.nan]),
        cuts=cuts,
    )


def test_a_videos_shot_cuts_survive_a_shard(tmp_path):
    path = tmp_path / "part-0.parquet"
    known = a_video(np.array([0.5, 1.5]))
    unknown, none_found = a_video(None), a_video(np.array([], dtype=np.float64))
    pq.write_table(item_table.writes_to_table([known, unknown, none_found]), path)
    (back,) = list(item_table.read_shard(path))
    np.testing.assert_array_equal(back[0].cuts, [0.5, 1.5])
    assert back[1].cuts is None  # not known: moments fall back to the frame scores alone
    assert back[2].cuts is not None and len(back[2].cuts) == 0  # known: one shot
    np.testing.assert_array_equal(back[0].timestamps, [0.0, 1.0, np.nan])


def test_a_shard_written_without_shot_cuts_still_reads(tmp_path):
    table = item_table.writes_to_table([a_video(np.array([0.5]))]).drop_columns(["cuts"])
    path = tmp_path / "old.parquet"
    pq.write_table(table, path)
    (back,) = list(item_table.read_shard(path))
    assert back[0].path == "/m/v.mp4" and back[0].cuts is None


def test_text_read_in_pictures_survives_a_shard(tmp_path):
    """What OCR read travels with the vectors (an image, a video's frames, a picture with
    no text, a failed reading), and an indexed item read only for its text travels as
    its own row."""
    from clipsearch.store.records import TextRead, TextWrite

    image, video, empty, failed = writes()[0], a_video(None), writes()[1], a_video(None)
    image.text = TextRead("ocr", "rapidocr-v4", rows=((None, "PIZZA\nopen late"),))
    video.text = TextRead("ocr", "rapidocr-v4", frames=True, rows=((0.0, "EXIT"), (1.5, "ÉTÉ")))
    empty.text = TextRead("ocr", "rapidocr-v4")
    failed.text = None
    only = TextWrite(42, "/m/old.jpg", "image", TextRead("ocr", "rapidocr-v4", rows=((None, "X"),)))
    path = tmp_path / "part-0.parquet"
    pq.write_table(item_table.writes_to_table([image, video, empty, failed, only]), path)
    (back,) = list(item_table.read_shard(path))
    assert [w.text for w in back[:4]] == [image.text, video.text, empty.text, None]
    assert back[4] == only
    assert all(not isinstance(w, TextWrite) for w in back[:4])


def test_a_shard_written_without_text_columns_still_reads(tmp_path):
    table = item_table.writes_to_table(writes()).drop_columns(
        [*item_table.TEXT_COLUMNS, "item_id", *item_table.ENCODER_COLUMNS]
    )
    path = tmp_path / "old.parquet"
    pq.write_table(table, path)
    encoders: dict = {}
    (back,) = list(item_table.read_shard(path, encoders=encoders))
    assert [w.path for w in back] == ["/m/a.jpg", "/m/b.jpg", "/m/c.jpg"]
    assert all(w.text is None for w in back) and encoders == {}


def test_rows_say_which_image_encoder_encoded_them(tmp_path):
    table = item_table.writes_to_table(
        writes(), image_encoder="torch fp32", image_encoder_note="openvino int8 not reachable"
    )
    assert item_table.image_encoders(table) == {"torch fp32": "openvino int8 not reachable"}
    # A failed file was encoded by nothing.
    assert table.column("image_encoder").to_pylist() == ["torch fp32", "torch fp32", None]
    path = tmp_path / "part-0.parquet"
    pq.write_table(table, path)
    encoders: dict = {}
    list(item_table.read_shard(path, encoders=encoders))
    assert encoders == {"torch fp32": "openvino int8 not reachable"}
