"""Training data: every source format, skip counting, the split, batching rules."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from clipsearch.errors import DatasetError
from clipsearch.train.batches import PairLoader, count_truncated
from clipsearch.train.data import (
    TarMember,
    read_pairs_file,
    read_shards,
    read_sidecar_folder,
    read_video_pairs,
    split_pairs,
)
from tests.fakes import make_image

COLOURS = ["red", "green", "blue", "yellow", "cyan", "magenta", "orange", "purple"]


def _write_csv(path: Path, rows: list[tuple[str, str]], header=("image", "caption")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def pairs_dir(tmp_path: Path) -> Path:
    for c in COLOURS:
        make_image(tmp_path / "img" / f"{c}.png", c, size=(40, 32))
    return tmp_path


def test_pairs_csv_counts_missing_files_and_groups_captions(pairs_dir):
    rows = [(f"img/{c}.png", f"a {c} picture") for c in COLOURS]
    rows += [("img/red.png", "something red"), ("img/gone.png", "lost"), ("img/gone.png", "x")]
    rows += [("img/ghost.jpg", "never there"), ("img/blue.png", "  ")]
    data = read_pairs_file(_write_csv(pairs_dir / "pairs.csv", rows))
    assert data.kind == "image" and data.n_media == len(COLOURS)
    assert data.skipped.missing_media == 2  # gone.png and ghost.jpg, each counted once
    assert "img/gone.png" in data.skipped.missing_examples
    assert data.skipped.empty_captions == 1
    red = data.media.index(str((pairs_dir / "img" / "red.png").resolve()))
    assert sorted(np.asarray(data.captions)[data.caption_media == red]) == [
        "a red picture",
        "something red",
    ]


def test_pairs_file_with_named_columns_and_jsonl(pairs_dir):
    path = pairs_dir / "p.jsonl"
    path.write_text(
        "\n".join(json.dumps({"file_name": f"img/{c}.png", "alt": f"{c}"}) for c in COLOURS)
    )
    data = read_pairs_file(path, media_column="file_name", caption_column="alt")
    assert data.captions == COLOURS
    with pytest.raises(DatasetError, match="no column 'caption_text'"):
        read_pairs_file(path, media_column="file_name", caption_column="caption_text")


def test_all_media_missing_is_a_clear_error(tmp_path):
    path = _write_csv(tmp_path / "p.csv", [("nope.png", "a cat")])
    with pytest.raises(DatasetError, match="1 media files missing"):
        read_pairs_file(path)


def test_sidecar_folder_reads_one_caption_per_line(tmp_path):
    make_image(tmp_path / "a" / "red.jpg", "red")
    (tmp_path / "a" / "red.txt").write_text("a red square\n\nsomething red\n")
    make_image(tmp_path / "blue.png", "blue")
    (tmp_path / "blue.txt").write_text("blue")
    make_image(tmp_path / "nocaption.png", "green")
    (tmp_path / "notes.txt").write_text("not a sidecar of anything")
    data = read_sidecar_folder(tmp_path)
    assert data.n_media == 2
    assert sorted(data.captions) == ["a red square", "blue", "something red"]
    assert data.skipped.media_without_captions == 1
    with pytest.raises(DatasetError, match="not a folder"):
        read_sidecar_folder(tmp_path / "missing")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_read_by_seeking_into_the_tar(tmp_path):
    images = {}
    for i, c in enumerate(COLOURS[:3]):
        p = make_image(tmp_path / "src" / f"{c}.jpg", c)
        images[f"{i:05d}"] = p.read_bytes()
    shard = tmp_path / "shard-0.tar"
    with tarfile.open(shard, "w") as tar:
        for key, data in images.items():
            _add(tar, f"{key}.jpg", data)
            _add(tar, f"{key}.txt", f"caption {key}".encode())
        _add(tar, "00009.txt", b"caption without image")
        _add(tar, "00010.jpg", images["00000"])  # image without caption
    data = read_shards([shard])
    assert data.n_media == 3
    assert data.captions == ["caption 00000", "caption 00001", "caption 00002"]
    assert data.skipped.missing_media == 1
    assert data.skipped.media_without_captions == 1
    member = data.media[1]
    assert isinstance(member, TarMember)
    assert member.read() == images["00001"]
    with pytest.raises(DatasetError, match="does not exist"):
        read_shards([tmp_path / "nope.tar"])
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 40)
    with pytest.raises(DatasetError, match="unreadable tar shard"):
        read_shards([tmp_path / "bad.tar"])


def test_video_pairs_from_msrvtt_style_json_keep_the_split(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for v in ("video0", "video1", "video2"):
        (videos / f"{v}.mp4").write_bytes(b"\0" * 10)  # only resolved here, not decoded
    ann = {
        "videos": [
            {"video_id": "video0", "split": "train"},
            {"video_id": "video1", "split": "train"},
            {"video_id": "video2", "split": "validate"},
            {"video_id": "video9", "split": "train"},
        ],
        "sentences": [
            {"video_id": "video0", "caption": "a cat"},
            {"video_id": "video0", "caption": "a kitten"},
            {"video_id": "video1", "caption": "a dog"},
            {"video_id": "video2", "caption": "held out"},
            {"video_id": "video9", "caption": "missing file"},
        ],
    }
    (tmp_path / "data.json").write_text(json.dumps(ann))
    data = read_video_pairs(videos, tmp_path / "data.json")
    assert data.kind == "video" and data.n_media == 2
    assert sorted(data.captions) == ["a cat", "a dog", "a kitten"]
    assert data.skipped.missing_media == 1
    with pytest.raises(DatasetError, match="split 'test' does not exist"):
        read_video_pairs(videos, tmp_path / "data.json", split="test")


def test_split_is_by_media_deterministic_and_seeded(pairs_dir):
    rows = [(f"img/{c}.png", f"{c} {k}") for c in COLOURS for k in range(3)]
    data = read_pairs_file(_write_csv(pairs_dir / "p.csv", rows))
    train, val = split_pairs(data, val_fraction=0.25, seed=0)
    assert val is not None and val.n_media == 2 and train.n_media == 6
    assert not set(train.media) & set(val.media)
    assert len(train.captions) == 18 and len(val.captions) == 6  # captions follow their media
    for part in (train, val):
        for cap, m in zip(part.captions, part.caption_media, strict=True):
            assert Path(str(part.media[m])).stem == cap.split()[0]
    again = split_pairs(data, val_fraction=0.25, seed=0)[1]
    assert again.media == val.media
    others = {tuple(split_pairs(data, val_fraction=0.25, seed=s)[1].media) for s in range(6)}
    assert len(others) > 1
    assert split_pairs(data, val_fraction=0.0, seed=0) == (data, None)
    with pytest.raises(DatasetError, match="too few to train"):
        split_pairs(data.subset([0, 1, 2]), val_fraction=0.5, seed=0)


class _Tokenizer:
    """Stand-in for open_clip's tokenizer: one token per word, 0 = padding."""

    def __call__(self, texts, context_length: int = 6):
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [49406] + [1 + len(w) for w in t.split()] + [49407]
            ids = ids[:context_length]
            ids[-1] = 49407
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def test_count_truncated_with_the_real_tokenizer():
    from open_clip import get_tokenizer

    tokenizer = get_tokenizer("ViT-B-32")  # SimpleTokenizer, context 77, no download
    short = "a red circle"
    exact = " ".join(["red"] * 75)  # 75 words + start + end = 77 tokens: fits
    long = " ".join(["red"] * 76)
    assert count_truncated(tokenizer, [short, exact, long, long], 77) == 2
    assert count_truncated(_Tokenizer(), ["a b c d e", "a b c d"], 6) == 1


