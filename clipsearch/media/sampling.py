"""Frame sampling strategies: which instants of a video become frame vectors (docs/video.md).

A `FrameSampler` turns a video's duration (and, for ``shots``, its shot boundaries) into
target timestamps in seconds from the video stream's start. The decoder
(`clipsearch.media.video`) then returns, for each target, the first frame presented at or
after it (or the nearest keyframe in the approximate keyframe mode).

Strategies (``FrameSampler.parse`` spelling):

- ``uniform:N``: N frames over the whole video, as CLIP4Clip samples 12 frames per clip.
  Convention: **segment centres**, ``t_i = (i + 1/2) · D / N`` for i = 0..N-1. Each frame
  stands for an equal slice of the video and the first/last instants (black intros, fades)
  are avoided. (CLIP4Clip's loader uses ``linspace(0, n-1, N)`` over 1-fps frames, i.e.
  endpoints included; the difference is at most half a segment.)
- ``fps:R``: one frame every 1/R s, also at segment centres: ``t_k = (k + 1/2) / R`` for
  every k with ``t_k < D`` (at least one frame, at D/2). clip-video-encode indexes at 1 fps.
- ``shots`` / ``shots:K``: shot boundaries found with PySceneDetect's ContentDetector
  (HSV frame difference, threshold 27, shots at least 0.6 s), then K frames per shot
  (default 1) at the centres of K equal slices of the shot: K=1 is the middle frame.
- ``auto`` (default): ``uniform:12`` for videos up to 12 s, ``fps:1`` beyond. The two
  agree at 12 s (12 frames either way), so a video never gets fewer than 12 frames and
  never a sparser grid than 1 frame per second.

Every strategy is capped at ``max_frames`` (default 512: a 10-hour video at fps:1 would
otherwise be 36,000 frames). Over the cap the strategy's own targets are thinned evenly:
``i_j = floor((j + 1/2) · n / max_frames)``, so fps and uniform stay evenly spread and
shots keep to shot middles.

Decode planning (`choose_mode`, `seek_cost`) lives here too: given the targets and the
keyframe times, is seeking or decoding straight through cheaper? Pure numpy, measured
constants (docs/video.md).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from clipsearch.errors import MissingDependencyError, UsageError

# numpy is imported by the functions that compute frame times: parsing a sampler's
# spelling (every index run checks it, even one with no video to decode) needs none.
if TYPE_CHECKING:
    import numpy as np

DEFAULT_MAX_FRAMES = 512
AUTO_UNIFORM_MAX_S = 12.0  # `auto`: uniform:12 up to this duration, fps:1 beyond
AUTO_UNIFORM_N = 12
AUTO_FPS = 1.0
SHOT_THRESHOLD = 27.0  # PySceneDetect ContentDetector default
MIN_SHOT_S = 0.6
# Decode planning (measured, docs/video.md): one seek + decoder restart costs about this many
# frame decodes; seek mode is chosen when it is predicted to decode < SEEK_WIN of sequential.
SEEK_COST_FRAMES = 4
SEEK_WIN = 0.9
NO_INDEX_SEEK_S = 10.0  # without a keyframe index, seek only across gaps longer than this
_EPS = 1e-6

_SPEC = re.compile(r"^\s*(uniform|fps|shots|auto)\s*(?::\s*([0-9.eE+-]+)\s*)?$")

Shot = tuple[float, float]


@dataclass(frozen=True)
class FrameSampler:
    """Where to sample frames. Build one with `FrameSampler.parse("fps:1")`."""

    kind: str = "auto"  # "uniform" | "fps" | "shots" | "auto"
    n: int = AUTO_UNIFORM_N  # uniform: frames per video
    rate: float = AUTO_FPS  # fps: frames per second
    per_shot: int = 1  # shots: frames per shot
    max_frames: int = DEFAULT_MAX_FRAMES  # cap on frames per video, any strategy

    @classmethod
    def parse(cls, spec: str, *, max_frames: int = DEFAULT_MAX_FRAMES) -> FrameSampler:
        """Parse ``uniform:N``, ``fps:R``, ``shots``, ``shots:K`` or ``auto``.

        Raises:
            UsageError: unknown strategy, missing/extra/non-positive argument, or
                ``max_frames`` < 1.
        """
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
            raise UsageError(f"max_frames must be a positive integer, got {max_frames!r}")
        m = _SPEC.match(spec or "")
        if m is None:
            raise UsageError(
                f"unknown frame sampler {spec!r}: use uniform:N (e.g. uniform:12), fps:R "
                "(e.g. fps:1 or fps:0.5), shots, shots:K, or auto"
            )
        kind, arg = m.group(1), m.group(2)
        if kind == "auto":
            if arg is not None:
                raise UsageError(f"'auto' takes no argument (got {spec!r})")
            return cls("auto", max_frames=max_frames)
        if kind == "fps":
            if arg is None:
                raise UsageError("fps needs a rate: fps:R, e.g. fps:1 (one frame per second)")
            rate = _number(arg, spec)
            if not (math.isfinite(rate) and rate > 0):
                raise UsageError(f"fps rate must be a positive number, got {spec!r}")
            return cls("fps", rate=rate, max_frames=max_frames)
        if kind == "uniform":
            if arg is None:
                raise UsageError("uniform needs a count: uniform:N, e.g. uniform:12")
            return cls("uniform", n=_count(arg, spec), max_frames=max_frames)
        per_shot = 1 if arg is None else _count(arg, spec)
        return cls("shots", per_shot=per_shot, max_frames=max_frames)

    def __str__(self) -> str:
        if self.kind == "uniform":
            return f"uniform:{self.n}"
        if self.kind == "fps":
            return f"fps:{self.rate:g}"
        if self.kind == "shots":
            return "shots" if self.per_shot == 1 else f"shots:{self.per_shot}"
        return "auto"

    @property
    def needs_shots(self) -> bool:
        """True if `timestamps` needs shot boundaries (a full decode pass first)."""
        return self.kind == "shots"

    def resolve(self, duration: float) -> FrameSampler:
        """The concrete strategy for a video of ``duration`` s (`auto` -> uniform or fps)."""
        if self.kind != "auto":
            return self
        if duration <= AUTO_UNIFORM_MAX_S:
            return FrameSampler("uniform", n=AUTO_UNIFORM_N, max_frames=self.max_frames)
        return FrameSampler("fps", rate=AUTO_FPS, max_frames=self.max_frames)

    def timestamps(self, duration: float, *, shots: Sequence[Shot] | None = None) -> np.ndarray:
        """Target times in seconds from the stream start, sorted, at most ``max_frames``.

        Args:
            duration: video length in seconds (> 0; a non-positive length gives [0.0]).
            shots: [(start, end)] seconds, required for ``shots``.
        Returns:
            (T,) float64, 1 <= T <= max_frames.
        Raises:
            UsageError: ``shots`` strategy without shot boundaries.
        """
        import numpy as np

        if not (duration > 0 and math.isfinite(duration)):
            return np.zeros(1)
        s = self.resolve(duration)
        # uniform and fps: the k-th target of n is known in closed form, so only the
        # indices kept by the cap are computed; a header claiming 10^10 s costs
        # max_frames targets, never one per period of the claimed length.
        if s.kind == "uniform":
            return (_capped_indices(s.n, self.max_frames) + 0.5) * (duration / s.n)
        if s.kind == "fps":
            n = max(1, math.ceil(duration * s.rate - 0.5))  # count of (k + 1/2)/R < D
            if n == 1:
                return np.array([min(0.5 / s.rate, duration / 2)])
            t = (_capped_indices(n, self.max_frames) + 0.5) / s.rate
            return t[t < duration]
        else:
            if shots is None:
                raise UsageError("the shots sampler needs shot boundaries (detect_shots)")
            spans = [(a, b) for a, b in shots if b > a] or [(0.0, duration)]
            k = np.arange(s.per_shot) + 0.5
            t = np.concatenate([a + k * ((b - a) / s.per_shot) for a, b in spans])
        return _cap(np.sort(t), self.max_frames)


def _capped_indices(n: int, max_frames: int) -> np.ndarray:
    """Which of ``n`` evenly spread targets the cap keeps: all of them up to
    ``max_frames``, else i_j = floor((j + 1/2) · n / max_frames). (K,) float64."""
    import numpy as np

    if n <= max_frames:
        return np.arange(n, dtype=np.float64)
    return np.floor((np.arange(max_frames) + 0.5) * (n / max_frames))


def _cap(t: np.ndarray, max_frames: int) -> np.ndarray:
    import numpy as np

    return t[_capped_indices(len(t), max_frames).astype(np.int64)]


def _number(arg: str, spec: str) -> float:
    try:
        return float(arg)
    except ValueError:
        raise UsageError(f"bad number in frame sampler {spec!r}") from None


def _count(arg: str, spec: str) -> int:
    value = _number(arg, spec)
    if not value.is_integer() or value < 1:
        raise UsageError(f"frame count must be a positive integer, got {spec!r}")
    return int(value)


def detect_shots(
    frames: Iterable[tuple[int, np.ndarray]],
    *,
    time_base: Fraction,
    frame_rate: Fraction | float,
    duration: float,
    threshold: float = SHOT_THRESHOLD,
    min_shot_s: float = MIN_SHOT_S,
) -> list[Shot]:
    """Shot boundaries with PySceneDetect's ContentDetector, fed frames we already decode.

    Args:
        frames: (pts relative to the stream start, in ``time_base`` units; BGR uint8
            (H, W, 3) image, small is fine) in presentation order.
        time_base: the stream's time base (pts -> seconds), so VFR timing stays exact.
        frame_rate: nominal rate (PySceneDetect wants one; cut times come from pts).
        duration: video length in seconds (end of the last shot).
        threshold: ContentDetector threshold (higher = fewer cuts).
        min_shot_s: cuts closer than this merge (PySceneDetect's flash filter).
    Returns:
        [(start_s, end_s)] covering [0, duration] without gaps; one shot if no cut.
    Raises:
        MissingDependencyError: scenedetect is not installed (extra ``shots``).
    """
    try:
        import scenedetect  # noqa: F401
    except ImportError:
        raise MissingDependencyError("scenedetect", "shots") from None
    try:  # 0.7 feeds frames by presentation timestamp (VFR-exact); 0.6 by frame number
        from scenedetect.common import FrameTimecode, Timecode
        from scenedetect.detectors import ContentDetector
    except ImportError:
        raise MissingDependencyError("scenedetect>=0.7", "shots") from None

    rate = Fraction(frame_rate).limit_denominator(1_000_000) if frame_rate else Fraction(25)
    detector = ContentDetector(threshold=threshold, min_scene_len=float(min_shot_s))
    cuts: list[float] = []
    last = None
    for pts, image in frames:
        last = FrameTimecode(Timecode(pts=int(pts), time_base=time_base), fps=rate)
        cuts += [c.seconds for c in detector.process_frame(last, image)]
    if last is not None:
        cuts += [c.seconds for c in detector.post_process(last)]
    edges = [0.0, *sorted(c for c in set(cuts) if 0.0 < c < duration), float(duration)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


# --- decode planning: sequential or seek? -----------------------------------------------------
def seek_cost(targets: np.ndarray, keyframes: np.ndarray, fps: float) -> float:
    """Frames the seek mode is predicted to decode for ``targets`` (s), overhead included.

    Walks the targets like the decoder does: a target whose keyframe (last one at or before
    it) lies more than ``SEEK_COST_FRAMES`` frames ahead of the decoder costs a seek plus
    the frames from that keyframe to it; otherwise the frames from the previous target.
    """
    import numpy as np

    cost, cur = 0.0, -math.inf
    for t in targets:
        if t <= cur:
            continue
        i = int(np.searchsorted(keyframes, t + _EPS, side="right")) - 1
        kf = keyframes[max(i, 0)]
        if (kf - cur) * fps > SEEK_COST_FRAMES:
            cost += SEEK_COST_FRAMES + (t - kf) * fps
        else:
            cost += (t - cur) * fps
        cur = t
    return cost


def choose_mode(
    targets: np.ndarray,
    keyframes: np.ndarray | None,
    *,
    duration: float,
    fps: float | None,
    frame_count: int,
) -> str:
    """``seek`` or ``sequential``: the exact decode mode predicted to decode fewer frames.

    Sequential decodes every frame (``frame_count``); seek decodes `seek_cost` frames.
    Seek is chosen if its cost is under ``SEEK_WIN`` (90 %) of sequential. Without a
    keyframe index (MPEG-TS, some MKV), seek only if targets are on average more than
    ``NO_INDEX_SEEK_S`` apart. Measurements behind the constants: docs/video.md.
    """
    fps = fps or 25.0
    total = frame_count or duration * fps
    if keyframes is None or len(keyframes) < 2:
        gap = duration / max(len(targets), 1)
        return "seek" if gap > NO_INDEX_SEEK_S else "sequential"
    return "seek" if seek_cost(targets, keyframes, fps) < SEEK_WIN * total else "sequential"
