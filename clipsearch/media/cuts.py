"""Shot boundaries from the frames a decode produces anyway (frame differences, no extra pass).

While `FrameReader` decodes a video for its sampled frames, the codec also decodes other
frames (reference frames between targets, the run from a keyframe to a target after a
seek). `CutDetector` looks at every one of them through a tiny signature and finds the
cuts; nothing is decoded for it that the sampler did not need.

Signature: an 8×8 grid of block means of the Y, U and V planes, read from a sparse grid
of points of the decoder's own planes (no colour conversion, no scaling: 768 bytes read
per frame, whatever its size; ~50–70 µs): 192 numbers on the 0–255 scale. Block means
forgive texture and small motion; a new shot changes them wholesale.

Cuts, between consecutive *sampled* frames i and i+1 (the frames the index keeps):

1. ``D_i`` = mean |signature_i − signature_{i+1}|. There is a cut between them when
   ``D_i ≥ max(MIN_CUT, CUT_RATIO · D_(25 %))``: a change well above the video's usual
   change between sampled frames (camera motion, people moving; the 25th percentile, not
   the median, since in a short video sampled sparsely most steps may be cuts) and above
   an absolute floor (a static video's usual change is near zero).
2. A sampled frame that falls inside a cross-fade makes both its steps large; when it is
   a blend of its neighbours (|a−b| + |b−c| ≈ |a−c|) the two steps are one transition.
3. Where: among the frames decoded in between, the first one closer to the transition's
   last sampled frame than to its first starts the new shot. If it is a keyframe, the cut
   is at its time (encoders put a keyframe on a scene cut); otherwise half-way between it
   and the decoded frame before it. A hard cut is then exact or within half the gap
   between decoded frames (reference frames: a few frames apart), a cross-fade at its
   middle.

So the detector sees gradual transitions (sampled frames are far enough apart for a fade
to be complete between them), looks at no more than ten decoded frames a second (plus
keyframes and the sampled frames) at a few tens of microseconds each, and places a cut
within about a tenth of a second where the codec decoded frames around it. `clipsearch.search.moments`
snaps moment edges to these cuts. (The ``shots`` sampler, which places frames *by* shot,
still uses PySceneDetect in its own pass: `clipsearch.media.sampling.detect_shots`.)
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

GRID = 8  # signature: GRID × GRID block means per plane
POINTS = (16, 32)  # luma points read per frame (rows, columns); chroma at half each way
MIN_CUT = 8.0  # mean |Δ| (0–255) below which two sampled frames are never a cut
MIN_GAP_S = 0.1  # decoded frames closer than this to the last one looked at are skipped
CUT_RATIO = 4.0  # ... nor when under this many times the video's typical change:
TYPICAL_PERCENTILE = 25.0  # a low quantile, as cuts may be most steps of a short video
BLEND = 0.8  # a sampled frame between two cuts is mid-fade if |a−c| ≥ BLEND·(|a−b| + |b−c|)
PLANAR_8BIT = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})

Shot = tuple[float, float]


def frame_signature(frame: Any) -> np.ndarray | None:
    """(192,) float32 block means of Y, U, V for an 8-bit planar YUV ``av.VideoFrame``;
    None for other pixel formats (10-bit, NV12, RGB: those frames are not looked at)."""
    if frame.format.name not in PLANAR_8BIT:
        return None
    parts = []
    for i, plane in enumerate(frame.planes[:3]):
        rows, cols = POINTS if i == 0 else (POINTS[0] // 2, POINTS[1] // 2)
        step_r, step_c = plane.height // rows, plane.width // cols
        if step_r < 1 or step_c < 1:
            return None
        buf = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
        pts = buf[step_r // 2 : step_r * rows : step_r, step_c // 2 : step_c * cols : step_c]
        blocks = pts.reshape(GRID, rows // GRID, GRID, cols // GRID)  # a strided view
        sums = blocks.sum(axis=(1, 3), dtype=np.uint32).ravel()
        parts.append(sums.astype(np.float32) * (GRID * GRID / (rows * cols)))
    return np.concatenate(parts)


class CutDetector:
    """Collects decoded frames' signatures, then finds the cuts between sampled frames."""

    def __init__(self) -> None:
        self._times: list[float] = []
        self._sigs: list[np.ndarray] = []
        self._keys: list[bool] = []
        self._last = -np.inf

    def observe(self, t: float, frame: Any) -> None:
        """A frame the codec decoded: recorded if it is a keyframe or at least
        ``MIN_GAP_S`` after the last frame recorded (the cut's precision needs no more)."""
        if frame.key_frame or abs(t - self._last) >= MIN_GAP_S:
            self.keep(t, frame)

    def keep(self, t: float, frame: Any) -> None:
        """Record a frame (always: the sampled ones; any order, repeats are ignored)."""
        sig = frame_signature(frame)
        if sig is not None:
            self._times.append(float(t))
            self._sigs.append(sig)
            self._keys.append(bool(frame.key_frame))
            self._last = float(t)

    def shots(self, sampled: np.ndarray, duration: float) -> list[Shot]:
        """[(start, end)] covering [0, duration]: cuts between the ``sampled`` times.

        Sampled frames without a signature (an unsupported pixel format) give one shot.
        """
        cuts = self.cuts(sampled)
        edges = [0.0, *[c for c in cuts if 0.0 < c < duration], float(duration)]
        return [(a, b) for a, b in itertools.pairwise(edges) if b > a]

    def cuts(self, sampled: np.ndarray) -> list[float]:
        """Cut times (seconds, ascending) between consecutive sampled frames."""
        if not self._times:
            return []
        times, first = np.unique(np.asarray(self._times), return_index=True)
        sigs = np.stack([self._sigs[i] for i in first])  # (N, 192), time order
        keys = np.asarray(self._keys)[first]
        sampled = np.asarray(sampled, dtype=np.float64)
        at = np.clip(np.searchsorted(times, sampled - 1e-6), 0, len(times) - 1)
        at = np.unique(at[np.abs(times[at] - sampled) < 1e-6])  # sampled frames we saw
        if len(at) < 2:
            return []
        steps = np.abs(np.diff(sigs[at], axis=0)).mean(axis=1)  # (S-1,) D_i
        typical = float(np.percentile(steps, TYPICAL_PERCENTILE, method="lower"))
        floor = max(MIN_CUT, CUT_RATIO * typical)
        spans = _transitions(sigs[at], np.flatnonzero(steps >= floor))
        out = []
        for i, j in spans:  # a transition from sampled frame i to sampled frame j
            a, b = at[i], at[j]
            left, right = sigs[a], sigs[b]
            between = sigs[a + 1 : b]
            closer = np.abs(between - right).mean(axis=1) < np.abs(between - left).mean(axis=1)
            k = a + 1 + int(np.argmax(closer)) if closer.any() else b  # first of the new shot
            # Encoders start a new shot with a keyframe: a keyframe there is the cut itself.
            out.append(float(times[k]) if keys[k] else float(times[k - 1] + times[k]) / 2)
        return out


def _transitions(sampled_sigs: np.ndarray, flagged: np.ndarray) -> list[tuple[int, int]]:
    """Flagged steps (i → i+1) as transitions [(first, last)] between sampled frames.

    Two flagged steps in a row are one transition when the frame between them is a blend
    of its neighbours (it was sampled mid-fade: |a−b| + |b−c| ≈ |a−c|), and two cuts when
    it is a shot of its own.
    """
    spans: list[tuple[int, int]] = []
    for i in flagged:
        i = int(i)
        if spans and spans[-1][1] == i:
            first = spans[-1][0]
            a, b, c = sampled_sigs[first], sampled_sigs[i], sampled_sigs[i + 1]
            direct = np.abs(a - c).mean()
            detour = np.abs(a - b).mean() + np.abs(b - c).mean()
            if direct >= BLEND * detour:
                spans[-1] = (first, i + 1)
                continue
        spans.append((i, i + 1))
    return spans