def test_loader_skips_undecodable_media_once_and_keeps_one_caption_per_media(pairs_dir):
    (pairs_dir / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rows = [(f"img/{c}.png", f"{c} {k}") for c in COLOURS for k in range(2)]
    rows.append(("img/broken.png", "broken"))
    data = read_pairs_file(_write_csv(pairs_dir / "p.csv", rows))

    def preprocess(im):
        return np.asarray(im.resize((8, 8)), dtype=np.float32).transpose(2, 0, 1) / 255

    loader = PairLoader(
        data,
        preprocess=preprocess,
        tokenizer=_Tokenizer(),
        image_size=8,
        batch_size=3,  # 9 media: 3 full batches; the broken one leaves its batch with 2
        seed=3,
        workers=2,
    )
    plan = loader.epoch_plan(0)
    assert [m.tolist() for m, _ in plan] == [m.tolist() for m, _ in loader.epoch_plan(0)]
    assert [m.tolist() for m, _ in plan] != [m.tolist() for m, _ in loader.epoch_plan(1)]
    batches = list(loader.epoch_batches(0))
    seen = np.concatenate([b.media for b in batches])
    assert sorted(seen.tolist()) == sorted(set(range(data.n_media)) - set(loader.failed))
    assert len(loader.failed) == 1 and "broken.png" in next(iter(loader.failed.values()))
    for b in batches:
        assert b.pixels.shape == (len(b), 3, 8, 8)
        assert len(set(b.media.tolist())) == len(b)  # no media twice in a batch
    # The failure is remembered: the next epoch does not try it again or count it twice.
    list(loader.epoch_batches(1))
    assert len(loader.failed) == 1


def test_augmentation_is_reproducible_and_changes_pixels(pairs_dir):
    rows = [(f"img/{c}.png", c) for c in COLOURS]
    data = read_pairs_file(_write_csv(pairs_dir / "p.csv", rows))

    def preprocess(im):
        return np.asarray(im.resize((16, 16)), dtype=np.float32).transpose(2, 0, 1)

    def pixels(augment: bool, epoch: int) -> torch.Tensor:
        loader = PairLoader(
            data,
            preprocess=preprocess,
            tokenizer=_Tokenizer(),
            image_size=16,
            batch_size=8,
            seed=0,
            augment=augment,
        )
        return next(iter(loader.epoch_batches(epoch))).pixels

    assert torch.equal(pixels(True, 0), pixels(True, 0))
    assert not torch.equal(pixels(True, 0), pixels(False, 0))
