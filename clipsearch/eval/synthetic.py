"""Deterministic synthetic retrieval benchmarks: images and videos with known captions.

Images: a coloured shape on a coloured background, enumerated over colour × shape ×
position and sampled with a fixed seed; caption e.g. "a red circle at the top left on a
blue background" (``caption_style="full"``) or "a blue background"
(``"background"``: names only the dominant colour, so a colour-matching encoder must get
R@1 = 100 when every background is distinct). Written as ``images/*.png`` plus
``images.csv`` (columns ``image,caption``: the pairs format).

Videos: sequences of plain coloured scenes (H.264 via PyAV's libx264), each video 2–4
scenes of distinct colours with random durations. The caption describes a moment of two
consecutive scenes ("a red scene, then a blue scene", ``caption_style="scene"``; the pair
is unique across videos while there are unused ordered pairs, 30 for 6 colours, so
captions do not repeat in small sets) or the whole video in order (``"all"``). Written as ``videos/videoNNNN.mp4`` plus ``videos.csv`` in the MSR-VTT 1k-A
layout (``key,vid_key,video_id,sentence``) and ``moments.csv``
(``video_id,scene,colour,start,end``) for localisation.

Same seed → same files, byte for byte for the images (PNG) and frame for frame for the
videos. Run as ``python -m clipsearch.eval.synthetic --out DIR`` or
``clipsearch eval synth --out DIR``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clipsearch.errors import LibraryError, UsageError
from clipsearch.eval.choices import ImageCaptionStyle, VideoCaptionStyle

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 200, 20),
    "blue": (20, 20, 220),
    "yellow": (230, 220, 30),
    "magenta": (210, 30, 210),
    "cyan": (30, 210, 210),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
}
SCENE_COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
SHAPES = ("circle", "square", "triangle")
POSITIONS = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "centre": (0.5, 0.5),
}


@dataclass(frozen=True)
class SyntheticImage:
    file: str
    caption: str
    background: str
    colour: str
    shape: str
    position: str


@dataclass(frozen=True)
class Scene:
    colour: str
    start: float
    end: float


@dataclass(frozen=True)
class SyntheticVideo:
    video_id: str
    file: str
    caption: str
    scenes: tuple[Scene, ...]
    target_scene: int | None  # the caption covers scenes target and target+1 (None: all)


def draw_shape_image(
    background: str, colour: str, shape: str, position: str, *, size: int = 128
) -> Image.Image:
    """One RGB image: ``shape`` in ``colour`` (a quarter of the side) on ``background``."""
    im = Image.new("RGB", (size, size), COLOURS[background])
    draw = ImageDraw.Draw(im)
    cx, cy = POSITIONS[position]
    r = size * 0.125  # shape radius: the background stays the dominant colour (~95%)
    x, y = cx * size, cy * size
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    else:
        raise UsageError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    return im


def make_image_set(
    out_dir: str | Path,
    *,
    n: int = 60,
    seed: int = 0,
    size: int = 128,
    caption_style: ImageCaptionStyle = "full",
    backgrounds: Sequence[str] | None = None,
) -> list[SyntheticImage]:
    """Write ``n`` images and ``images.csv`` into ``out_dir``; return their descriptions.

    backgrounds: restrict background colours (default: all of COLOURS). With
    ``caption_style="background"`` every background is used at most once, so ``n`` must
    not exceed the number of backgrounds. Raises UsageError on impossible requests.
    """
    bgs = list(backgrounds or COLOURS)
    unknown = [c for c in bgs if c not in COLOURS]
    if unknown:
        raise UsageError(f"unknown colour {unknown[0]!r}; choose from {', '.join(COLOURS)}")
    rng = np.random.default_rng(seed)
    if caption_style == "background":
        if n > len(bgs):
            raise UsageError(
                f"caption_style='background' needs n ≤ {len(bgs)} distinct backgrounds"
            )
        chosen_bgs = [bgs[i] for i in rng.permutation(len(bgs))[:n]]
        combos = []
        for bg in chosen_bgs:
            fg = [c for c in SCENE_COLOURS if c != bg]
            combos.append(
                (
                    bg,
                    fg[rng.integers(len(fg))],
                    SHAPES[rng.integers(len(SHAPES))],
                    list(POSITIONS)[rng.integers(len(POSITIONS))],
                )
            )
    else:
        space = [
            (bg, fg, sh, pos)
            for bg, fg, sh, pos in itertools.product(bgs, SCENE_COLOURS, SHAPES, POSITIONS)
            if bg != fg
        ]
        if n > len(space):
            raise UsageError(f"at most {len(space)} distinct images with these colours")
        combos = [space[i] for i in sorted(rng.choice(len(space), size=n, replace=False))]
    out = Path(out_dir)
    img_dir = out / "images"
    items: list[SyntheticImage] = []
    try:
        img_dir.mkdir(parents=True, exist_ok=True)
        for i, (bg, fg, shape, pos) in enumerate(combos):
            caption = (
                f"a {bg} background"
                if caption_style == "background"
                else f"a {fg} {shape} at the {pos} on a {bg} background"
            )
            rel = f"images/img{i:04d}.png"
            draw_shape_image(bg, fg, shape, pos, size=size).save(out / rel, optimize=False)
            items.append(SyntheticImage(rel, caption, bg, fg, shape, pos))
        with (out / "images.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["image", "caption"])
            w.writerows((it.file, it.caption) for it in items)
    except OSError as e:
        raise LibraryError(f"cannot write the synthetic images into {out}: {e}") from e
    return items


def _scene_plan(rng: np.random.Generator, *, min_scenes: int, max_scenes: int) -> list[Scene]:
    k = int(rng.integers(min_scenes, max_scenes + 1))
    colours = [SCENE_COLOURS[i] for i in rng.permutation(len(SCENE_COLOURS))[:k]]
    durations = rng.choice([1.0, 1.5, 2.0, 2.5, 3.0], size=k)
    scenes, t = [], 0.0
    for c, d in zip(colours, durations, strict=True):
        scenes.append(Scene(c, t, t + float(d)))
        t += float(d)
    return scenes


def write_scene_video(
    path: str | Path, scenes: Sequence[Scene], *, fps: int = 8, size: tuple[int, int] = (64, 48)
) -> None:
    """Encode plain-colour scenes as lossless H.264 (yuv420p, qp=0: no codec artefacts at
    cuts, so every decoded frame is one plain colour); frame k shows the scene holding k/fps.

    Raises MissingDependencyError if PyAV is missing (extra: the core ``av`` dependency).
    """
    try:
        import av
    except ImportError:
        from clipsearch.errors import MissingDependencyError

        raise MissingDependencyError("av", "all") from None
    w, h = size
    end = scenes[-1].end
    n_frames = round(end * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {
            "preset": "veryfast",
            "x264-params": "keyint=16:scenecut=0:qp=0",
        }  # lossless: exact frames
        for k in range(n_frames):
            t = k / fps
            scene = next((s for s in scenes if s.start <= t < s.end), scenes[-1])
            img = np.empty((h, w, 3), dtype=np.uint8)
            img[:] = COLOURS[scene.colour]
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def make_video_set(
    out_dir: str | Path,
    *,
    n: int = 20,
    seed: int = 0,
    min_scenes: int = 2,
    max_scenes: int = 4,
    fps: int = 8,
    size: tuple[int, int] = (64, 48),
    caption_style: VideoCaptionStyle = "scene",
) -> list[SyntheticVideo]:
    """Write ``n`` videos, ``videos.csv`` (MSR-VTT layout) and ``moments.csv``.

    Raises UsageError for impossible scene counts, LibraryError if the folder cannot be
    written.
    """
    if not 1 <= min_scenes <= max_scenes <= len(SCENE_COLOURS):
        raise UsageError(f"scene counts must satisfy 1 ≤ min ≤ max ≤ {len(SCENE_COLOURS)}")
    if caption_style == "scene" and min_scenes < 2:
        raise UsageError("caption_style='scene' describes two consecutive scenes: min_scenes ≥ 2")
    n_pairs = len(SCENE_COLOURS) * (len(SCENE_COLOURS) - 1)
    used_pairs: set[tuple[str, str]] = set()
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    vid_dir = out / "videos"
    videos: list[SyntheticVideo] = []
    try:
        vid_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            scenes = _scene_plan(rng, min_scenes=min_scenes, max_scenes=max_scenes)
            if caption_style == "all":
                target = None
                caption = ", then ".join(f"a {s.colour} scene" for s in scenes)
            else:
                for _ in range(200):  # bounded re-draws to keep the described pair unique
                    target = int(rng.integers(len(scenes) - 1))
                    pair = (scenes[target].colour, scenes[target + 1].colour)
                    if pair not in used_pairs or len(used_pairs) >= n_pairs:
                        break
                    scenes = _scene_plan(rng, min_scenes=min_scenes, max_scenes=max_scenes)
                used_pairs.add(pair)
                caption = f"a {pair[0]} scene, then a {pair[1]} scene"
            vid = f"video{i:04d}"
            rel = f"videos/{vid}.mp4"
            write_scene_video(out / rel, scenes, fps=fps, size=size)
            videos.append(SyntheticVideo(vid, rel, caption, tuple(scenes), target))
        with (out / "videos.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["key", "vid_key", "video_id", "sentence"])
            for i, v in enumerate(videos):
                w.writerow([f"ret{i}", f"msr{i}", v.video_id, v.caption])
        with (out / "moments.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "scene", "colour", "start", "end"])
            for v in videos:
                for j, s in enumerate(v.scenes):
                    w.writerow([v.video_id, j, s.colour, f"{s.start:.3f}", f"{s.end:.3f}"])
    except OSError as e:
        raise LibraryError(f"cannot write the synthetic videos into {out}: {e}") from e
    return videos


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m clipsearch.eval.synthetic --out DIR [--images N] [--videos N] [--seed S]``."""
    parser = argparse.ArgumentParser(prog="python -m clipsearch.eval.synthetic")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_image_set(args.out, n=args.images, seed=args.seed)
    make_video_set(args.out, n=args.videos, seed=args.seed)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
