"""Dataset loaders on small generated files, including bad input."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from clipsearch.errors import DatasetError
from clipsearch.eval.datasets import (
    ClassificationDataset,
    RetrievalDataset,
    load_class_folders,
    load_karpathy,
    load_pairs,
    load_retrieval,
    load_webdataset,
)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def captions_of(ds: RetrievalDataset, media_id: str) -> list[str]:
    m = ds.media_ids.index(media_id)
    return [c for c, o in zip(ds.captions, ds.text_to_media, strict=True) if o == m]


# --- Karpathy JSON -------------------------------------------------------------------------
def karpathy(tmp_path: Path, images: list[dict]) -> Path:
    p = tmp_path / "dataset_flickr30k.json"
    p.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return p


def kimg(name: str, split: str, *caps: str, filepath: str | None = None) -> dict:
    d = {"filename": name, "split": split, "sentences": [{"raw": c, "tokens": []} for c in caps]}
    if filepath:
        d["filepath"] = filepath
    return d


def test_karpathy_test_split_groups_captions_and_resolves_filepath(tmp_path):
    root = tmp_path / "imgs"
    touch(root / "a.jpg")
    touch(root / "val2014" / "b.jpg")
    touch(root / "c.jpg")
    ann = karpathy(
        tmp_path,
        [
            kimg("a.jpg", "test", "a dog", "a brown dog"),
            kimg("b.jpg", "test", "a cat", filepath="val2014"),
            kimg("c.jpg", "train", "not in test"),
        ],
    )
    ds = load_karpathy(ann, root, split="test")
    assert ds.kind == "image"
    assert ds.media_ids == ["a.jpg", "val2014/b.jpg"]
    assert ds.media == [str((root / "a.jpg").resolve()), str((root / "val2014/b.jpg").resolve())]
    assert captions_of(ds, "a.jpg") == ["a dog", "a brown dog"]
    assert ds.text_to_media.tolist() == [0, 0, 1]
    assert ds.skipped.missing_media == []


def test_karpathy_missing_split_lists_the_available_ones(tmp_path):
    ann = karpathy(tmp_path, [kimg("a.jpg", "train", "x"), kimg("b.jpg", "val", "y")])
    with pytest.raises(
        DatasetError, match=r"split 'test' does not exist; available splits: train, val"
    ):
        load_karpathy(ann, tmp_path, split="test")


def test_karpathy_missing_files_and_empty_captions_are_counted_and_skipped(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "c.jpg")
    ann = karpathy(
        tmp_path,
        [
            kimg("a.jpg", "test", "one", "   ", "two"),
            kimg("gone.jpg", "test", "lost caption", "another"),
            kimg("c.jpg", "test", ""),  # its only caption is empty: the image is dropped
        ],
    )
    ds = load_karpathy(ann, tmp_path)
    assert ds.media_ids == ["a.jpg"]
    assert ds.captions == ["one", "two"]
    assert ds.skipped.missing_media == ["gone.jpg"]
    assert ds.skipped.empty_captions == 2
    assert ds.skipped.media_without_captions == 1
    assert ds.skipped.to_dict()["missing_media"] == 1


def test_karpathy_duplicate_filename_is_an_error(tmp_path):
    touch(tmp_path / "a.jpg")
    ann = karpathy(tmp_path, [kimg("a.jpg", "test", "x"), kimg("a.jpg", "test", "y")])
    with pytest.raises(DatasetError, match="listed twice"):
        load_karpathy(ann, tmp_path)


@pytest.mark.parametrize("content", ['{"annotations": []}', "[1, 2]", "{not json"])
def test_not_a_karpathy_file(tmp_path, content):
    p = tmp_path / "x.json"
    p.write_text(content)
    with pytest.raises(DatasetError, match=str(p.name)):
        load_retrieval(p, tmp_path)


def test_all_media_missing_says_so(tmp_path):
    ann = karpathy(tmp_path, [kimg("a.jpg", "test", "x")])
    with pytest.raises(DatasetError, match="1 media files missing"):
        load_karpathy(ann, tmp_path / "nowhere")


# --- pairs CSV / JSONL ---------------------------------------------------------------------
def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_pairs_csv_groups_by_media_and_skips_duplicates_and_missing(tmp_path):
    touch(tmp_path / "img" / "1.png")
    touch(tmp_path / "img" / "2.png")
    p = write_csv(
        tmp_path / "pairs.csv",
        ["image", "caption"],
        [
            ["img/1.png", "red"],
            ["img/2.png", "blue"],
            ["img/1.png", "crimson"],
            ["img/1.png", "red"],  # exact duplicate pair
            ["img/3.png", "missing"],
            ["img/2.png", ""],
        ],
    )
    ds = load_retrieval(p)  # media relative to the CSV's folder
    assert ds.media_ids == ["img/1.png", "img/2.png"]
    assert captions_of(ds, "img/1.png") == ["red", "crimson"]
    assert ds.text_to_media.tolist() == [0, 1, 0]
    assert ds.skipped.duplicate_pairs == 1
    assert ds.skipped.missing_media == ["img/3.png"]
    assert ds.skipped.empty_captions == 1


def test_pairs_named_columns_and_missing_column_error(tmp_path):
    touch(tmp_path / "m" / "x.jpg")
    p = write_csv(tmp_path / "p.csv", ["file_name", "alt"], [["x.jpg", "hello"]])
    with pytest.raises(DatasetError, match="cannot find the media column"):
        load_pairs(p, tmp_path / "m")
    with pytest.raises(DatasetError, match="no column 'nope'"):
        load_pairs(p, tmp_path / "m", media_column="nope", caption_column="alt")
    ds = load_pairs(p, tmp_path / "m", media_column="file_name", caption_column="alt")
    assert ds.captions == ["hello"]


def test_jsonl_pairs_accept_a_list_of_captions(tmp_path):
    touch(tmp_path / "a.jpg")
    p = tmp_path / "pairs.jsonl"
    p.write_text(
        json.dumps({"image": "a.jpg", "caption": ["one", "two"]})
        + "\n\n"
        + json.dumps({"image": "a.jpg", "caption": "three"})
        + "\n"
    )
    ds = load_retrieval(p)
    assert ds.captions == ["one", "two", "three"]
    assert ds.text_to_media.tolist() == [0, 0, 0]


def test_jsonl_bad_line_names_the_line(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"image": "a.jpg", "caption": "x"}\n{broken\n')
    with pytest.raises(DatasetError, match=r"pairs.jsonl:2"):
        load_retrieval(p)


def test_unknown_extension_and_missing_file(tmp_path):
    p = touch(tmp_path / "captions.txt")
    with pytest.raises(DatasetError, match="cannot tell the format"):
        load_retrieval(p)
    with pytest.raises(DatasetError, match="does not exist"):
        load_retrieval(tmp_path / "nope.csv")


# --- MSR-VTT --------------------------------------------------------------------------------
def test_msrvtt_csv_is_detected_and_resolves_video_files(tmp_path):
    vids = tmp_path / "videos"
    touch(vids / "video7010.mp4")
    touch(vids / "video7011.webm")
    p = write_csv(
        tmp_path / "MSRVTT_JSFUSION_test.csv",
        ["key", "vid_key", "video_id", "sentence"],
        [
            ["ret0", "msr7010", "video7010", "a man talks"],
            ["ret1", "msr7011", "video7011", "a cat jumps"],
            ["ret2", "msr7012", "video7012", "no such video"],
        ],
    )
    ds = load_retrieval(p, vids, kind="video")
    assert ds.kind == "video"
    assert ds.media_ids == ["video7010", "video7011"]
    assert ds.media[1].endswith("video7011.webm")
    assert ds.text_to_media.tolist() == [0, 1]
    assert ds.skipped.missing_media == ["video7012"]


def test_msrvtt_duplicate_key_is_an_error(tmp_path):
    touch(tmp_path / "video1.mp4")
    p = write_csv(
        tmp_path / "t.csv",
        ["key", "vid_key", "video_id", "sentence"],
        [["ret0", "m", "video1", "a"], ["ret0", "m", "video1", "b"]],
    )
    with pytest.raises(DatasetError, match="key 'ret0' appears twice"):
        load_retrieval(p, tmp_path, fmt="msrvtt")


def test_msrvtt_missing_columns(tmp_path):
    p = write_csv(tmp_path / "t.csv", ["key", "video"], [["ret0", "video1"]])
    with pytest.raises(DatasetError, match="needs the columns"):
        load_retrieval(p, tmp_path, fmt="msrvtt")


def test_without_media_reindexes_captions():
    ds = RetrievalDataset(
        name="x",
        kind="image",
        media=["a", "b", "c"],
        media_ids=["a", "b", "c"],
        captions=["a1", "b1", "a2", "c1"],
        text_to_media=np.array([0, 1, 0, 2]),
    )
    kept = ds.without_media([1])
    assert kept.media == ["a", "c"]
    assert kept.captions == ["a1", "a2", "c1"]
    assert kept.text_to_media.tolist() == [0, 0, 1]


# --- classification folders ------------------------------------------------------------------
def test_class_folders(tmp_path):
    touch(tmp_path / "golden_retriever" / "1.jpg")
    touch(tmp_path / "golden_retriever" / "sub" / "2.PNG")
    touch(tmp_path / "tabby_cat" / "3.jpeg")
    touch(tmp_path / "tabby_cat" / "notes.txt")
    (tmp_path / "empty_class").mkdir()
    ds = load_class_folders(tmp_path)
    assert ds.classnames == ["empty class", "golden retriever", "tabby cat"]
    assert ds.labels.tolist() == [1, 1, 2]
    assert [Path(m).name for m in ds.media] == ["1.jpg", "2.PNG", "3.jpeg"]
    assert ds.empty_classes == ["empty class"]


def test_class_folders_errors(tmp_path):
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_class_folders(tmp_path)
    (tmp_path / "a").mkdir()
    touch(tmp_path / "a" / "x.txt")
    with pytest.raises(DatasetError, match="hold no image files"):
        load_class_folders(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        load_class_folders(tmp_path / "nope")


# --- webdataset ------------------------------------------------------------------------------
def write_tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_classification(tmp_path):
    root = tmp_path / "wds_cifar"
    write_tar(root / "test" / "0.tar", {"s0000000.png": b"P0", "s0000000.cls": b"1"})
    write_tar(root / "test" / "1.tar", {"s0000001.jpg": b"J1", "s0000001.cls": b"0\n"})
    (root / "test" / "nshards.txt").write_text("2\n")
    (root / "classnames.txt").write_text("airplane\nautomobile\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n\na {c}.\n")
    ds = load_webdataset(root, split="test", extract_dir=tmp_path / "x")
    assert isinstance(ds, ClassificationDataset)
    assert ds.classnames == ["airplane", "automobile"]
    assert ds.templates == ["a photo of a {c}.", "a {c}."]
    assert ds.labels.tolist() == [1, 0]
    assert [Path(m).read_bytes() for m in ds.media] == [b"P0", b"J1"]
    # a second load reuses the extracted files
    again = load_webdataset(root, split="test", extract_dir=tmp_path / "x")
    assert again.media == ds.media


def test_webdataset_retrieval_splits_caption_lines(tmp_path):
    root = tmp_path / "wds_flickr"
    write_tar(
        root / "test" / "0.tar",
        {
            "s0.webp": b"W",
            "s0.txt": b"a dog\na brown dog\n",
            "s1.jpg": b"J",
            "s1.txt": b"a cat",
            "s2.txt": b"caption without image",
        },
    )
    (root / "test" / "nshards.txt").write_text("1")
    (root / "dataset_type.txt").write_text("retrieval\n")
    ds = load_retrieval(root, fmt="auto", extract_dir=tmp_path / "x")
    assert ds.captions == ["a dog", "a brown dog", "a cat"]
    assert ds.text_to_media.tolist() == [0, 0, 1]
    assert len(ds.skipped.missing_media) == 1


def test_webdataset_errors(tmp_path):
    root = tmp_path / "wds"
    write_tar(root / "train" / "0.tar", {"a.jpg": b"x", "a.cls": b"7"})
    (root / "classnames.txt").write_text("one\ntwo\n")
    with pytest.raises(DatasetError, match="split 'test' does not exist; available splits: train"):
        load_webdataset(root, split="test", extract_dir=tmp_path / "x")
    with pytest.raises(DatasetError, match="label 7"):
        load_webdataset(root, split="train", extract_dir=tmp_path / "x")
    (root / "train" / "nshards.txt").write_text("2")
    with pytest.raises(DatasetError, match="missing shards"):
        load_webdataset(root, split="train", extract_dir=tmp_path / "x")
    (root / "train" / "nshards.txt").write_text("1")
    (root / "train" / "0.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DatasetError, match="unreadable tar"):
        load_webdataset(root, split="train", extract_dir=tmp_path / "x")
