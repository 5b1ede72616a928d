"""The caption bank and a library's cached bank terms (hubness rerankers, modality gap).

The query bank is a list of captions: the one shipped in ``search/data/captions.txt``
(everyday scenes), or a user's own query log. The gallery is every item-level vector of
the library (images; videos by their meanP vector).

`BankCache` computes, from a catalog, an encoder and the caption bank, the terms the
rescorers need and keeps them

- in memory, stamped with the catalog generation they were valid at (a query then costs
  one generation read instead of hashing every vector id again), and
- on disk under ``folder`` (``<library>/rerank/``), keyed by the vector state (model
  fingerprint + the catalog's set of vector ids; ids are never reused, so the id set pins
  the vectors and tagging does not invalidate them) and the parameters. Files of an older
  state are removed when a new one is written; where the folder is not writable (a
  read-only library) the terms are kept in memory only.

What is cached: `BankTerms` for `clipsearch.search.rerank` (``bank-<state>-<params>.npz``),
the `ModalityGap` for `clipsearch.search.gap` (``gap-<state>-<captions>.npz``) and the
caption embeddings (``captions-<model+captions>.npy``).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from clipsearch.atomic import atomic_write
from clipsearch.errors import UsageError
from clipsearch.search.gap import ModalityGap, estimate_gap
from clipsearch.search.rerank import (
    DEFAULT_BETA,
    GALLERY_BANK_SIZE,
    BankTerms,
    build_bank_terms,
)

if TYPE_CHECKING:
    from clipsearch.models.base import Encoder
    from clipsearch.store import Catalog

T = TypeVar("T")


# --- the caption bank ----------------------------------------------------------------------------
def default_captions() -> list[str]:
    """The caption bank shipped with clipsearch (search/data/captions.txt): everyday scenes."""
    text = resources.files("clipsearch.search").joinpath("data/captions.txt").read_text("utf-8")
    return read_caption_lines(text.splitlines())


def read_caption_lines(lines: Sequence[str]) -> list[str]:
    """Strip lines, drop blanks and ``#`` comments, keep the first of repeated captions."""
    seen: dict[str, None] = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            seen.setdefault(line, None)
    return list(seen)


