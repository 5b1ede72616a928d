"""Text queries that also match the text read in pictures (OCR): rank fusion and matches.

A text query is matched twice: by the model (cosine of the query and item vectors) and
against the text read in the pictures (store/texts.py: squashed substring matching over an
FTS5 trigram index). `TextFusion` is the `Rescorer` that joins the two rankings:

- its ``candidates`` are the best text matches, so a picture whose text matches is
  ranked even when the model did not recall it;
- ``rescore`` fuses, for every candidate d, the model's order with the text order;
- ``relevant`` vouches for the pictures whose text holds every query term (coverage 1):
  the relevance cut (search/relevance.py) marks them relevant whatever the model's score.

Query terms (`query_terms`): the words of the query's positive text terms, squashed,
three characters or longer (what a trigram index can look up), without a few function
words ("a", "the", "photo of"…), plus its quoted phrases. A text row's coverage m ∈ [0, 1]
is the share of the terms' characters it contains; an item's text rank orders items by
coverage, then bm25.

Fusions (``method``; measured on a synthetic set in docs/ocr.md):

- ``rrf`` — reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009):
  s(d) = 1 / (k + r_model(d)) + 1 / (k + r_text(d)), k = 60; the second term is 0 for
  an item whose text does not match;
- ``sum`` — a calibrated sum: s(d) = c(d) + λ · σ · m(d), c the model's score, σ the
  standard deviation of c over the candidates (the query's own spread, so λ means the
  same for every model and query), λ = ``weight``. Scores stay in the model's units.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from clipsearch.search.rescore import Query, Rescorer, widened
from clipsearch.store.texts import MIN_TERM, TextMatch, squash

if TYPE_CHECKING:
    from clipsearch.search.hits import Hit
    from clipsearch.search.query import QueryPlan
    from clipsearch.store.texts import TextStore

FusionMethod = Literal["rrf", "sum"]
FUSION_METHODS: tuple[FusionMethod, ...] = get_args(FusionMethod)
DEFAULT_FUSION: FusionMethod = "rrf"  # measured: docs/ocr.md
RRF_K = 60  # Cormack et al.'s constant
DEFAULT_WEIGHT = 3.0  # λ of the calibrated sum, in standard deviations of the model's scores
MIN_SPREAD = 1e-3  # σ floor (a flat candidate list)
FULL_COVERAGE = 1.0 - 1e-9  # a text with every query term: relevant whatever the model says

# Words that say what the picture is, not what it reads; never looked up in its text.
STOP_WORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was "  # noqa: SIM905
    "with photo photos picture pictures image images text word words written saying says "
    "reading reads sign".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


def query_terms(plan: QueryPlan | None) -> tuple[str, ...]:
    """The squashed terms a query looks for in pictures' text (module docstring)."""
    if plan is None:
        return ()
    words = [
        squash(w)
        for t in plan.terms
        if t.kind == "text" and t.weight > 0
        for w in _WORD.findall(t.value)
        if w.casefold() not in STOP_WORDS
    ]
    terms = [*words, *(squash(p) for p in plan.phrases)]
    return tuple(dict.fromkeys(t for t in terms if len(t) >= MIN_TERM))


