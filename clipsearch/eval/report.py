"""Write evaluation reports: ``report.json``, ``report.md`` and plots (matplotlib, lazily).

Plots (retrieval): ``recall_at_k.png`` — R@K for K = 1..Kmax per configuration and
direction; ``rank_histogram.png`` — the distribution of ground-truth ranks (log-spaced
bins). Classification: ``per_class_recall.png``. matplotlib is the ``eval`` extra; without
it the JSON and Markdown are still written and ``write_report`` raises
MissingDependencyError only if plots were requested.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from clipsearch.atomic import atomic_write_text
from clipsearch.errors import LibraryError, MissingDependencyError
from clipsearch.eval.runner import ClassificationReport, RetrievalReport

Report = RetrievalReport | ClassificationReport
_DIRECTIONS = (("text_to_media", "text→media"), ("media_to_text", "media→text"))


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def retrieval_markdown(report: RetrievalReport) -> str:
    """A Markdown table: one row per (pooling, reranker), both directions."""
    ks = sorted(report.runs[0].metrics.text_to_media.recall) if report.runs else []
    media = report.kind
    lines = [
        f"# Retrieval: {report.dataset}",
        "",
        f"model `{report.model}` · {report.n_texts} captions · {report.n_media} {media}s"
        + (f" · frames `{report.sampler}`" if report.sampler else "")
        + (f" · softmax τ={report.tau:g}" if report.tau is not None else ""),
        _how_line(report),
        "",
    ]
    head = ["pooling"] if report.kind == "video" else []
    head.append("rerank")
    for _, label in _DIRECTIONS:
        label = label.replace("media", media)
        head += [f"{label} R@{k}" for k in ks] + [f"{label} MdR", f"{label} MnR"]
        head += ["ties", f"R@{ks[0]} ties-random"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for run in report.runs:
        row = [run.pooling or ""] if report.kind == "video" else []
        row.append(run.rerank)
        for attr, _ in _DIRECTIONS:
            m = getattr(run.metrics, attr)
            row += [_fmt(m.recall[k]) for k in ks]
            row += [_fmt(m.median_rank), _fmt(m.mean_rank), str(m.n_tied)]
            row.append(_fmt(m.expected_recall.get(ks[0])))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", _skipped_line(report.skipped.to_dict()), "", f"Note: {report.note}"]
    lines.append(
        "Ranks count candidates scoring strictly higher than the ground truth; "
        "'ties' = ground truths that tie with another candidate (counted as winning the tie); "
        "'ties-random' = the expected R@K if tied candidates were ordered at random."
    )
    return "\n".join(lines) + "\n"


def classification_markdown(report: ClassificationReport) -> str:
    m = report.metrics
    lines = [
        f"# Zero-shot classification: {report.dataset}",
        "",
        f"model `{report.model}` · {m.n} images · {len(report.classnames)} classes · "
        f"{report.n_templates} templates",
        _how_line(report),
        "",
        "| " + " | ".join([*(f"top-{k}" for k in m.top_k), "mean per-class recall", "ties"]) + " |",
        "|" + "---|" * (len(m.top_k) + 2),
        "| "
        + " | ".join(
            [*(_fmt(v) for v in m.top_k.values()), _fmt(m.mean_per_class_recall), str(m.n_tied)]
        )
        + " |",
        "",
        _skipped_line(report.skipped.to_dict()),
    ]
    if report.empty_classes:
        lines.append(f"Classes with no image: {', '.join(report.empty_classes)}")
    return "\n".join(lines) + "\n"


def _how_line(report: Report) -> str:
    """How the numbers were measured: precision, runtime and time taken."""
    total = sum(report.seconds.values())
    return f"precision {report.precision or 'unknown'} · runtime {report.runtime or 'unknown'}" + (
        f" · {total:.1f} s" if total else ""
    )


def _skipped_line(s: dict[str, object]) -> str:
    parts = [
        f"{s['missing_media']} missing media",
        f"{s['undecodable_media']} undecodable",
        f"{s['empty_captions']} empty captions",
        f"{s['duplicate_pairs']} duplicate pairs",
        f"{s['media_without_captions']} media without captions",
    ]
    return "Skipped: " + ", ".join(parts) + "."


def to_markdown(report: Report) -> str:
    if isinstance(report, RetrievalReport):
        return retrieval_markdown(report)
    return classification_markdown(report)


def write_report(report: Report, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write report.json, report.md (and the plots) into ``out_dir``; return the paths.

    Raises LibraryError if the folder cannot be written, MissingDependencyError if plots
    are requested and matplotlib is missing (after writing JSON and Markdown).
    """
    out = Path(out_dir)
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out / "report.json", json.dumps(report.to_dict(), indent=2, ensure_ascii=False)
        )
        atomic_write_text(out / "report.md", to_markdown(report))
    except OSError as e:
        raise LibraryError(f"cannot write the report into {out}: {e}") from e
    written += [out / "report.json", out / "report.md"]
    if plots:
        written += _plots(report, out)
    return written


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("matplotlib", "eval") from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _plots(report: Report, out: Path) -> list[Path]:
    plt = _pyplot()
    paths: list[Path] = []
    if isinstance(report, RetrievalReport):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, (attr, label) in zip(axes, _DIRECTIONS, strict=True):
            all_ranks = [getattr(r.metrics, attr).ranks for r in report.runs]
            # one K range for every run so the curves compare: up to where (nearly) all hit
            kmax = int(min(100, max(10, *(np.percentile(r, 95) for r in all_ranks))))
            k = np.arange(1, kmax + 1)
            for run, ranks in zip(report.runs, all_ranks, strict=True):
                recall = 100.0 * (ranks[None, :] <= k[:, None]).mean(axis=1)
                ax.plot(k, recall, label=run.label)
            ax.set_title(label.replace("media", report.kind))
            ax.set_xlabel("K")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("R@K (%)")
        axes[1].legend(fontsize="small")
        fig.suptitle(report.dataset)
        fig.tight_layout()
        paths.append(out / "recall_at_k.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, (attr, label) in zip(axes, _DIRECTIONS, strict=True):
            top = max(int(getattr(r.metrics, attr).ranks.max()) for r in report.runs)
            bins = np.unique(np.geomspace(1, top + 1, num=min(30, top + 1)).astype(int))
            bins = np.append(bins, bins[-1] + 1) if len(bins) < 2 else bins
            for run in report.runs:
                ax.hist(
                    getattr(run.metrics, attr).ranks, bins=bins, histtype="step", label=run.label
                )
            ax.set_xscale("log")
            ax.set_title(f"{label.replace('media', report.kind)}: ground-truth rank")
            ax.set_xlabel("rank")
        axes[0].set_ylabel("queries")
        axes[1].legend(fontsize="small")
        fig.tight_layout()
        paths.append(out / "rank_histogram.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    else:
        recall = report.metrics.per_class_recall
        order = np.argsort(np.nan_to_num(recall, nan=-1.0))
        if len(order) > 60:  # keep the plot readable: the 30 worst and the 30 best classes
            order = np.concatenate([order[:30], order[-30:]])
        fig, ax = plt.subplots(figsize=(8, max(3, 0.22 * len(order))))
        ax.barh([report.classnames[i] for i in order], np.nan_to_num(recall[order]))
        ax.set_xlabel("recall (%)")
        ax.set_title(f"{report.dataset}: per-class recall")
        fig.tight_layout()
        paths.append(out / "per_class_recall.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
