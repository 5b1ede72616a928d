"""clipsearch.search: from a query to ranked hits, over a catalog, an encoder and an index.

Nothing here knows the `Library` facade, HTTP or the terminal: every function takes its
collaborators (a `Catalog`, an `Encoder`, a `Searcher` or a `VectorIndex` factory).

- ``query``: the query grammar → ``QueryPlan`` (weighted text terms and example files);
- ``compose``: query parts → one vector (the one weighted sum, the plan's terms, text +
  images + liked items as ``QueryParts``, composed image+text by sum or slerp);
- ``engine``: ``Searcher`` — ANN recall, exact rescoring, paging — and ``SearchOptions``;
- ``rescore``: the ``Rescorer`` hook of ``Searcher.search`` (widen, rescore, sort, page);
- ``rerank``: hubness rerankers — the matrix forms, precomputed ``BankTerms``,
  ``HubnessRescorer``;
- ``gap``: the modality-gap correction and ``GapRescorer``;
- ``banks``: the caption bank and ``BankCache`` (a library's bank terms and gap, cached);
- ``video``: frame pooling (mean / max / softmax) and moment localization;
- ``hits``: the result records (``Hit``, ``FrameCurve``);
- ``zeroshot``, ``templates``: prompt-ensemble classifiers and their templates;
- ``classify``: zero-shot labels for files and catalog items, tags;
- ``moderation``: policy files and flags; ``dedup``: exact and near-duplicate groups.

Importing this package imports none of its modules (each is imported on first use).
"""