@dataclass
class TextFusion:
    """`Rescorer` fusing the model's ranking with the text match (module docstring).

    texts: the catalog's text store. method: "rrf" or "sum". weight: λ of "sum".
    inner: another rescorer (hubness, gap) whose scores are the model side.
    sources: the text sources matched (empty: all).
    """

    texts: TextStore
    method: FusionMethod = DEFAULT_FUSION
    weight: float = DEFAULT_WEIGHT
    inner: Rescorer | None = None
    sources: tuple[str, ...] = ()
    _ranked: dict[tuple[tuple[str, ...], int], list[TextMatch]] = field(
        default_factory=dict, repr=False
    )

    def depth(self, need: int) -> int:
        return max(widened(need), self.inner.depth(need) if self.inner else 0)

    def candidates(self, query: Query, depth: int) -> list[int]:
        """The ``depth`` best text matches."""
        return [m.item_id for m in self._ranking(query_terms(query.plan), depth)[:depth]]

    def rescore(self, query: Query, hits: Sequence[Hit]) -> np.ndarray:
        model = np.array([h.score for h in hits], dtype=np.float64)  # (N,)
        if self.inner is not None:
            model = np.asarray(self.inner.rescore(query, hits), dtype=np.float64)
        terms = query_terms(query.plan)
        if not terms:
            return model
        ranking = self._ranking(terms, len(hits))
        found = {m.item_id: m for m in ranking}
        missing = [h.item_id for h in hits if h.item_id not in found]
        late = self.texts.best_rows(missing, terms, sources=self.sources) if missing else {}
        # Matches past the ranking's row limit rank after it, by coverage.
        order = ranking + sorted(late.values(), key=lambda m: (-m.coverage, m.item_id))
        text_rank = {m.item_id: r for r, m in enumerate(order, start=1)}
        coverage = {m.item_id: m.coverage for m in order}
        ids = [h.item_id for h in hits]
        if self.method == "rrf":
            model_rank = np.empty(len(hits))
            model_rank[np.lexsort((ids, -model))] = np.arange(1, len(hits) + 1)
            text = np.array([1 / (RRF_K + text_rank[i]) if i in text_rank else 0.0 for i in ids])
            return 1 / (RRF_K + model_rank) + text
        spread = max(float(np.std(model)), MIN_SPREAD) if len(model) > 1 else MIN_SPREAD
        m = np.array([coverage.get(i, 0.0) for i in ids])
        return model + self.weight * spread * m

    def relevant(self, query: Query, hits: Sequence[Hit]) -> list[bool]:
        """True for the hits whose text holds every term the query looks for (coverage 1:
        "a sign saying pizza" and a picture reading PIZZA), whatever the model's score."""
        terms = query_terms(query.plan)
        if not terms or not hits:
            return [False] * len(hits)
        best = self.texts.best_rows([h.item_id for h in hits], terms, sources=self.sources)
        return [h.item_id in best and best[h.item_id].coverage >= FULL_COVERAGE for h in hits]

    def _ranking(self, terms: tuple[str, ...], depth: int) -> list[TextMatch]:
        if not terms:
            return []
        key = (terms, depth)
        if key not in self._ranked:
            self._ranked[key] = self.texts.matches(
                terms, limit=max(10 * depth, 1000), sources=self.sources
            )
        return self._ranked[key]


def with_text_matches(
    hits: Sequence[Hit], texts: TextStore, terms: Sequence[str], *, sources: Sequence[str] = ()
) -> list[Hit]:
    """``hits`` with ``text_match`` set on those whose text contains one of ``terms``
    (`query_terms`)."""
    if not terms or not hits:
        return list(hits)
    best = texts.best_rows([h.item_id for h in hits], terms, sources=sources)
    return [replace(h, text_match=best[h.item_id]) if h.item_id in best else h for h in hits]


def match_spans(text: str, terms: Sequence[str]) -> list[tuple[int, int]]:
    """Where the squashed ``terms`` occur in ``text`` as read: sorted, merged [start, end)
    character spans, e.g. ("HAPPY BIRTHDAYANNA", ["birthday"]) -> [(6, 14)]."""
    owner: list[int] = []  # squashed character -> index of the text character it came from
    for j, c in enumerate(text):
        owner.extend([j] * len(squash(c)))
    body = squash(text)
    if len(body) != len(owner):  # a character squashing differently in context: no spans
        return []
    spans = []
    for term in terms:
        start = body.find(term)
        while start >= 0 and term:
            spans.append((owner[start], owner[start + len(term) - 1] + 1))
            start = body.find(term, start + 1)
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged
