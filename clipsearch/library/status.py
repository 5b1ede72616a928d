"""What `clipsearch status` shows: the model binding, counts, failures, text reading and
the image-encoder runtime of one library."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.store import Catalog
from clipsearch.store.texts import CAPTION


@dataclass(frozen=True)
class LibraryStatus:
    """What `clipsearch status` shows."""

    path: str
    model: str | None
    fingerprint: str | None
    dim: int | None
    stats: dict[str, Any]
    failures: list[dict[str, str]] = field(default_factory=list)
    ocr: dict[str, Any] = field(default_factory=dict)  # text reading: settings and coverage
    runtime: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        st = self.stats
        return {
            "library": self.path,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "items": st.get("items"),  # {"total", "ok", "failed", "by_kind": {kind: {status: n}}}
            "vectors": st.get("vectors"),
            "frames": st.get("frames"),
            "roots": st.get("roots"),
            "generation": st.get("generation"),
            "schema_version": st.get("schema_version"),
            "db_bytes": st.get("db_bytes"),
            # ok items by where their capture time came from: {"exif", "container", "mtime",
            # "unread"} (unread: indexed before capture times were recorded; mtime stands in)
            "capture_times": st.get("capture_times"),
            # {"enabled", "frames", "by_kind": {kind: {"items", "read", "with_text"}}, "texts"}
            "ocr": self.ocr,
            # {"by_kind": {kind: {"items", "read", "with_text"}}, "texts"}: BLIP captions
            "captions": st.get("captions"),
            "failures": self.failures,
            # {"runtime", "quantize", "builds": [{runtime, precision, built_at, gate}]}
            "runtime": self.runtime,
        }


def library_status(
    path: Path, catalog: Catalog, *, runtime: dict[str, Any], failures: int | None
) -> LibraryStatus:
    """The status of the library at ``path``; ``runtime`` as `LibraryRuntime.info` gives it,
    ``failures`` how many failed files to list (None: all)."""
    binding = catalog.model_binding()
    fails = [
        {"path": r.path, "kind": r.kind, "error": r.error or ""}
        for r in catalog.failures(limit=failures)
    ]
    return LibraryStatus(
        path=str(path),
        model=binding.spec if binding else None,
        fingerprint=binding.fingerprint if binding else None,
        dim=binding.dim if binding else None,
        stats={**catalog.stats(), "captions": catalog.texts.coverage(CAPTION)},
        failures=fails,
        ocr=_text_status(catalog),
        runtime=runtime,
    )


def _text_status(catalog: Catalog) -> dict[str, Any]:
    texts = catalog.texts
    settings = texts.settings()
    return {"enabled": settings.ocr, "frames": settings.ocr_frames, **texts.coverage()}
