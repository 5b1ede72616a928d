"""clipsearch.eval: retrieval and zero-shot benchmarks with the field's standard protocols.

    from clipsearch.eval import load_retrieval, evaluate_retrieval, write_report
    ds = load_retrieval("dataset_flickr30k.json", "flickr30k/images", split="test")
    report = evaluate_retrieval(ds, encoder, cache_dir="~/.cache/clipsearch/eval-cache")
    write_report(report, "out/")

See docs/eval.md for the conventions (ranks, ties, the video→text variant) and how the
numbers relate to CLIP_benchmark and CLIP4Clip. The core never imports this package.

The names below load their module on first use, so importing one submodule (the command
line reads the value sets of ``datasets`` and ``synthetic``) does not import the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipsearch.lazy import lazy_names

if TYPE_CHECKING:
    from clipsearch.eval.datasets import (
        ClassificationDataset,
        RetrievalDataset,
        Skipped,
        load_class_folders,
        load_retrieval,
        load_webdataset,
    )
    from clipsearch.eval.embed import EmbeddingCache, default_cache_dir
    from clipsearch.eval.metrics import (
        ClassificationMetrics,
        RankMetrics,
        RetrievalMetrics,
        classification_metrics,
        media_to_text_ranks,
        retrieval_metrics,
        text_to_media_ranks,
    )
    from clipsearch.eval.report import write_report
    from clipsearch.eval.rerank import RerankContext, Reranker, register_reranker
    from clipsearch.eval.runner import (
        ClassificationReport,
        RetrievalReport,
        evaluate_classification,
        evaluate_retrieval,
    )

_LAZY = {
    **dict.fromkeys(
        (
            "ClassificationDataset",
            "RetrievalDataset",
            "Skipped",
            "load_class_folders",
            "load_retrieval",
            "load_webdataset",
        ),
        "clipsearch.eval.datasets",
    ),
    **dict.fromkeys(("EmbeddingCache", "default_cache_dir"), "clipsearch.eval.embed"),
    **dict.fromkeys(
        (
            "ClassificationMetrics",
            "RankMetrics",
            "RetrievalMetrics",
            "classification_metrics",
            "media_to_text_ranks",
            "retrieval_metrics",
            "text_to_media_ranks",
        ),
        "clipsearch.eval.metrics",
    ),
    "write_report": "clipsearch.eval.report",
    **dict.fromkeys(("RerankContext", "Reranker", "register_reranker"), "clipsearch.eval.rerank"),
    **dict.fromkeys(
        (
            "ClassificationReport",
            "RetrievalReport",
            "evaluate_classification",
            "evaluate_retrieval",
        ),
        "clipsearch.eval.runner",
    ),
}


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "ClassificationDataset",
    "ClassificationMetrics",
    "ClassificationReport",
    "EmbeddingCache",
    "RankMetrics",
    "RerankContext",
    "Reranker",
    "RetrievalDataset",
    "RetrievalMetrics",
    "RetrievalReport",
    "Skipped",
    "classification_metrics",
    "default_cache_dir",
    "evaluate_classification",
    "evaluate_retrieval",
    "load_class_folders",
    "load_retrieval",
    "load_webdataset",
    "media_to_text_ranks",
    "register_reranker",
    "retrieval_metrics",
    "text_to_media_ranks",
    "write_report",
]
