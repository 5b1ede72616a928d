"""Hubness rerankers: inverted softmax, QB-Norm (dynamic inverted softmax), DBNorm.

In a shared embedding space a few gallery items ("hubs") are close to very many queries
and show up in every result list. These rerankers rescore a query q against a gallery
item g by how much better q matches g than *other* queries (a bank) typically do.
Notation: s(q, g) cosine similarity; B a query bank (captions, or past queries);
β an inverse temperature; LSE the log-sum-exp.

- **Inverted softmax** (Smith et al. 2017, "Offline bilingual word vectors, orthogonal
  transformations and the inverted softmax"; docs/rerank.md)::

      s'(q, g) = s(q, g) − (1/β) · LSE_{b∈B}( β · s(b, g) )

  the log of exp(β s(q,g)) / Σ_b exp(β s(b,g)), divided by β (same ranking per query).
- **QB-Norm, dynamic inverted softmax** (Bogolin et al., CVPR 2022, "Cross Modal
  Retrieval with Querybank Normalisation"; reference code ioanacroi/qb-norm
  ``dynamic_inverted_softmax.py``): the activation set A = {argmax_g s(b, g) : b ∈ B}
  (k=1: the top-1 gallery item of each bank query). The inverted softmax is applied to q
  only if q's raw top-1 lies in A; otherwise q keeps its raw scores. β = 20.
- **DBNorm** (Wang, Jian & Xue, EMNLP 2023, "Balance Act: Mitigating Hubness in
  Cross-Modal Retrieval with Query and Gallery Banks"; reference code
  yimuwangcs/Better_Cross_Modal_Retrieval ``DBNorm/dbnorm.py``): the *dual inverted
  softmax* multiplies a query-bank and a gallery-bank inverted softmax, with a gallery
  bank G_B of items of the gallery's modality::

      DIS(q, g) = exp(β_q s(q,g)) / Σ_{b∈B} exp(β_q s(b,g))
                · exp(β_g s(q,g)) / Σ_{h∈G_B} exp(β_g s(h,g))

  We rank by its log divided by (β_q + β_g), which orders every query's results the same
  and keeps scores in cosine units::

      s'(q, g) = s(q, g) − [ LSE_{b∈B}(β_q s(b,g)) + LSE_{h∈G_B, h≠g}(β_g s(h,g)) ] / (β_q + β_g)

  The *dual dynamic inverted softmax* applies each factor's normaliser only when q's raw
  top-1 lies in that bank's activation set (A_q from B, A_g from G_B), the QB-Norm rule
  per factor. Where a factor is not applied, its numerator exp(β s) stays, so the log form
  simply drops that LSE. (The reference code keeps *raw* cosines in non-activated rows and
  multiplies them, which mixes scales and is not monotone for negative cosines; we keep
  the log-consistent form. Its defaults β_q = 1/1.99, β_g = 3 were tuned for its models'
  score scales; ours are measured, see docs/rerank.md.) Here the gallery bank is a fixed
  random sample of the library itself, and an item never normalises against itself.

Banks for a library are precomputed once (`BankTerms`: a (G,) LSE vector and an
activation mask per bank, over the whole gallery; cached by
`clipsearch.search.banks.BankCache`); a reranked query (`HubnessRescorer`) only gathers
G-vector entries for its candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.search.choices import RERANK_METHODS, RerankMethod
from clipsearch.search.rescore import WidenedDepth

if TYPE_CHECKING:
    from clipsearch.search.hits import Hit
    from clipsearch.search.rescore import Query

METHODS = RERANK_METHODS
DEFAULT_BETA = 20.0  # QB-Norm's inverse temperature for cosine similarities
GALLERY_BANK_SIZE = 2048  # gallery-bank sample for DBNorm (the paper uses a training gallery)
_CHUNK = 16_384  # gallery rows per matrix product while precomputing


# --- matrix forms (evaluation, tests) ---------------------------------------------------------
def bank_lse(bank_sims: np.ndarray, beta: float) -> np.ndarray:
    """LSE_{b}(β · s(b, g)) per gallery column: (B, G) -> (G,) float64. -inf entries are skipped
    (masked pairs); a column with no finite entry gives -inf. Computed in float32 after
    subtracting the column max (exact to ~1e-6 relative; exp is the precompute's hot loop)."""
    x = np.asarray(bank_sims, dtype=np.float32) * np.float32(beta)  # (B, G)
    m = np.max(x, axis=0)  # (G,)
    safe = np.where(np.isfinite(m), m, 0.0).astype(np.float32)
    x -= safe[None, :]
    np.exp(x, out=x)
    with np.errstate(divide="ignore"):
        return safe.astype(np.float64) + np.log(x.sum(axis=0, dtype=np.float64))


def activation_mask(bank_sims: np.ndarray, k: int = 1) -> np.ndarray:
    """(B, G) -> (G,) bool: gallery items among the top-k of at least one bank row (QB-Norm A)."""
    S = np.asarray(bank_sims)
    B, G = S.shape
    mask = np.zeros(G, dtype=bool)
    if B == 0 or G == 0:
        return mask
    k = min(k, G)
    top = np.argpartition(-S, k - 1, axis=1)[:, :k] if k < G else np.tile(np.arange(G), (B, 1))
    rows = np.take_along_axis(S, top, axis=1)
    mask[top[np.isfinite(rows)]] = True
    return mask


def _check(S: np.ndarray, bank: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    S, bank = np.asarray(S), np.asarray(bank)
    if S.ndim != 2 or bank.ndim != 2 or bank.shape[1] != S.shape[1]:
        raise UsageError(
            f"{what}: need S (Q, G) and bank similarities (B, G), got {S.shape} and {bank.shape}"
        )
    if bank.shape[0] == 0:
        raise UsageError(f"{what}: the bank is empty")
    return S, bank


def inverted_softmax(
    S: np.ndarray, bank_sims: np.ndarray, *, beta: float = DEFAULT_BETA
) -> np.ndarray:
    """s'(q,g) = s(q,g) − (1/β)·LSE_b(β s(b,g)).  S: (Q, G); bank_sims: (B, G) -> (Q, G) float32."""
    S, bank_sims = _check(S, bank_sims, "inverted softmax")
    return (S - bank_lse(bank_sims, beta)[None, :] / beta).astype(np.float32)


def dynamic_inverted_softmax(
    S: np.ndarray, bank_sims: np.ndarray, *, beta: float = DEFAULT_BETA, k: int = 1
) -> np.ndarray:
    """QB-Norm: rows whose raw argmax lies in the activation set get the inverted softmax,
    the others keep their raw scores. Shapes as `inverted_softmax`."""
    S, bank_sims = _check(S, bank_sims, "QB-Norm")
    active = activation_mask(bank_sims, k)[np.argmax(S, axis=1)]  # (Q,)
    out = np.asarray(S, dtype=np.float32).copy()
    out[active] = S[active] - bank_lse(bank_sims, beta)[None, :] / beta
    return out


def dual_inverted_softmax(
    S: np.ndarray,
    query_bank_sims: np.ndarray,
    gallery_bank_sims: np.ndarray,
    *,
    beta_q: float = DEFAULT_BETA,
    beta_g: float = DEFAULT_BETA,
    dynamic: bool = False,
    k: int = 1,
) -> np.ndarray:
    """DBNorm in log form (module docstring). query_bank_sims (B, G) and gallery_bank_sims
    (M, G), with -inf where a bank item must not normalise a gallery item (itself).
    dynamic: the dual dynamic inverted softmax (per-factor activation rule)."""
    S, query_bank_sims = _check(S, query_bank_sims, "DBNorm query bank")
    S, gallery_bank_sims = _check(S, gallery_bank_sims, "DBNorm gallery bank")
    lse_q = bank_lse(query_bank_sims, beta_q)  # (G,)
    lse_g = bank_lse(gallery_bank_sims, beta_g)  # (G,)
    lse_g = np.where(np.isfinite(lse_g), lse_g, beta_g * -1.0)  # lone item: as if s = -1
    Q = S.shape[0]
    on_q = np.ones(Q, dtype=bool)
    on_g = np.ones(Q, dtype=bool)
    if dynamic:
        top1 = np.argmax(S, axis=1)
        on_q = activation_mask(query_bank_sims, k)[top1]
        on_g = activation_mask(gallery_bank_sims, k)[top1]
    penalty = on_q[:, None] * lse_q[None, :] + on_g[:, None] * lse_g[None, :]  # (Q, G)
    return (S - penalty / (beta_q + beta_g)).astype(np.float32)


def self_masked(sims: np.ndarray, bank_index: np.ndarray) -> np.ndarray:
    """(M, G) gallery-bank similarities with each bank item's own column set to -inf.
    bank_index: (M,) column of each bank item in the gallery, or -1 if it is not in it."""
    out = np.asarray(sims, dtype=np.float32).copy()
    rows = np.flatnonzero(bank_index >= 0)
    out[rows, bank_index[rows]] = -np.inf
    return out


# --- evaluation hook -------------------------------------------------------------------------------
def eval_rerankers(
    *, beta: float = DEFAULT_BETA, gallery_bank_size: int = GALLERY_BANK_SIZE, seed: int = 0
) -> dict[str, Callable[[np.ndarray, Any], np.ndarray]]:
    """Rerankers for ``clipsearch.eval.rerank.register_reranker``: name -> fn(S, context).

    context: a ``RerankContext`` (queries (Q, D), gallery (G, D), query_bank (B, D) | None).
    Without a query bank, the evaluation's own queries are the bank (transductive; QB-Norm
    §4 shows a separate bank works as well, and docs/rerank.md measures both). The gallery
    bank is the gallery itself (at most ``gallery_bank_size`` items, fixed seed), each item
    masked against itself.
    """

    def query_bank(context: Any) -> np.ndarray:
        gallery = np.asarray(context.gallery, dtype=np.float32)
        qbank = context.query_bank if context.query_bank is not None else context.queries
        return np.asarray(qbank, dtype=np.float32) @ gallery.T  # (B, G)

    def gallery_bank(context: Any) -> np.ndarray:
        gallery = np.asarray(context.gallery, dtype=np.float32)
        idx = _sample(len(gallery), gallery_bank_size, seed)
        return self_masked(gallery[idx] @ gallery.T, idx)  # (M, G)

    def is_(S: np.ndarray, context: Any) -> np.ndarray:
        return inverted_softmax(S, query_bank(context), beta=beta)

    def qbnorm(S: np.ndarray, context: Any) -> np.ndarray:
        return dynamic_inverted_softmax(S, query_bank(context), beta=beta)

    def dbnorm(dynamic: bool) -> Callable[[np.ndarray, Any], np.ndarray]:
        def fn(S: np.ndarray, context: Any) -> np.ndarray:
            return dual_inverted_softmax(
                S,
                query_bank(context),
                gallery_bank(context),
                beta_q=beta,
                beta_g=beta,
                dynamic=dynamic,
            )

        return fn

    return {"is": is_, "qbnorm": qbnorm, "dbnorm": dbnorm(False), "dbnorm-dynamic": dbnorm(True)}


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


# --- precomputed bank terms for a library --------------------------------------------------------
@dataclass(frozen=True)
class BankTerms:
    """Per-gallery-item normalisers, computed once over the whole gallery.

    item_ids: (G,) int64 ascending catalog item ids (images; videos by meanP vector).
    query_lse: (G,) LSE_{b∈B}(β_q s(b, g)); query_active: (G,) bool, g ∈ A_q.
    gallery_lse: (G,) LSE_{h∈G_B, h≠g}(β_g s(h, g)); gallery_active: (G,) bool, g ∈ A_g.
    key: the freshness key it was built for (see `bank_key`).
    """

    item_ids: np.ndarray
    query_lse: np.ndarray
    query_active: np.ndarray
    gallery_lse: np.ndarray
    gallery_active: np.ndarray
    beta_q: float
    beta_g: float
    n_query_bank: int
    n_gallery_bank: int
    key: str = ""

    def rescore(
        self, item_ids: np.ndarray, scores: np.ndarray, *, method: RerankMethod, top1: int
    ) -> np.ndarray:
        """Reranked scores (n,) for candidates ``item_ids`` with raw ``scores``; ``top1`` is the
        query's raw best item (the activation rule). Unknown items keep their raw score."""
        check_method(method)
        scores = np.asarray(scores, dtype=np.float64)
        if method == "none" or len(scores) == 0:
            return scores.astype(np.float32)
        if method.startswith("dbnorm") and self.n_gallery_bank == 0:
            raise UsageError(
                f"{method} needs bank terms built with a gallery bank (gallery_bank_size > 0)"
            )
        pos = np.searchsorted(self.item_ids, item_ids)
        pos = np.minimum(pos, len(self.item_ids) - 1)
        known = self.item_ids[pos] == item_ids  # (n,)
        t = int(np.searchsorted(self.item_ids, top1))
        t_known = t < len(self.item_ids) and self.item_ids[t] == top1
        q_on = method in ("is", "dbnorm") or (t_known and bool(self.query_active[t]))
        g_on = method == "dbnorm" or (
            method == "dbnorm-dynamic" and t_known and bool(self.gallery_active[t])
        )
        if method in ("is", "qbnorm"):
            penalty = self.query_lse[pos] / self.beta_q if q_on else np.zeros(len(pos))
        else:
            penalty = (q_on * self.query_lse[pos] + g_on * self.gallery_lse[pos]) / (
                self.beta_q + self.beta_g
            )
        return np.where(known, scores - penalty, scores).astype(np.float32)

    def save(self, path: Path) -> None:
        """Write to ``path`` (.npz); `BankCache` makes it atomic."""
        arrays = {
            f: getattr(self, f)
            for f in ("item_ids", "query_lse", "query_active", "gallery_lse", "gallery_active")
        }
        meta = np.array(
            [self.beta_q, self.beta_g, self.n_query_bank, self.n_gallery_bank], dtype=np.float64
        )
        with open(path, "wb") as f:
            np.savez(f, meta=meta, key=np.array(self.key), **arrays)

    @classmethod
    def load(cls, path: Path) -> BankTerms:
        with np.load(path) as z:
            meta = z["meta"]
            return cls(
                z["item_ids"], z["query_lse"], z["query_active"], z["gallery_lse"], z["gallery_active"],
                float(meta[0]), float(meta[1]), int(meta[2]), int(meta[3]), str(z["key"]),
            )  # fmt: skip


def check_method(method: str) -> RerankMethod:
    """``method`` if it is one of `METHODS`, else UsageError naming them."""
    if method not in METHODS:
        raise UsageError(f"unknown reranker {method!r}; choose one of {', '.join(METHODS)}")
    return cast(RerankMethod, method)


def build_bank_terms(
    gallery: np.ndarray,
    item_ids: np.ndarray,
    query_bank: np.ndarray,
    *,
    beta_q: float = DEFAULT_BETA,
    beta_g: float = DEFAULT_BETA,
    gallery_bank_size: int = GALLERY_BANK_SIZE,
    seed: int = 0,
    k: int = 1,
    key: str = "",
) -> BankTerms:
    """Precompute `BankTerms` over a gallery (G, D) in chunks of rows.

    query_bank: (B, D) caption embeddings. The gallery bank is a fixed-seed sample of
    ``gallery_bank_size`` gallery rows. Cost: (B + M)·G·D multiply-adds, once.
    Raises UsageError for an empty bank or gallery, or mismatched widths.
    """
    gallery = np.asarray(gallery, dtype=np.float32)
    query_bank = np.asarray(query_bank, dtype=np.float32)
    G = len(gallery)
    if G == 0 or len(query_bank) == 0:
        raise UsageError("reranking needs a non-empty gallery and query bank")
    if query_bank.shape[1] != gallery.shape[1]:
        raise UsageError(
            f"query bank width {query_bank.shape[1]} != gallery width {gallery.shape[1]}"
        )
    if k != 1:
        raise UsageError("library bank terms support the QB-Norm default k=1 only")
    g_idx = _sample(G, gallery_bank_size, seed)
    g_bank = gallery[g_idx]  # (M, D)
    q_lse = np.empty(G, dtype=np.float64)
    g_lse = np.zeros(G, dtype=np.float64)  # stays 0 without a gallery bank
    best_q = np.full((len(query_bank), 2), -np.inf)  # running (score, column) of each bank row
    best_g = np.full((len(g_bank), 2), -np.inf)
    for lo in range(0, G, _CHUNK):
        block = gallery[lo : lo + _CHUNK]  # (c, D)
        sq = query_bank @ block.T  # (B, c)
        q_lse[lo : lo + len(block)] = bank_lse(sq, beta_q)
        pairs = [(best_q, sq)]
        if len(g_bank):
            sg = g_bank @ block.T  # (M, c)
            own = (g_idx >= lo) & (g_idx < lo + len(block))
            sg[np.flatnonzero(own), g_idx[own] - lo] = -np.inf  # never normalise against itself
            g_lse[lo : lo + len(block)] = bank_lse(sg, beta_g)
            pairs.append((best_g, sg))
        for best, s in pairs:
            j = np.argmax(s, axis=1)
            v = s[np.arange(len(s)), j]
            better = v > best[:, 0]
            best[better, 0], best[better, 1] = v[better], j[better] + lo
    g_lse = np.where(np.isfinite(g_lse), g_lse, -beta_g)  # a lone item: as if s = -1
    active_q = np.zeros(G, dtype=bool)
    active_g = np.zeros(G, dtype=bool)
    active_q[best_q[np.isfinite(best_q[:, 0]), 1].astype(np.int64)] = True
    active_g[best_g[np.isfinite(best_g[:, 0]), 1].astype(np.int64)] = True
    order = np.argsort(item_ids, kind="stable")
    return BankTerms(
        item_ids=np.asarray(item_ids, dtype=np.int64)[order],
        query_lse=q_lse[order].astype(np.float32),
        query_active=active_q[order],
        gallery_lse=g_lse[order].astype(np.float32),
        gallery_active=active_g[order],
        beta_q=float(beta_q),
        beta_g=float(beta_g),
        n_query_bank=len(query_bank),
        n_gallery_bank=len(g_idx),
        key=key,
    )


# --- the search hook ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HubnessRescorer(WidenedDepth):
    """A `clipsearch.search.rescore.Rescorer` reranking a search's candidates by hubness.

    Each of the max(widen·(k + offset), 50) raw candidates gets ``terms.rescore`` of its
    raw score (the engine's exact rescoring, filters and video pooling apply as usual),
    with the raw top-1 deciding activation (QB-Norm's rule). terms: the library's
    `BankTerms` (`clipsearch.search.banks.BankCache.terms`).
    """

    terms: BankTerms
    method: RerankMethod

    def __post_init__(self) -> None:
        check_method(self.method)

    def rescore(self, query: Query, hits: Sequence[Hit]) -> np.ndarray:
        ids = np.array([h.item_id for h in hits], dtype=np.int64)
        raw = np.array([h.score for h in hits])
        return self.terms.rescore(ids, raw, method=self.method, top1=hits[0].item_id)


__all__ = [
    "METHODS",
    "BankTerms",
    "HubnessRescorer",
    "RerankMethod",
    "activation_mask",
    "bank_lse",
    "build_bank_terms",
    "dual_inverted_softmax",
    "dynamic_inverted_softmax",
    "eval_rerankers",
    "inverted_softmax",
]
