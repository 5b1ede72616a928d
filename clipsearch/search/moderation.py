"""Moderation: flag library items that match policy labels, with the reason and score.

A policy is a TOML file of labels with cosine thresholds::

    templates = "default"          # optional: default | simple | imagenet | a file
    video = "max"                  # optional: max (the best frame) | pooled
    [labels]
    "a weapon" = 0.27              # label = cosine threshold in [-1, 1]
    "blood" = { threshold = 0.25, reason = "graphic violence" }

Each label becomes a zero-shot class vector (prompt ensemble, clipsearch.search.classify);
an item is flagged for each label whose cosine with the item reaches the label's
threshold. Videos score by their best frame (``video = "max"``: one bad scene is enough)
or by their meanP vector (``"pooled"``). A malformed policy raises `PolicyError` naming
the line and the reason.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.search.classify import build_classifier, check_threshold, library_vectors

if TYPE_CHECKING:
    from clipsearch.models.base import Encoder
    from clipsearch.store import Catalog


class PolicyError(UsageError):
    """A moderation policy file is malformed; the message names the file, line and reason."""


@dataclass(frozen=True)
class PolicyRule:
    """One policy label: flag items whose cosine reaches ``threshold``; ``line`` in the file."""

    label: str
    threshold: float
    reason: str
    line: int | None = None


@dataclass(frozen=True)
class ModerationPolicy:
    """Labels with cosine thresholds (module docstring for the TOML format)."""

    rules: tuple[PolicyRule, ...]
    templates: str = "default"
    video: str = "max"
    source: str = "policy"

    @classmethod
    def load(cls, path: str | Path) -> ModerationPolicy:
        """Read a TOML policy. Raises PolicyError naming the line and the reason."""
        p = Path(path).expanduser()
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise PolicyError(f"cannot read the policy {p}: {e}") from e
        return cls.parse(text, source=str(p))

    @classmethod
    def parse(cls, text: str, *, source: str = "policy") -> ModerationPolicy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
            where = f"line {m.group(1)}: " if m else ""
            raise PolicyError(
                f"{source}: {where}{str(e).split(' (at line')[0]} (not valid TOML)"
            ) from None

        def fail(key: str | None, why: str, table: str | None = None) -> PolicyError:
            line = _key_line(text, key, table) if key is not None else None
            return PolicyError(f"{source}: {f'line {line}: ' if line else ''}{why}")

        unknown = sorted(set(data) - {"templates", "video", "labels"})
        if unknown:
            raise fail(
                unknown[0], f"unknown setting {unknown[0]!r} (expected templates, video, [labels])"
            )
        templates = data.get("templates", "default")
        if not isinstance(templates, str):
            raise fail(
                "templates", "templates must be a string: default, simple, imagenet or a file"
            )
        video = data.get("video", "max")
        if video not in ("max", "pooled"):
            raise fail("video", f"video must be 'max' or 'pooled', got {video!r}")
        labels = data.get("labels")
        if not isinstance(labels, dict) or not labels:
            raise fail(None, 'no [labels] table: add lines like  "a weapon" = 0.27  under [labels]')
        rules, seen = [], set()
        for label, value in labels.items():
            name = " ".join(label.split())
            if not name:
                raise fail(label, "a label is empty", "labels")
            if name.lower() in seen:
                raise fail(label, f"duplicate label {name!r}", "labels")
            seen.add(name.lower())
            reason = name
            if isinstance(value, dict):
                extra = sorted(set(value) - {"threshold", "reason"})
                if extra or "threshold" not in value:
                    raise fail(
                        label,
                        f'{name!r}: expected {{ threshold = 0.27, reason = "..." }}',
                        "labels",
                    )
                reason = str(value.get("reason", name))
                value = value["threshold"]
            try:
                thr = check_threshold(value, f"the threshold of {name!r}")
            except UsageError as e:
                raise fail(label, str(e), "labels") from None
            rules.append(PolicyRule(name, thr, reason, _key_line(text, label, "labels")))
        return cls(tuple(rules), templates, video)


def _key_line(text: str, key: str, table: str | None = None) -> int | None:
    """1-based line where ``key`` is assigned (inside ``[table]`` when given), or None."""
    current = None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.match(r"^\[\s*([^\[\]]+?)\s*\]", line)
        if header:
            current = header.group(1).strip("\"'")
            continue
        if current != table:
            continue
        m = re.match(r'^(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*=', line)
        if m and next(g for g in m.groups() if g is not None) == key:
            return n
    return None


@dataclass(frozen=True)
class Flag:
    """An item matching a policy label: score = cosine (for videos at time ``t``)."""

    item_id: int
    path: str
    kind: str
    label: str
    reason: str
    score: float
    threshold: float
    t: float | None = None

    def to_dict(self) -> dict[str, object]:
        out = {
            "item_id": self.item_id,
            "path": self.path,
            "kind": self.kind,
            "label": self.label,
            "reason": self.reason,
            "score": round(self.score, 6),
            "threshold": self.threshold,
        }
        if self.t is not None:
            out["t"] = round(self.t, 3)
        return out


def moderate(
    catalog: Catalog,
    encoder: Encoder,
    policy: ModerationPolicy,
    *,
    where: Sequence[str] = (),
    tag: bool = False,
) -> tuple[list[Flag], int]:
    """Flag the catalog's items against ``policy``: (flags sorted by score, items checked).
    ``encoder`` embeds the policy's labels (the model the catalog's vectors come from).

    Videos score by their best frame (``video = "max"``) or their meanP vector. With
    ``tag``, flagged labels are also stored as tags (source ``"policy:<label>"``).
    """
    clf = build_classifier(encoder, [r.label for r in policy.rules], templates=policy.templates)
    lv = library_vectors(catalog, where)
    S = clf.scores(lv.vectors) if len(lv.item_ids) else np.zeros((0, len(policy.rules)), np.float32)
    times: dict[int, np.ndarray] = {}
    if policy.video == "max":
        videos = [i for i, k in zip(lv.item_ids.tolist(), lv.kinds, strict=True) if k == "video"]
        row_of = {int(i): r for r, i in enumerate(lv.item_ids.tolist())}
        for lo in range(0, len(videos), 256):  # frames of a few videos at a time
            for item, (ts, fv) in catalog.frames(videos[lo : lo + 256]).items():
                fs = clf.scores(fv)  # (F, C)
                best = fs.argmax(axis=0)  # (C,)
                S[row_of[item]] = fs[best, np.arange(fs.shape[1])]
                times[item] = ts[best]
    flags = []
    for r, (item, kind, path) in enumerate(
        zip(lv.item_ids.tolist(), lv.kinds, lv.paths, strict=True)
    ):
        for c, rule in enumerate(policy.rules):
            if S[r, c] >= rule.threshold:
                t = float(times[item][c]) if item in times else None
                flags.append(
                    Flag(
                        item, path, kind, rule.label, rule.reason, float(S[r, c]), rule.threshold, t
                    )
                )
    flags.sort(key=lambda f: (-f.score, f.item_id, f.label))
    if tag and len(lv.item_ids):
        for rule in policy.rules:
            hit = {f.item_id: f.score for f in flags if f.label == rule.label}
            tags = {
                int(i): ({rule.label.lower(): hit[int(i)]} if int(i) in hit else {})
                for i in lv.item_ids
            }
            catalog.set_tags(tags, source=f"{policy.source}:{rule.label.lower()}")
    return flags, len(lv.item_ids)
