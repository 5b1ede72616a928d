"""Synthetic moment-retrieval sets, built like Charades-STA but with picture queries.

Each video is a sequence of scenes; each scene films one procedurally drawn picture (a
smooth colour field with a few shapes) with a slow zoom and drift, sensor noise on every
frame, and cross-fades between scenes. Each query is the scene's picture re-cropped and
colour-shifted, so it is never an exact frame; its ground truth is the scene's
[start, end] in its video.

Ground truth: scene ``i`` spans ``[start_i, end_i)``; a cross-fade of ``fade_s`` is centred
on each cut, so a frame at time t shows ``(1 - a)·scene_i + a·scene_{i+1}`` with
``a = (t - (cut - fade/2)) / fade`` inside the fade. The cut itself is the moment edge.

Written to ``out_dir``: ``videos/vNN.mp4`` (H.264), ``queries/vNN_sK.jpg`` and
``queries.tsv`` with columns ``video, start, end, image`` (the picture-query format of
``clipsearch eval moments``). Same seed, same files.

    >>> make_moment_set(tmp / "set", videos=6, seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class MomentScene:
    start: float  # seconds
    end: float
    seed: int  # picture seed


@dataclass(frozen=True)
class MomentVideo:
    video_id: str
    file: Path
    duration: float
    scenes: tuple[MomentScene, ...]


@dataclass(frozen=True)
class MomentQuery:
    video_id: str
    start: float
    end: float
    image: Path


@dataclass(frozen=True)
class MomentSet:
    root: Path
    videos: tuple[MomentVideo, ...]
    queries: tuple[MomentQuery, ...]
    tsv: Path


def scene_picture(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A picture for one scene: a smooth two-colour field, 3–6 shapes, a little texture."""
    rng = np.random.default_rng([7, seed])
    w, h = size
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    field = rng.random((4, 5))  # low-frequency layout of the two colours
    mix = (
        np.asarray(
            Image.fromarray((field * 255).astype(np.uint8)).resize(
                (w, h), Image.Resampling.BICUBIC
            ),
            dtype=np.float32,
        )[..., None]
        / 255.0
    )
    img = (1 - mix) * c0 + mix * c1  # (H, W, 3)
    pic = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pic)
    for _ in range(int(rng.integers(3, 7))):
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        r = rng.uniform(0.08, 0.25) * h
        kind = int(rng.integers(3))
        box = [cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r * rng.uniform(0.5, 1.5)]
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    grain = rng.normal(0, 10, (h // 4, w // 4, 3))
    grain = np.asarray(
        Image.fromarray(np.clip(grain + 128, 0, 255).astype(np.uint8)).resize((w, h)),
        dtype=np.float32,
    )
    out = np.asarray(pic, dtype=np.float32) + (grain - 128)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(0.8)
    )


def _zoomed(pic: Image.Image, u: float, size: tuple[int, int], zoom: float, drift) -> np.ndarray:
    """The picture seen at progress ``u`` in [0, 1] of a slow zoom-in with a drift."""
    pw, ph = pic.size
    scale = 1.0 + zoom * u
    cw, ch = pw / scale, ph / scale
    cx = pw / 2 + drift[0] * u * (pw - cw) / 2
    cy = ph / 2 + drift[1] * u * (ph - ch) / 2
    box = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
    return np.asarray(pic.resize(size, Image.Resampling.BILINEAR, box=box), dtype=np.float32)


def write_moment_video(
    path: Path,
    scenes: Sequence[MomentScene],
    *,
    fps: int = 10,
    size: tuple[int, int] = (320, 240),
    fade_s: float = 0.5,
    zoom: float = 0.15,
    noise: float = 6.0,
    seed: int = 0,
) -> None:
    """Encode ``scenes`` as H.264 (see the module docstring for what a frame shows)."""
    import av

    rng = np.random.default_rng([11, seed])
    pictures = [scene_picture(s.seed) for s in scenes]
    drifts = [rng.uniform(-1, 1, 2) for _ in scenes]
    end = scenes[-1].end
    cuts = [s.end for s in scenes[:-1]]

    def view(i: int, t: float) -> np.ndarray:
        s = scenes[i]
        u = float(np.clip((t - s.start) / (s.end - s.start), 0.0, 1.0))
        return _zoomed(pictures[i], u, size, zoom, drifts[i])

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for k in range(round(end * fps)):
            t = k / fps
            i = next((j for j, s in enumerate(scenes) if s.start <= t < s.end), len(scenes) - 1)
            img = view(i, t)
            for c, cut in enumerate(cuts):
                a = (t - (cut - fade_s / 2)) / fade_s
                if 0.0 < a < 1.0:
                    img = (1 - a) * view(c, t) + a * view(c + 1, t)
            img = img + rng.normal(0.0, noise, img.shape)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), "rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def query_picture(
    seed: int,
    rng: np.random.Generator,
    *,
    crop: tuple[float, float] = (0.6, 0.85),
    gain: float = 0.08,
    offset: float = 8.0,
) -> Image.Image:
    """The scene's picture re-cropped (a ``crop`` fraction of each side, anywhere) and
    colour-shifted (per-channel gain 1 ± ``gain``, offset ± ``offset``): never one of the
    video's frames."""
    pic = scene_picture(seed)
    pw, ph = pic.size
    f = rng.uniform(*crop)
    cw, ch = pw * f, ph * f
    x0, y0 = rng.uniform(0, pw - cw), rng.uniform(0, ph - ch)
    view = pic.resize((256, 192), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    g, o = rng.uniform(1 - gain, 1 + gain, 3), rng.uniform(-offset, offset, 3)
    out = np.asarray(view, dtype=np.float32) * g + o
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def make_moment_set(
    out_dir: str | Path,
    *,
    videos: int = 6,
    min_scenes: int = 4,
    max_scenes: int = 6,
    min_scene_s: float = 3.0,
    max_scene_s: float = 12.0,
    fps: int = 10,
    size: tuple[int, int] = (320, 240),
    fade_s: float = 0.5,
    zoom: float = 0.15,
    noise: float = 6.0,
    query_gain: float = 0.08,
    query_offset: float = 8.0,
    seed: int = 0,
) -> MomentSet:
    """Write a moment set (see the module docstring) and return its description.

    Scene lengths are drawn uniformly from [min_scene_s, max_scene_s], rounded to 0.1 s;
    every scene of the set films its own picture.
    """
    rng = np.random.default_rng([3, seed])
    root = Path(out_dir)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "queries").mkdir(parents=True, exist_ok=True)
    out_videos, out_queries, picture = [], [], 1000 * seed
    for v in range(videos):
        scenes, t = [], 0.0
        for _ in range(int(rng.integers(min_scenes, max_scenes + 1))):
            d = round(float(rng.uniform(min_scene_s, max_scene_s)), 1)
            scenes.append(MomentScene(round(t, 3), round(t + d, 3), picture))
            picture, t = picture + 1, t + d
        vid = f"v{v:02d}"
        path = root / "videos" / f"{vid}.mp4"
        write_moment_video(
            path, scenes, fps=fps, size=size, fade_s=fade_s, zoom=zoom, noise=noise, seed=v
        )
        out_videos.append(MomentVideo(vid, path, scenes[-1].end, tuple(scenes)))
        for k, s in enumerate(scenes):
            q = root / "queries" / f"{vid}_s{k}.jpg"
            query_picture(s.seed, rng, gain=query_gain, offset=query_offset).save(q, quality=90)
            out_queries.append(MomentQuery(vid, s.start, s.end, q))
    tsv = root / "queries.tsv"
    with tsv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["video", "start", "end", "image"])
        for q in out_queries:
            w.writerow([q.video_id, f"{q.start:.3f}", f"{q.end:.3f}", f"queries/{q.image.name}"])
    return MomentSet(root, tuple(out_videos), tuple(out_queries), tsv)
