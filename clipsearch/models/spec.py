"""Model specs: one string names a model everywhere (``--model``, config, library binding).

Accepted forms (parsed by `parse_spec`, printed back by ``str(spec)`` in canonical form):

=====================================  ==========================================================
``ViT-B-32:laion2b_s34b_b79k``          an open_clip architecture + pretrained tag (downloaded into
                                        the Hugging Face cache on first use). Tags are normalised
                                        the way open_clip does (lower case, ``-`` -> ``_``).
``ViT-B-32``                            bare architecture: its default tag. For the default
                                        architecture that is `DEFAULT_MODEL`'s tag; otherwise the
                                        first tag open_clip lists. An architecture without any
                                        pretrained tag is an error (random weights never search).
``hf-hub:org/repo``                     an open_clip model published on the Hugging Face Hub.
``ViT-B-32@/path/weights.safetensors``  an open_clip architecture with local weights (safetensors or
                                        a weights-only torch file; never unpickled).
``/path/to/checkpoint.safetensors``     a checkpoint written by clipsearch (`save_checkpoint`); it
                                        records its own architecture.
=====================================  ==========================================================

Paths are made absolute (``~`` expanded, relative to the current directory, symlinks kept) in
the canonical form, so the same file gives the same spec from any working directory. A string
is a bare path when it starts with ``/``, ``.`` or ``~``, or (having no ``:``) contains ``/`` or
ends in a weights suffix. ``A@B`` is architecture + weights when ``A`` looks like an
architecture name (no leading ``/ . ~``); write ``./odd@name.safetensors`` for a file whose
name holds an ``@``.

Parsing never touches the network or the file system (besides ``os.getcwd`` for relative
paths); only the bare-architecture form imports open_clip, to look up the default tag.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from clipsearch.errors import UnknownModelError
from clipsearch.models.registry import check_architecture, pretrained_tags

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"

SpecKind = Literal["pretrained", "hf-hub", "weights", "checkpoint"]

HF_HUB_PREFIX = "hf-hub:"
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_ARCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*(?:/[A-Za-z0-9_.+\-]+)?")
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*")
_HUB_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*")
_FORMS = (
    "Use ARCH:TAG (e.g. ViT-B-32:laion2b_s34b_b79k), hf-hub:org/repo, "
    "ARCH@/path/to/weights.safetensors, or the path of a clipsearch checkpoint."
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``str(spec)`` is the canonical string.

    kind: "pretrained" (arch + tag), "hf-hub" (repo), "weights" (arch + path) or
        "checkpoint" (path to a clipsearch checkpoint).
    arch: open_clip architecture name (None for hf-hub and checkpoint specs).
    tag: pretrained tag (pretrained only).
    repo: Hugging Face repo id ``org/name`` (hf-hub only).
    path: absolute weights/checkpoint path (weights and checkpoint only).
    """

    kind: SpecKind
    arch: str | None = None
    tag: str | None = None
    repo: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.kind == "pretrained":
            return f"{self.arch}:{self.tag}"
        if self.kind == "hf-hub":
            return f"{HF_HUB_PREFIX}{self.repo}"
        if self.kind == "weights":
            return f"{self.arch}@{self.path}"
        return str(self.path)

    @property
    def is_local(self) -> bool:
        """True when the weights come from a local file (nothing may touch the network)."""
        return self.kind in ("weights", "checkpoint")


def parse_spec(s: str | ModelSpec) -> ModelSpec:
    """Parse a model spec string into a `ModelSpec` (see the module docstring for the forms).

    Raises UnknownModelError (with the accepted forms) for an empty or malformed spec, and
    for a bare architecture that has no pretrained tag.
    """
    if isinstance(s, ModelSpec):
        return s
    if not isinstance(s, str) or not s.strip():
        raise UnknownModelError(f"Empty model spec. {_FORMS}")
    s = s.strip()

    if s.startswith(HF_HUB_PREFIX):
        repo = s[len(HF_HUB_PREFIX) :].strip()
        if not _HUB_RE.fullmatch(repo):
            raise UnknownModelError(
                f"Malformed Hugging Face model id in {s!r}: expected hf-hub:org/repo."
            )
        return ModelSpec(kind="hf-hub", repo=repo)

    if _starts_like_path(s):
        return ModelSpec(kind="checkpoint", path=_absolute(s))

    arch, at, weights = s.partition("@")
    if at and _ARCH_RE.fullmatch(arch):
        if not weights.strip():
            raise UnknownModelError(f"No weights file after '@' in {s!r}. {_FORMS}")
        return ModelSpec(kind="weights", arch=_clean_arch(arch), path=_absolute(weights.strip()))

    arch, colon, tag = s.partition(":")
    if colon:
        if not _ARCH_RE.fullmatch(arch) or not _TAG_RE.fullmatch(tag):
            raise UnknownModelError(f"Malformed model spec {s!r}. {_FORMS}")
        return ModelSpec(kind="pretrained", arch=_clean_arch(arch), tag=clean_tag(tag))

    if "/" in s or s.lower().endswith(WEIGHTS_SUFFIXES):
        return ModelSpec(kind="checkpoint", path=_absolute(s))
    if not _ARCH_RE.fullmatch(s):
        raise UnknownModelError(f"Malformed model spec {s!r}. {_FORMS}")
    arch = _clean_arch(s)
    return ModelSpec(kind="pretrained", arch=arch, tag=default_tag(arch))


def default_tag(arch: str) -> str:
    """The tag a bare architecture name means (see the module docstring).

    Raises UnknownModelError when the architecture has no pretrained tag, suggesting
    near matches when the name itself is unknown.
    """
    default_arch, _, default_tag_ = DEFAULT_MODEL.partition(":")
    if arch == default_arch:
        return default_tag_
    tags = pretrained_tags(arch)
    if tags:
        return tags[0]
    check_architecture(arch)  # raises with suggestions when the name is unknown
    raise UnknownModelError(
        f"Architecture {arch!r} has no pretrained weights in open_clip. Give weights "
        f"explicitly: --model '{arch}@/path/to/weights.safetensors'."
    )


def clean_tag(tag: str) -> str:
    """Normalise a pretrained tag the way open_clip does (lower case, '-' -> '_')."""
    return tag.strip().lower().replace("-", "_")


def _clean_arch(arch: str) -> str:
    # open_clip accepts "ViT-B/32" and looks it up as "ViT-B-32".
    return arch.strip().replace("/", "-")


def _starts_like_path(s: str) -> bool:
    return s.startswith(("/", ".", "~", os.sep))


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))
