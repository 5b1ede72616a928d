"""What open_clip knows: architectures, their pretrained tags, and near-miss suggestions.

A leaf of the models package (it imports nothing from clipsearch but errors), in the role
open_clip's own ``pretrained.py`` plays there: `models.spec` asks it for a bare
architecture's tags and `models.openclip` checks a spec against it before loading. Names
registered with ``open_clip.add_model_config`` (the test models) are found the same way as
the built-in ones. open_clip is imported on the first call.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from clipsearch.errors import UnknownModelError

_LIST_HINT = "Run `clipsearch models` for the list."


def list_models() -> list[tuple[str, str]]:
    """Every (architecture, pretrained tag) pair open_clip knows, for ``clipsearch models``."""
    import open_clip

    return [(arch, tag) for arch, tag in open_clip.list_pretrained()]


def pretrained_tags(arch: str) -> list[str]:
    """The pretrained tags open_clip lists for ``arch``, in its order ([] if none or unknown)."""
    from open_clip.pretrained import list_pretrained_tags_by_model

    return list(list_pretrained_tags_by_model(arch))


def check_architecture(arch: str) -> None:
    """Raise UnknownModelError (with near matches) unless open_clip knows ``arch``."""
    import open_clip

    known = open_clip.list_models()
    if arch not in known:
        raise UnknownModelError(
            f"Unknown model architecture {arch!r}.{suggest(arch, known)} {_LIST_HINT}"
        )


def check_tag(arch: str, tag: str) -> None:
    """Raise UnknownModelError (with near matches) unless ``arch`` has pretrained ``tag``."""
    check_architecture(arch)
    tags = pretrained_tags(arch)
    if tag not in tags:
        shown = ", ".join(tags[:8]) + (f" and {len(tags) - 8} more" if len(tags) > 8 else "")
        available = f" Its tags: {shown}." if tags else " It has no pretrained tags."
        raise UnknownModelError(
            f"Unknown pretrained tag {tag!r} for {arch}.{suggest(tag, tags)}{available} "
            f"{_LIST_HINT}"
        )


def suggest(name: str, candidates: Sequence[str]) -> str:
    """`` Did you mean: a, b?`` for up to five close matches (case-insensitive), else ``""``."""
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.6)
    return f" Did you mean: {', '.join(lowered[c] for c in close)}?" if close else ""
