"""Train the tiny colour/shape fixture model: tests/data/tiny_colour_model.safetensors.

A ~1.8 M-parameter open_clip ViT (``tiny-colour``: 64x64 input, patch 8, 3 layers,
embed 32; the config travels in the checkpoint header, so loading it needs no
registration) trained from scratch on clipsearch's synthetic coloured-shape images
(``clipsearch.eval.synthetic``, all 720 combinations, 64 px), so end-to-end tests have a
real open_clip model that *knows* colours and shapes. Fixed seed, one torch thread:
rerunning reproduces the same weights (the same fingerprint) on the same torch build and
CPU; the file bytes may still differ, since safetensors writes header keys in hash order.

What it knows (held-out images, printed by the script; measured on the development
machine): the background (dominant) colour 100 % top-1 over 9 colour words; full-caption
text→image R@1 51 % (chance 1.4 %); the small foreground object ("a red circle") only
30.6 % top-1 over 18 colour+shape prompts (chance 5.6 %) — shapes are a quarter of the
side, 16 px, and the model is tiny.

Captions per image (one drawn per epoch): the generator's full caption ("a red circle at
the top left on a blue background"), "a red circle", "a blue background" and "blue" (the
background covers ~95 % of the picture, so a bare colour word means the dominant colour).

    python scripts/make_tiny_fixture_model.py                 # writes tests/data/...
    python scripts/make_tiny_fixture_model.py --out /tmp/m.safetensors --epochs 5

The weights are stored in float16 (half the size; loading casts them back to fp32). The
script prints the held-out validation recall of the saved model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "tests" / "data" / "tiny_colour_model.safetensors"
ARCH = "tiny-colour"


def model_config(image_size: int) -> dict:
    """A tiny ViT: patch 8, width 64, 3 layers; text width 32, 2 layers; embed 32.

    The config is recorded in the checkpoint header, so loading needs no registration.
    """
    return {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": image_size,
            "layers": 3,
            "width": 64,
            "head_width": 32,
            "patch_size": 8,
        },
        "text_cfg": {
            "context_length": 32,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
        },
    }


def write_pairs(root: Path, *, n: int, seed: int, size: int) -> Path:
    """Synthetic images plus a JSONL of several captions per image."""
    from clipsearch.eval.synthetic import make_image_set

    items = make_image_set(root, n=n, seed=seed, size=size)
    path = root / "pairs.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for it in items:
            captions = [
                it.caption,
                f"a {it.colour} {it.shape}",
                f"a {it.background} background",
                it.background,
            ]
            f.write(json.dumps({"image": it.file, "caption": captions}) + "\n")
    return path


def to_fp16(src: Path, dst: Path) -> None:
    """Copy a clipsearch checkpoint with float tensors stored as float16 (same header)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    meta = dict(meta, **{"extra.storage": "float16"})
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(half, str(dst), metadata=meta)
    dst.chmod(0o644)
    _ = torch  # torch is needed by safetensors.torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--images", type=int, default=720, help="synthetic images (max 720)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64, help="model input side (pixels)")
    args = p.parse_args(argv)

    import open_clip
    import torch

    from clipsearch.models import load_encoder
    from clipsearch.train import TrainConfig, run
    from clipsearch.train.events import EvalDone

    torch.set_num_threads(1)  # tiny model: one thread is fastest and deterministic
    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = Path(tmp) / "configs"
        cfg_dir.mkdir()
        (cfg_dir / f"{ARCH}.json").write_text(json.dumps(model_config(args.image_size)))
        open_clip.add_model_config(cfg_dir)
        pairs = write_pairs(Path(tmp) / "data", n=args.images, seed=args.seed, size=args.image_size)

        def show(event: object) -> None:
            if isinstance(event, EvalDone):
                t, m = event.metrics["text_to_media"], event.metrics["media_to_text"]
                print(
                    f"epoch {event.epoch:3d}: text→image R@1 {t['R@1']:5.1f} R@5 {t['R@5']:5.1f}"
                    f" | image→text R@1 {m['R@1']:5.1f} R@5 {m['R@5']:5.1f}",
                    flush=True,
                )

        config = TrainConfig(
            out=Path(tmp) / "run",
            pairs=pairs,
            from_scratch=ARCH,
            base=None,
            epochs=args.epochs,
            batch_size=64,
            lr=2e-3,
            warmup_steps=20,
            weight_decay=0.1,
            val_fraction=0.1,
            augment=False,
            seed=args.seed,
            workers=1,
        )
        report = run(config, on_event=show)
        to_fp16(Path(report.checkpoint), args.out)
        enc = load_encoder(str(args.out), precision="fp32")
        probe = held_out_probe(enc, pairs, seed=args.seed, size=args.image_size)
    size_mb = args.out.stat().st_size / 2**20
    print(f"wrote {args.out} ({size_mb:.1f} MiB), fingerprint {enc.fingerprint}")
    after = report.after
    print(
        "held-out validation ({} images, several captions each): text→image R@1 {:.1f} "
        "R@5 {:.1f}; image→text R@1 {:.1f} (chance R@1 {:.1f})".format(
            report.data["val_media"],
            after["text_to_media"]["R@1"],
            after["text_to_media"]["R@5"],
            after["media_to_text"]["R@1"],
            100 / report.data["val_media"],
        )
    )
    print(
        "held-out probes with the saved fp16 model: full-caption text→image R@1 {:.1f} "
        "(chance {:.1f}); background colour top-1 {:.1f} % over 9 colours; "
        "shape colour+kind top-1 {:.1f} % over 18".format(*probe)
    )
    return 0


def held_out_probe(enc, pairs: Path, *, seed: int, size: int) -> tuple[float, float, float, float]:
    """Zero-shot checks on the validation images the training never saw."""
    import numpy as np

    from clipsearch.eval.synthetic import COLOURS, SCENE_COLOURS, SHAPES
    from clipsearch.media import load_image
    from clipsearch.train.data import read_pairs_file, split_pairs

    data = read_pairs_file(pairs)
    _, val = split_pairs(data, val_fraction=0.1, seed=seed, max_val=1000)
    rows = {json.loads(line)["image"]: json.loads(line)["caption"] for line in pairs.open()}
    files = [str(Path(m).relative_to(pairs.parent)) for m in val.media]
    full = [rows[f][0] for f in files]
    backgrounds = [rows[f][3] for f in files]
    objects = [rows[f][1] for f in files]
    img = enc.encode_images([load_image(m, min_side=size).image for m in val.media])  # (M, D)
    txt = enc.encode_texts(full)  # (M, D)
    r1 = float(np.mean((txt @ img.T).argmax(1) == np.arange(len(files)))) * 100
    bg_names = list(COLOURS)
    bg_pred = (img @ enc.encode_texts(bg_names).T).argmax(1)
    bg_acc = float(np.mean([bg_names[i] == b for i, b in zip(bg_pred, backgrounds, strict=True)]))
    obj_names = [f"a {c} {s}" for c in SCENE_COLOURS for s in SHAPES]
    obj_pred = (img @ enc.encode_texts(obj_names).T).argmax(1)
    obj_acc = float(np.mean([obj_names[i] == o for i, o in zip(obj_pred, objects, strict=True)]))
    return r1, 100 / len(files), bg_acc * 100, obj_acc * 100


if __name__ == "__main__":
    raise SystemExit(main())
