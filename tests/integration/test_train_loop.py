"""The training loop end to end: real data files, tiny open_clip models, real checkpoints."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clipsearch.errors import TrainingError
from clipsearch.eval.synthetic import make_image_set
from clipsearch.train import TrainConfig, run
from clipsearch.train import loop as train_loop
from clipsearch.train.events import CheckpointSaved, DataReady, EvalDone, StepDone
from tests.fakes import register_tiny_models


@pytest.fixture(autouse=True)
def _tiny_setup():
    register_tiny_models()
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and the machine is shared
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """64 synthetic images (coloured shapes, unique captions), 32 px: images.csv + images/."""
    root = tmp_path_factory.mktemp("shapes")
    make_image_set(root, n=64, seed=0, size=32)
    return root / "images.csv"


def _config(tmp_path: Path, pairs: Path, **kw) -> TrainConfig:
    args = dict(
        out=tmp_path / "run",
        pairs=pairs,
        from_scratch="tiny-vit",
        base=None,
        epochs=2,
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        val_fraction=0.25,
        workers=1,
        seed=0,
    )
    args.update(kw)
    return TrainConfig(**args)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_training_from_scratch_on_synthetic_shapes_beats_chance(tmp_path):
    """400 coloured-shape images, 80 held out. Chance text→image R@1 = 1/80 = 1.25 %.

    Measured on the development machine: R@1 1.25 % before (random weights) and 45 % after
    10 epochs (~15 s); R@5 100 %. The test asks for at least 10× chance (12.5 %).
    """
    make_image_set(tmp_path / "data", n=400, seed=0, size=32)
    events = []
    report = run(
        _config(
            tmp_path,
            tmp_path / "data" / "images.csv",
            epochs=10,
            batch_size=32,
            lr=2e-3,
            warmup_steps=10,
            val_fraction=0.2,
            weight_decay=0.1,
        ),
        on_event=events.append,
    )
    n_val = report.data["val_media"]
    chance = 100.0 / n_val
    assert n_val == 80
    before = report.before["text_to_media"]["R@1"]
    after = report.after["text_to_media"]["R@1"]
    assert before < 5 * chance  # random weights: near chance
    assert after >= 10 * chance, f"R@1 {after:.1f} % vs chance {chance:.2f} %"
    assert report.after["media_to_text"]["R@1"] >= 10 * chance
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    steps = [e for e in events if isinstance(e, StepDone)]
    assert len(steps) == 10 * 10 and all(e.pairs_per_s > 0 for e in steps)
    assert [e.epoch for e in events if isinstance(e, EvalDone)] == list(range(11))


def test_resume_reproduces_the_straight_run(tmp_path, shapes):
    """2 epochs straight == 1 epoch, stop, --resume 1 epoch (with augmentation and
    gradient caching on, so the data order, crops and micro-batching are all replayed)."""
    kw = dict(augment=True, micro_batch=3)
    straight = run(_config(tmp_path / "a", shapes, **kw))

    class Stop(Exception):
        pass

    def stop_after_first_epoch(event):
        if isinstance(event, CheckpointSaved) and event.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        run(_config(tmp_path / "b", shapes, **kw), on_event=stop_after_first_epoch)
    events = []
    resumed = run(_config(tmp_path / "b", shapes, resume=True, **kw), on_event=events.append)
    ready = next(e for e in events if isinstance(e, DataReady))
    assert ready.start_epoch == 1
    assert {e.epoch for e in events if isinstance(e, StepDone)} == {2}

    a = load_file(str(tmp_path / "a" / "run" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)
    assert straight.history[-1]["loss"] == pytest.approx(resumed.history[-1]["loss"], rel=1e-6)
    for direction, metrics in straight.after.items():
        assert resumed.after[direction] == pytest.approx(metrics)
    assert resumed.before == straight.before
    sa = torch.load(tmp_path / "a" / "run" / "train_state.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "run" / "train_state.pt", weights_only=True)
    assert sa["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys()
    for k, st in sa["optimizer"]["state"].items():
        torch.testing.assert_close(st["exp_avg"], sb["optimizer"]["state"][k]["exp_avg"])


def test_nan_loss_stops_with_the_last_good_checkpoint_kept(tmp_path, shapes, monkeypatch):
    real = train_loop.get_loss("clip")
    calls = {"n": 0}

    def loss_going_nan(*args, **kw):
        calls["n"] += 1
        value = real(*args, **kw)
        return value * float("nan") if calls["n"] > 6 else value  # epoch 1 has 6 steps

    monkeypatch.setattr(train_loop, "get_loss", lambda name: loss_going_nan)
    saved = {}

    def remember(event):
        if isinstance(event, CheckpointSaved):
            saved[event.epoch] = _sha(event.path)

    with pytest.raises(TrainingError) as err:
        run(_config(tmp_path, shapes, epochs=3), on_event=remember)
    msg = str(err.value)
    assert "loss nan at epoch 2, step 1" in msg
    assert "last good checkpoint (epoch 1) is kept" in msg and "--resume" in msg
    assert list(saved) == [1]
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    assert _sha(ckpt) == saved[1]
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 1
    # The kept checkpoint is healthy and loads as a model.
    assert all(torch.isfinite(t).all() for t in load_file(str(ckpt)).values())
    from clipsearch.models import load_encoder

    assert load_encoder(str(ckpt), precision="fp32").dim == 32


def test_nan_in_the_first_epoch_says_there_is_no_checkpoint(tmp_path, shapes, monkeypatch):
    real = train_loop.get_loss("clip")
    monkeypatch.setattr(
        train_loop, "get_loss", lambda name: lambda *a, **k: real(*a, **k) * float("inf")
    )
    with pytest.raises(TrainingError, match="no epoch had completed, so there is no checkpoint"):
        run(_config(tmp_path, shapes, epochs=1))
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_output_folder_with_a_run_is_refused_unless_resume_or_overwrite(tmp_path, shapes):
    run(_config(tmp_path, shapes, epochs=1, val_fraction=0.0))
    first = _sha(tmp_path / "run" / "checkpoint.safetensors")
    with pytest.raises(TrainingError, match=r"already holds a training run.*--resume.*--overwrite"):
        run(_config(tmp_path, shapes, epochs=1, val_fraction=0.0))
    assert _sha(tmp_path / "run" / "checkpoint.safetensors") == first  # untouched
    with pytest.raises(TrainingError, match=r"cannot resume .*batch_size: 8 -> 16"):
        run(_config(tmp_path, shapes, epochs=1, val_fraction=0.0, batch_size=16, resume=True))
    with pytest.raises(TrainingError, match="nothing to resume"):
        run(_config(tmp_path / "new", shapes, epochs=1, resume=True))
    report = run(_config(tmp_path, shapes, epochs=1, val_fraction=0.0, seed=1, overwrite=True))
    assert report.status == "completed"
    assert _sha(tmp_path / "run" / "checkpoint.safetensors") != first


def test_missing_files_and_long_captions_are_counted(tmp_path):
    make_image_set(tmp_path / "d", n=24, seed=1, size=32)
    rows = list(csv.reader((tmp_path / "d" / "images.csv").open()))
    rows[1][1] = " ".join(["very"] * 40) + " long caption"  # > tiny-vit's 32-token context
    rows += [["images/missing1.png", "gone"], ["images/missing2.png", "gone too"]]
    with (tmp_path / "d" / "pairs.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    events = []
    report = run(
        _config(tmp_path, tmp_path / "d" / "pairs.csv", epochs=1, val_fraction=0.0),
        on_event=events.append,
    )
    ready = next(e for e in events if isinstance(e, DataReady))
    assert ready.skipped["missing_media"] == 2
    assert ready.truncated_captions == 1
    assert ready.train_media == 24
    assert report.data["missing_media"] == 2 and report.data["truncated_captions"] == 1
    assert "missing_media: 2" in (tmp_path / "run" / "report.md").read_text()


def test_finetuned_checkpoint_loads_as_a_model_with_its_own_fingerprint(
    tmp_path, shapes, tiny_checkpoint
):
    from clipsearch.models import load_encoder

    report = run(
        _config(
            tmp_path, shapes, from_scratch=None, base=str(tiny_checkpoint), mode="lit", epochs=1
        )
    )
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    base = load_encoder(str(tiny_checkpoint), precision="fp32")
    tuned = load_encoder(str(ckpt), precision="fp32")
    assert report.base_fingerprint == base.fingerprint
    assert report.fingerprint == tuned.fingerprint != base.fingerprint
    # LiT: the image tower is exactly the base's, the text tower moved.
    b, t = base.model.state_dict(), tuned.model.state_dict()
    assert all(torch.equal(b[k], t[k]) for k in b if k.startswith("visual."))
    assert not torch.equal(b["token_embedding.weight"], t["token_embedding.weight"])
    assert not torch.equal(b["text_projection"], t["text_projection"])
    # The report compares before and after on the same validation split.
    js = json.loads((tmp_path / "run" / "report.json").read_text())
    assert js["before"]["text_to_media"]["n"] == js["after"]["text_to_media"]["n"] == 16
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| text→media | R@1 |" in md and str(tiny_checkpoint) in md


def test_lora_run_saves_merged_weights_and_resumes_from_its_adapters(
    tmp_path, shapes, tiny_checkpoint
):
    pytest.importorskip("peft", reason="LoRA mode needs the optional peft package")
    from clipsearch.models import load_encoder

    kw = dict(from_scratch=None, base=str(tiny_checkpoint), mode="lora", lora_rank=2, lr=5e-3)
    straight = run(_config(tmp_path / "a", shapes, **kw))

    class Stop(Exception):
        pass

    def stop(event):
        if isinstance(event, CheckpointSaved) and event.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        run(_config(tmp_path / "b", shapes, **kw), on_event=stop)
    run(_config(tmp_path / "b", shapes, resume=True, **kw))

    a = load_file(str(tmp_path / "a" / "run" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "checkpoint.safetensors"))
    base = load_encoder(str(tiny_checkpoint), precision="fp32").model.state_dict()
    assert a.keys() == set(base)  # merged: plain open_clip keys, no adapter tensors
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)
    moved = [k for k in a if not torch.equal(a[k], base[k])]
    assert any("mlp.c_fc.weight" in k for k in moved)  # adapters were merged in
    assert not any("ln_" in k or "conv1" in k for k in moved)  # LoRA leaves other weights
    assert straight.fingerprint != load_encoder(str(tiny_checkpoint)).fingerprint


def test_bf16_autocast_and_gradient_checkpointing_train(tmp_path, shapes):
    report = run(
        _config(
            tmp_path, shapes, epochs=1, precision="bf16", grad_checkpointing=True, micro_batch=4
        )
    )
    assert torch.isfinite(torch.tensor(report.history[0]["loss"]))
    tuned = load_file(str(tmp_path / "run" / "checkpoint.safetensors"))
    assert tuned["visual.proj"].dtype == torch.float32  # weights stay fp32 under autocast


def test_video_caption_pairs_train_with_meanp_pooling(tmp_path):
    from tests.videogen import make_video

    videos = tmp_path / "videos"
    videos.mkdir()
    colours = ["red", "green", "blue", "yellow", "magenta", "cyan"]
    rows = []
    for i, (a, b) in enumerate(zip(colours, colours[1:] + colours[:1], strict=True)):
        make_video(videos / f"video{i}.mp4", ((a, 0.5), (b, 0.5)), fps=10, size=(64, 48))
        rows.append({"video": f"video{i}", "caption": f"a {a} scene, then a {b} scene"})
    rows.append({"video": "video99", "caption": "not on disk"})
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    events = []
    report = run(
        TrainConfig(
            out=tmp_path / "run",
            videos=videos,
            captions=tmp_path / "captions.jsonl",
            from_scratch="tiny-vit",
            base=None,
            frames="uniform:4",
            epochs=2,
            batch_size=4,
            val_fraction=0.34,
            lr=1e-3,
            workers=1,
        ),
        on_event=events.append,
    )
    ready = next(e for e in events if isinstance(e, DataReady))
    assert (ready.train_media, ready.val_media) == (4, 2)
    assert ready.skipped["missing_media"] == 1
    assert report.data["undecodable_media"] == 0
    assert report.after["text_to_media"]["n"] == 2
    assert len(report.history) == 2 and all(h["steps"] == 1 for h in report.history)
    from clipsearch.models import load_encoder

    assert load_encoder(str(tmp_path / "run" / "checkpoint.safetensors")).dim == 32


def test_video_frames_are_mean_pooled_clip4clip_style():
    from clipsearch.train.trainable import encode_video
    from tests.fakes import make_tiny_model

    model = make_tiny_model(seed=0)
    frames = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled = encode_video(model, frames)  # (2, D)
        per_frame = torch.nn.functional.normalize(model.encode_image(frames.flatten(0, 1)), dim=-1)
    expected = torch.nn.functional.normalize(per_frame.view(2, 3, -1).mean(1), dim=-1)
    torch.testing.assert_close(pooled, expected)
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(2))
