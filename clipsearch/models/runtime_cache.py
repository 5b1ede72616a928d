"""Built image encoders (exported, maybe quantized) cached inside a library.

One entry per `BuildKey` (model fingerprint + runtime + precision) in ``<library>/runtime/``:

    <key>.json           the commit record: key, recipe, versions, file names and sizes,
                         and the accuracy gate's figures once measured
    <key>-<build>.xml    OpenVINO IR written by that build
    <key>-<build>.bin

Crash safety: the model files are written first (each with `clipsearch.atomic.atomic_write`,
under names unique to the build), the record last. A record names only complete files, so a
build killed at any instant leaves either the previous entry or none, never half of one;
files no record names (and temporary files) are swept by the next build.

An entry is stale, and rebuilt, when its record is missing or damaged, a file is missing or
has another size, or it was made by another export recipe or OpenVINO version.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.atomic import TMP_PREFIX, atomic_write, atomic_write_text

# Bump when the export or quantization recipe changes: older entries are then rebuilt.
RECIPE_VERSION = "1"
FORMAT = 1


@dataclass(frozen=True)
class BuildKey:
    """What a built encoder is: a model (fingerprint), a runtime and a precision."""

    fingerprint: str
    runtime: str  # "openvino"
    precision: str  # "fp32" | "bf16" | "int8"

    @property
    def name(self) -> str:
        return f"{self.fingerprint}-{self.runtime}-{self.precision}"


@dataclass
class CacheEntry:
    """A complete cached build. ``gate`` holds the accuracy gate's figures (None until
    measured); ``info`` holds what the builder recorded (calibration size, timings...)."""

    key: BuildKey
    xml: Path
    bin: Path
    versions: dict[str, str]
    built_at: float
    info: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "recipe": RECIPE_VERSION,
            "key": {
                "fingerprint": self.key.fingerprint,
                "runtime": self.key.runtime,
                "precision": self.key.precision,
            },
            "files": {"xml": self.xml.name, "bin": self.bin.name},
            "sizes": {"xml": self.xml.stat().st_size, "bin": self.bin.stat().st_size},
            "versions": self.versions,
            "built_at": self.built_at,
            "info": self.info,
            "gate": self.gate,
        }


class RuntimeCache:
    """The folder of built encoders (``<library>/runtime``). Not safe for two processes
    building the same key at once; the loser's files are swept as orphans."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _record_path(self, key: BuildKey) -> Path:
        return self.folder / f"{key.name}.json"

    def lookup(self, key: BuildKey, versions: dict[str, str]) -> CacheEntry | None:
        """The complete, current entry for ``key``, or None (missing, damaged or stale)."""
        entry = self._read(self._record_path(key))
        if entry is None or entry.key != key or entry.versions != versions:
            return None
        return entry

    def entries(self) -> list[CacheEntry]:
        """Every readable entry (current or not), newest first: what `status` shows."""
        if not self.folder.is_dir():
            return []
        found = [
            self._read(p) for p in self.folder.glob("*.json") if not p.name.startswith(TMP_PREFIX)
        ]
        return sorted((e for e in found if e is not None), key=lambda e: -e.built_at)

    def store(
        self,
        key: BuildKey,
        write: Callable[[Path], None],
        *,
        versions: dict[str, str],
        info: dict[str, Any] | None = None,
    ) -> CacheEntry:
        """Build an entry: ``write(xml_path)`` writes the IR (xml + same-stem .bin) into a
        scratch folder; the files are then committed atomically, the record last.
        OSError propagates (a full disk leaves the previous entry, if any, intact)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sweep()
        build = secrets.token_hex(4)
        scratch = self.folder / f"{TMP_PREFIX}{build}"
        scratch.mkdir()
        try:
            write(scratch / "model.xml")
            xml = self.folder / f"{key.name}-{build}.xml"
            bin_ = self.folder / f"{key.name}-{build}.bin"
            atomic_write(bin_, lambda p: os.replace(scratch / "model.bin", p))
            atomic_write(xml, lambda p: os.replace(scratch / "model.xml", p))
            entry = CacheEntry(key, xml, bin_, dict(versions), time.time(), dict(info or {}))
            self._commit(entry)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.sweep()
        return entry

    def record_gate(self, entry: CacheEntry, gate: dict[str, Any]) -> CacheEntry:
        """Store the accuracy gate's figures with ``entry`` (atomically)."""
        entry.gate = dict(gate)
        self._commit(entry)
        return entry

    def sweep(self) -> None:
        """Remove temporary files and model files no record names (left by killed builds)."""
        if not self.folder.is_dir():
            return
        named: set[str] = set()
        for rec in self.folder.glob("*.json"):
            entry = self._read(rec)
            if entry is not None:
                named.update((entry.xml.name, entry.bin.name, rec.name))
        for p in self.folder.iterdir():
            if p.name in named:
                continue
            if p.name.startswith(TMP_PREFIX) or p.suffix in (".xml", ".bin", ".json"):
                with contextlib.suppress(OSError):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()

    def _commit(self, entry: CacheEntry) -> None:
        atomic_write_text(self._record_path(entry.key), json.dumps(entry.record(), indent=1) + "\n")

    def _read(self, path: Path) -> CacheEntry | None:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            if rec.get("format") != FORMAT or rec.get("recipe") != RECIPE_VERSION:
                return None
            key = BuildKey(**rec["key"])
            xml = self.folder / rec["files"]["xml"]
            bin_ = self.folder / rec["files"]["bin"]
            if (
                xml.stat().st_size != rec["sizes"]["xml"]
                or bin_.stat().st_size != rec["sizes"]["bin"]
            ):
                return None
            return CacheEntry(
                key,
                xml,
                bin_,
                {str(k): str(v) for k, v in rec["versions"].items()},
                float(rec["built_at"]),
                dict(rec.get("info") or {}),
                rec.get("gate"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
