"""Shared test doubles: a deterministic colour encoder, a text-table encoder, tiny open_clip
models, test images.

Import from tests: ``from tests.fakes import ColourEncoder, TextTableEncoder, make_image``.
``write_catalog`` fills a catalog straight from images (no ingest), so search-layer code
that takes a catalog is tested without a Library.
Fixtures wrapping these live in tests/conftest.py (fake_encoder, tiny_checkpoint,
tiny_encoder, make_image).

ColourEncoder — what it guarantees (and nothing more)
-----------------------------------------------------
Space: ``dim = 32`` float32, every output row has unit L2 norm. Dimensions:
``[0, 13)`` one axis per palette colour, ``[13, 19)`` text-only hash axes,
``[19, 32)`` image-only content axes.

Images (``preprocess`` = RGB, box-resize to 32x32, scale to [0, 1]):
  colour part  h_c = fraction of the 32x32 pixels whose nearest palette colour is c;
  content part = fixed random projection of the 8x8 thumbnail minus the image's mean
               colour (a low-frequency "layout" signature), times CONTENT_GAIN.
  1. An image whose plurality of pixels is palette colour X scores highest, among texts
     naming one palette colour each, against the texts naming X — whatever else the text
     says ("red", "a photo of something red", "red car" all work). Ties only when two
     colours cover exactly the same pixel count.
  2. Image -> image: every image scores 1.0 against itself. Images from `make_image` with
     different seeds score clearly below that against each other (same colour: at most 0.96
     measured over 13 colours x 10 seeds; different colours: < 0.2), far above fp16 storage
     error, so a query image finds itself first — also after a JPEG re-encode at quality 75
     (self score >= 0.98).
  3. Deterministic: same pixels -> same vector, in any process, on any machine. Small decode
     differences move the vector only slightly (no hashing of pixels).
  4. Works on any RGB PIL image (photos, video frames); ``encode_images([])`` is (0, 32).

Texts:
  5. A text containing palette colour words (whole words, case-insensitive; "grey" = gray)
     maps to the normalised sum of those colours' axes plus a small (0.3) hashed component
     on the text-only axes: texts naming the same colours score identically against every
     image, yet differ from each other.
  6. A text with no colour word maps to a deterministic pseudo-random unit vector (seeded
     by the lower-cased, whitespace-normalised text).

Identity: ``spec = "fake:colour"``, ``fingerprint = "fake-colour-32d-v1"`` (class attributes,
so subclasses can override them), ``logit_scale = 100``, ``context_length = 77``.
Counters ``images_encoded`` / ``texts_encoded`` count rows that reached the model.

TextTableEncoder — texts to hand-written vectors
------------------------------------------------
``TextTableEncoder({"a cat": [2, 0, 0], ...}, logit_scale=10)`` returns, for each text, the
table's vector exactly as written: deliberately *not* unit length, so a test can check by
hand that code which must normalise (prompt ensembles, query composition) does. A text not
in the table raises KeyError naming it; ``calls`` lists the batch size of every
``encode_texts`` call (to check batching). No image tower: ``preprocess`` and
``encode_pixels`` raise NotImplementedError. ``dim`` is the vectors' length; the
fingerprint is derived from the table, so two different tables are two vector spaces.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from clipsearch.models.base import Encoder, l2_normalize

if TYPE_CHECKING:
    from clipsearch.store import Catalog

# --- colour encoder ------------------------------------------------------------------------------
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "orange": (255, 140, 0),
    "purple": (128, 0, 128),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "pink": (255, 150, 200),
    "brown": (140, 80, 20),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
ALIASES = {"grey": "gray"}
_COLOUR_WORD = re.compile(r"\b(" + "|".join([*PALETTE, *ALIASES]) + r")\b", re.IGNORECASE)


class ColourEncoder(Encoder):
    """Deterministic fake encoder: colours map to axes (see the module docstring for guarantees)."""

    spec = "fake:colour"
    fingerprint = "fake-colour-32d-v1"
    dim = 32
    logit_scale = 100.0
    context_length = 77
    precision = "fp32"
    image_size = (32, 32)

    N_COLOURS = len(PALETTE)
    N_TEXT_AXES = 6
    THUMB = 8  # content signature from an 8x8 thumbnail
    CONTENT_GAIN = 10.0
    TEXT_HASH_WEIGHT = 0.3

    def __init__(self) -> None:
        self._palette = np.asarray(list(PALETTE.values()), dtype=np.float32) / 255.0  # (P, 3)
        n_content = self.dim - self.N_COLOURS - self.N_TEXT_AXES
        n_features = 3 * self.THUMB * self.THUMB
        rng = np.random.default_rng(20240601)
        self._projection = (
            rng.standard_normal((n_features, n_content)) / np.sqrt(n_features)
        ).astype(np.float32)  # (F, C)
        self._lock = threading.Lock()
        self.images_encoded = 0
        self.texts_encoded = 0

    # -- images --
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> (3, 32, 32) float32 in [0, 1] (box filter: true area averages)."""
        small = image.convert("RGB").resize(self.image_size[::-1], Image.Resampling.BOX)
        return (np.asarray(small, dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, 32, 32) -> (N, 32): colour histogram axes + content signature, normalised."""
        x = np.asarray(pixels, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, *self.image_size):
            raise ValueError(f"expected (N, 3, 32, 32) pixels, got {x.shape}")
        n = len(x)
        with self._lock:
            self.images_encoded += n
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        flat = x.reshape(n, 3, -1).transpose(0, 2, 1)  # (N, HW, 3)
        dist = ((flat[:, :, None, :] - self._palette[None, None]) ** 2).sum(-1)  # (N, HW, P)
        nearest = dist.argmin(-1)  # (N, HW)
        hist = np.stack([np.bincount(r, minlength=self.N_COLOURS) for r in nearest]).astype(
            np.float32
        )
        hist /= flat.shape[1]  # (N, P) fractions
        t = self.THUMB
        s = self.image_size[0] // t
        thumb = x.reshape(n, 3, t, s, t, s).mean(axis=(3, 5))  # (N, 3, 8, 8)
        thumb -= thumb.mean(axis=(2, 3), keepdims=True)
        content = self.CONTENT_GAIN * (thumb.reshape(n, -1) @ self._projection)  # (N, C)
        text_axes = np.zeros((n, self.N_TEXT_AXES), dtype=np.float32)
        return l2_normalize(np.concatenate([hist, text_axes, content], axis=1))

    # -- texts --
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """N strings -> (N, 32): colour axes for colour words, else a hashed direction."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        with self._lock:
            self.texts_encoded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            key = " ".join(text.lower().split())
            colours = sorted(
                {ALIASES.get(w.lower(), w.lower()) for w in _COLOUR_WORD.findall(text)}
            )
            if not colours:
                out[i] = _unit(_rng(key).standard_normal(self.dim))
                continue
            for c in colours:
                out[i, COLOURS.index(c)] = 1.0
            out[i, : self.N_COLOURS] /= np.linalg.norm(out[i, : self.N_COLOURS])
            hashed = _unit(_rng(key).standard_normal(self.N_TEXT_AXES))
            out[i, self.N_COLOURS : self.N_COLOURS + self.N_TEXT_AXES] = (
                self.TEXT_HASH_WEIGHT * hashed
            )
        return l2_normalize(out)


class DegradedImageEncoder(Encoder):
    """Wraps an encoder and bends its image vectors by ``noise`` (seeded by the batch), the
    way a bad quantization would; texts, preprocessing and identity are the inner encoder's.
    The accuracy gate must refuse it for noise of ~0.1 and up (cosine < 0.99)."""

    def __init__(self, inner: Encoder, noise: float) -> None:
        self.inner, self.noise = inner, noise
        self.spec, self.dim, self.fingerprint = inner.spec, inner.dim, inner.fingerprint
        self.image_size = getattr(inner, "image_size", (224, 224))
        self.label = f"degraded {noise}"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.inner.preprocess(image)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.encode_texts(texts)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        v = self.inner.encode_pixels(pixels)
        rng = np.random.default_rng(len(pixels))
        return l2_normalize(v + self.noise * rng.standard_normal(v.shape).astype(np.float32))


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(
        int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


# --- text-table encoder --------------------------------------------------------------------------
class TextTableEncoder(Encoder):
    """Texts -> the vectors a test wrote down, returned exactly as given (see the module doc).

    table: text -> vector; every vector has the same length, which is ``dim`` (pass ``dim=``
        for an empty table).
    """

    context_length = 77

    def __init__(
        self,
        table: Mapping[str, Sequence[float] | np.ndarray],
        *,
        dim: int | None = None,
        logit_scale: float = 100.0,
    ) -> None:
        self.table = {t: np.asarray(v, dtype=np.float32) for t, v in table.items()}
        widths = {v.shape for v in self.table.values()}
        if len(widths) > 1 or any(len(w) != 1 for w in widths):
            raise ValueError(f"table vectors must be 1-d and of one length, got {widths}")
        if dim is None and not widths:
            raise ValueError("an empty table needs dim=")
        self.dim = int(dim if dim is not None else widths.pop()[0])
        self.logit_scale = float(logit_scale)
        digest = hashlib.sha256()
        for text in sorted(self.table):
            digest.update(text.encode() + b"\0" + self.table[text].tobytes())
        self.spec = "fake:text-table"
        self.fingerprint = f"fake-text-table-{self.dim}d-{digest.hexdigest()[:12]}"
        self.calls: list[int] = []

    def preprocess(self, image: Image.Image) -> np.ndarray:
        raise NotImplementedError("a TextTableEncoder encodes texts only")

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError("a TextTableEncoder encodes texts only")

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """N texts -> (N, dim) float32, the table's rows as written (not normalised)."""
        texts = list(texts)
        self.calls.append(len(texts))
        missing = [t for t in texts if t not in self.table]
        if missing:
            raise KeyError(f"texts not in the table: {missing}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.table[t] for t in texts])


# --- test images ---------------------------------------------------------------------------------
def colour_image(
    colour: str | tuple[int, int, int], size: tuple[int, int] = (64, 48), *, seed: int = 0
) -> Image.Image:
    """An RGB image of ``size`` (W, H), every pixel within 22 levels of ``colour``.

    A smooth seeded pattern (a random 4x3 grid of +-18 offsets, bilinearly upsampled) plus
    +-3 pixel noise makes images of one colour differ (offsets that would leave [0, 255] are
    mirrored inwards, so black and white vary as much as other colours); every pixel keeps
    ``colour`` as its nearest palette colour, so the ColourEncoder sees a solid ``colour``.
    """
    rgb = np.asarray(PALETTE[colour] if isinstance(colour, str) else colour, dtype=np.float32)
    rng = np.random.default_rng(seed)
    w, h = size
    grid = rng.uniform(-18, 18, size=(3, 4, 3)).astype(np.float32)  # (rows, cols, channels)
    smooth = np.stack(
        [
            np.asarray(
                Image.fromarray(grid[:, :, c], mode="F").resize((w, h), Image.Resampling.BILINEAR)
            )
            for c in range(3)
        ],
        axis=-1,
    )  # (H, W, 3)
    offset = smooth + rng.uniform(-3, 3, size=(h, w, 3))
    pixels = rgb + offset
    pixels = np.where((pixels < 0) | (pixels > 255), rgb - offset, pixels)  # reflect inwards
    pixels = np.clip(pixels, 0, 255).round().astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def make_image(
    path: str | Path,
    colour: str | tuple[int, int, int],
    size: tuple[int, int] = (64, 48),
    fmt: str | None = None,
    *,
    seed: int | None = None,
) -> Path:
    """Write `colour_image` to ``path`` and return the path (parents are created).

    fmt: a Pillow format ("JPEG", "PNG", "WEBP"...); default from the suffix, else JPEG.
    seed: pattern seed; default: crc32 of the file name, so files named differently differ.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if seed is None:
        seed = zlib.crc32(path.name.encode())
    if fmt is None:
        fmt = Image.registered_extensions().get(path.suffix.lower(), "JPEG")
    image = colour_image(colour, size, seed=seed)
    kwargs: dict[str, Any] = {"quality": 95} if fmt.upper() in ("JPEG", "WEBP") else {}
    image.save(path, format=fmt, **kwargs)
    return path


# --- catalogs without ingest ---------------------------------------------------------------------
class MemoryVectorSource:
    """Vectors and their metadata held in memory: what the catalog hands the ANN caches
    (`clipsearch.index.IndexCache`, `MilvusCache`), without a catalog. Item ids are 1..n;
    odd ids are images, even ones videos, in 100 folders under /archive."""

    def __init__(
        self, vectors: np.ndarray, *, fingerprint: str = "fake-model", catalog_id: str = "memory"
    ) -> None:
        self.vectors = np.asarray(vectors).astype(np.float16)  # (n, D), as the catalog stores
        self.ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
        self.fingerprint = fingerprint
        self.catalog_id = catalog_id

    def generation(self) -> int:
        return 1

    def vector_ids(self) -> np.ndarray:
        return self.ids

    def fetch_vectors(self, ids: np.ndarray) -> np.ndarray:
        return self.vectors[np.asarray(ids, dtype=np.int64) - 1]

    def tagged_items(self) -> dict[int, tuple[str, ...]]:
        return {}

    def vector_metadata(self, ids: np.ndarray) -> dict[str, list]:
        ids = np.asarray(ids, dtype=np.int64).tolist()
        return {
            "item_id": ids,
            "t": [-1.0] * len(ids),
            "kind": ["image" if i % 2 else "video" for i in ids],
            "path": [f"/archive/{i % 100:02d}/{i}.jpg" for i in ids],
            "size": [100_000 + i for i in ids],
            "mtime_ns": [i * 10**9 for i in ids],
            "root": ["/archive"] * len(ids),
            "tags": [[] for _ in ids],
        }


def write_catalog(
    folder: str | Path,
    encoder: Encoder,
    items: Mapping[str, Image.Image | Sequence[Image.Image]],
    *,
    frame_step: float = 0.5,
    fields: Mapping[str, Mapping[str, Any]] | None = None,
) -> Catalog:
    """Open a catalog in ``folder`` bound to ``encoder`` and write ``items`` into it directly.

    items: path -> one image (an image item: its vector), or a list of frames (a video item:
    one vector per frame, ``frame_step`` seconds apart, plus the meanP vector). Items get
    ids 1, 2, ... in this order. Size, width, height (from the first image), mtime and
    content hash ("h:<path>") are derived; ``fields[path]`` overrides any `ItemWrite` field.
    """
    from clipsearch.search.video import meanp
    from clipsearch.store import Catalog, ItemWrite, ModelBinding

    catalog = Catalog.open(folder)
    catalog.bind_model(ModelBinding(encoder.spec, encoder.fingerprint, encoder.dim))
    writes = []
    for n, (path, media) in enumerate(items.items()):
        frames = [media] if isinstance(media, Image.Image) else list(media)
        vectors = encoder.encode_images(frames)  # (F, D)
        kw: dict[str, Any] = {
            "kind": "image",
            "size": frames[0].width * frames[0].height,
            "mtime_ns": (1_700_000_000 + n) * 10**9,
            "content_hash": f"h:{path}",
            "width": frames[0].width,
            "height": frames[0].height,
        }
        if not isinstance(media, Image.Image):
            ts = np.arange(len(frames)) * frame_step  # (F,)
            kw.update(kind="video", duration=len(frames) * frame_step)
            kw.update(
                vectors=np.vstack([vectors, meanp(vectors)]), timestamps=np.append(ts, np.nan)
            )
        else:
            kw.update(vectors=vectors)
        kw.update((fields or {}).get(path, {}))
        writes.append(ItemWrite(path=path, root_id=None, status="ok", **kw))
    catalog.write_items(writes)
    return catalog


# --- tiny open_clip models -----------------------------------------------------------------------
MODEL_CONFIG_DIR = Path(__file__).parent / "data" / "model_configs"
TINY_ARCHS: tuple[str, ...] = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))


def tiny_model_config(name: str = "tiny-vit") -> dict[str, Any]:
    """The open_clip config of a tiny test architecture (tests/data/model_configs/NAME.json).

    tiny-vit: ViT, 32x32 input, patch 8, width 64, 2 layers; text width 32, context 32;
        embed_dim 32 (~2 M parameters, mostly the 49408-token embedding).
    tiny-vit-wide: 48x32 (H x W) input, width 96; embed_dim 48; context 24 — a different
        architecture whose tensors do not fit tiny-vit (and vice versa).
    """
    return json.loads((MODEL_CONFIG_DIR / f"{name}.json").read_text())


def register_tiny_models() -> tuple[str, ...]:
    """Register the tiny configs with open_clip (public ``add_model_config``); idempotent."""
    import open_clip

    if not set(TINY_ARCHS) <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    return TINY_ARCHS


def make_tiny_model(arch: str = "tiny-vit", *, seed: int = 0) -> Any:
    """A randomly initialised open_clip model (fp32, eval mode); same seed -> same weights.

    The global torch RNG is left untouched.
    """
    import open_clip
    import torch

    register_tiny_models()
    with torch.random.fork_rng(devices=[]), _quiet_root_logging():
        torch.manual_seed(seed)
        model = open_clip.create_model(arch)
    return model.eval()


def make_tiny_checkpoint(
    path: str | Path,
    *,
    arch: str = "tiny-vit",
    seed: int = 0,
    base_spec: str | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write a clipsearch checkpoint of `make_tiny_model` (``arch``, ``seed``) to ``path``.

    A bare-path spec loads it anywhere, e.g. in a subprocess with nothing registered.
    """
    from clipsearch.models import save_checkpoint

    model = make_tiny_model(arch, seed=seed)
    return save_checkpoint(
        model, path, arch=arch, model_cfg=tiny_model_config(arch), base_spec=base_spec, extra=extra
    )


def write_tiny_weights(path: str | Path, *, arch: str = "tiny-vit", seed: int = 0) -> Path:
    """Write plain weights (no clipsearch header) for ``ARCH@path`` specs.

    The suffix picks the format: ``.safetensors``, else a ``torch.save`` state dict.
    """
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in make_tiny_model(arch, seed=seed).state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@contextmanager
def _quiet_root_logging() -> Iterator[None]:
    # open_clip's logging.warning("...initialized randomly") would configure a stderr handler.
    root = logging.getLogger()
    parked = logging.NullHandler() if not root.handlers else None
    if parked:
        root.addHandler(parked)
    try:
        yield
    finally:
        if parked:
            root.removeHandler(parked)