def load_captions(path: str | Path | None) -> list[str]:
    """Captions from a text file (one per line, e.g. a query log), or the shipped bank for None.
    Raises UsageError for an unreadable or empty file."""
    if path is None:
        return default_captions()
    p = Path(path).expanduser()
    try:
        captions = read_caption_lines(p.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the query bank {p}: {e}") from e
    if not captions:
        raise UsageError(f"the query bank {p} has no captions (one per line)")
    return captions


def caption_vectors(
    encoder: Encoder, captions: Sequence[str], *, cache_dir: Path | None = None
) -> np.ndarray:
    """(B, D) embeddings of ``captions``, cached in ``cache_dir`` per model and caption set
    (not saved when the folder is not writable)."""
    digest = _digest(encoder.fingerprint, "\n".join(captions))
    path = cache_dir / f"captions-{digest}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            vecs = np.load(path)
            if vecs.shape == (len(captions), encoder.dim):
                return vecs
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt
    vecs = np.concatenate(
        [encoder.encode_texts(list(captions[i : i + 256])) for i in range(0, len(captions), 256)]
    ).astype(np.float32)
    if path is not None:
        _try_save(path, lambda tmp: _save_npy(tmp, vecs))
    return vecs


# --- a library's cached terms ------------------------------------------------------------------
class BankCache:
    """Bank terms and the modality gap of one library, computed once per vector state.

    catalog: the library's catalog (gallery vectors, generation, vector ids).
    encoder: the library's model (caption embeddings, fingerprint).
    folder: where the terms are saved (``<library>/rerank``); need not be writable.

    Thread-safe; the library owns one and keeps it for its lifetime.
    """

    def __init__(self, catalog: Catalog, encoder: Encoder, folder: Path) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.folder = Path(folder)
        self._memo: dict[str, tuple[int, Any]] = {}
        self._lock = threading.Lock()

    def gallery(self) -> tuple[np.ndarray, np.ndarray]:
        """(item_ids (G,) int64, vectors (G, D) float32) of every item-level vector."""
        table = self.catalog.load_vectors()
        rows = np.isnan(table.timestamps)
        return table.item_ids[rows].astype(np.int64), table.vectors[rows].astype(np.float32)

    def state_key(self) -> str:
        """The vector state: model fingerprint + a hash of the catalog's vector ids."""
        ids = np.ascontiguousarray(self.catalog.vector_ids(), dtype="<i8")
        return _digest(
            self.encoder.fingerprint, hashlib.blake2b(ids.tobytes(), digest_size=16).hexdigest()
        )

    def captions(self, captions: Sequence[str] | None = None) -> np.ndarray:
        """(B, D) embeddings of ``captions`` (default: the shipped bank), cached in ``folder``."""
        bank = list(captions) if captions is not None else default_captions()
        return caption_vectors(self.encoder, bank, cache_dir=self.folder)

    def terms(
        self,
        *,
        captions: Sequence[str] | None = None,
        beta_q: float = DEFAULT_BETA,
        beta_g: float = DEFAULT_BETA,
        gallery_bank_size: int = GALLERY_BANK_SIZE,
    ) -> BankTerms:
        """The library's `BankTerms` (``clipsearch.search.rerank``), remembered, loaded from
        ``folder`` or built and saved there.

        captions: the query bank (default: the shipped caption bank). gallery_bank_size: 0
        skips the gallery bank (enough for is / qbnorm). Raises UsageError for an empty
        library.
        """
        bank = list(captions) if captions is not None else default_captions()
        params = _digest("\n".join(bank), f"{beta_q:g}/{beta_g:g}/{gallery_bank_size}")

        def load(path: Path, key: str) -> BankTerms | None:
            terms = BankTerms.load(path)
            return terms if terms.key == key else None

        def build(key: str) -> BankTerms:
            item_ids, vectors = self.gallery()
            if len(item_ids) == 0:
                raise UsageError(f"library {self.catalog.path} has no indexed items to rerank")
            return build_bank_terms(
                vectors,
                item_ids,
                caption_vectors(self.encoder, bank, cache_dir=self.folder),
                beta_q=beta_q,
                beta_g=beta_g,
                gallery_bank_size=gallery_bank_size,
                key=key,
            )

        return self._cached("bank", params, load, build, BankTerms.save)

    def gap(self, *, captions: Sequence[str] | None = None) -> ModalityGap:
        """The library's `ModalityGap` (``clipsearch.search.gap``): its item vectors against
        the caption bank, remembered, loaded from ``folder`` or computed and saved there.
        Raises UsageError for a library without indexed items."""
        bank = list(captions) if captions is not None else default_captions()

        def load(path: Path, key: str) -> ModalityGap:
            with np.load(path) as z:
                return ModalityGap(z["image_mean"], z["text_mean"])

        def build(key: str) -> ModalityGap:
            _, vectors = self.gallery()
            if len(vectors) == 0:
                raise UsageError(
                    f"library {self.catalog.path} has no indexed items: no image cloud to correct"
                )
            return estimate_gap(vectors, caption_vectors(self.encoder, bank, cache_dir=self.folder))

        def save(gap: ModalityGap, path: Path) -> None:
            _save_npz(path, image_mean=gap.image_mean, text_mean=gap.text_mean)

        return self._cached("gap", _digest(*bank), load, build, save)

    # -- memory and disk ------------------------------------------------------------------------
    def _cached(
        self,
        prefix: str,
        params: str,
        load: Callable[[Path, str], T | None],
        build: Callable[[str], T],
        save: Callable[[T, Path], None],
    ) -> T:
        """Remembered value, else the file ``<prefix>-<state>-<params>`` (if it loads and
        ``load`` accepts it), else ``build(key)`` saved there (older states pruned)."""
        name = f"{prefix}-{params}"
        with self._lock:
            hit = self._memo.get(name)
        if hit is not None and hit[0] == self.catalog.generation():
            return hit[1]
        state = self.state_key()
        key = f"{state}-{params}"
        path = self.folder / f"{prefix}-{key}.npz"
        value: T | None = None
        if path.is_file():
            try:
                value = load(path, key)
            except (OSError, ValueError, KeyError):
                value = None  # damaged: rebuild
        if value is None:
            value = build(key)
            if _try_save(path, lambda p: save(value, p)):
                _prune(self.folder, f"{prefix}-", keep=f"{prefix}-{state}-")
        # Stamped with the generation read *now*: a change after the state key was computed
        # only makes the next call recompute (a value is never kept past a change).
        generation = self.catalog.generation()
        with self._lock:
            self._memo[name] = (generation, value)
        return value


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _try_save(path: Path, write: Callable[[Path], None]) -> bool:
    """`atomic_write` into ``path``'s folder (created if missing); False when the folder is
    not writable (a read-only library: the value is recomputed next time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError:
        return False
    return True


def _prune(folder: Path, prefix: str, *, keep: str) -> None:
    """Remove ``prefix*`` files of ``folder`` not starting with ``keep`` (an older state)."""
    for old in folder.glob(f"{prefix}*"):
        if not old.name.startswith(keep):
            with contextlib.suppress(OSError):
                old.unlink()


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()
