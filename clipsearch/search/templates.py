"""Prompt templates for zero-shot classification (``{c}`` or ``{}`` is replaced by the class name).

- ``IMAGENET_TEMPLATES``: the 80 templates OpenAI CLIP used for ImageNet (Radford et al.
  2021, notebook "Prompt_Engineering_for_ImageNet"); the same list as open_clip's
  ``zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES`` and CLIP_benchmark's ``imagenet1k``
  entry (a test keeps them equal). Stored here as data so that using them does not
  import torch.
- ``SIMPLE_TEMPLATES``: the 7-template subset open_clip calls ``SIMPLE_IMAGENET_TEMPLATES``
  (CLIP's "ensemble of 7" which recovers most of the 80's gain).
- ``DEFAULT_TEMPLATES``: the single CLIP prompt ``"a photo of a {c}."``.

``resolve_templates(name_or_path)`` returns one of these by name ("imagenet", "simple",
"default") or reads a text file with one template per line. A template names the class
with ``{c}`` (CLIP_benchmark's placeholder, used here) or ``{}`` (OpenAI CLIP's notebook,
``template.format(classname)``); either is accepted wherever templates are.
"""

from __future__ import annotations

from pathlib import Path

from clipsearch.errors import UsageError

PLACEHOLDER = "{c}"
PLACEHOLDERS: tuple[str, ...] = (PLACEHOLDER, "{}")

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {c}.",
    "a photo of many {c}.",
    "a sculpture of a {c}.",
    "a photo of the hard to see {c}.",
    "a low resolution photo of the {c}.",
    "a rendering of a {c}.",
    "graffiti of a {c}.",
    "a bad photo of the {c}.",
    "a cropped photo of the {c}.",
    "a tattoo of a {c}.",
    "the embroidered {c}.",
    "a photo of a hard to see {c}.",
    "a bright photo of a {c}.",
    "a photo of a clean {c}.",
    "a photo of a dirty {c}.",
    "a dark photo of the {c}.",
    "a drawing of a {c}.",
    "a photo of my {c}.",
    "the plastic {c}.",
    "a photo of the cool {c}.",
    "a close-up photo of a {c}.",
    "a black and white photo of the {c}.",
    "a painting of the {c}.",
    "a painting of a {c}.",
    "a pixelated photo of the {c}.",
    "a sculpture of the {c}.",
    "a bright photo of the {c}.",
    "a cropped photo of a {c}.",
    "a plastic {c}.",
    "a photo of the dirty {c}.",
    "a jpeg corrupted photo of a {c}.",
    "a blurry photo of the {c}.",
    "a photo of the {c}.",
    "a good photo of the {c}.",
    "a rendering of the {c}.",
    "a {c} in a video game.",
    "a photo of one {c}.",
    "a doodle of a {c}.",
    "a close-up photo of the {c}.",
    "a photo of a {c}.",
    "the origami {c}.",
    "the {c} in a video game.",
    "a sketch of a {c}.",
    "a doodle of the {c}.",
    "a origami {c}.",
    "a low resolution photo of a {c}.",
    "the toy {c}.",
    "a rendition of the {c}.",
    "a photo of the clean {c}.",
    "a photo of a large {c}.",
    "a rendition of a {c}.",
    "a photo of a nice {c}.",
    "a photo of a weird {c}.",
    "a blurry photo of a {c}.",
    "a cartoon {c}.",
    "art of a {c}.",
    "a sketch of the {c}.",
    "a embroidered {c}.",
    "a pixelated photo of a {c}.",
    "itap of the {c}.",
    "a jpeg corrupted photo of the {c}.",
    "a good photo of a {c}.",
    "a plushie {c}.",
    "a photo of the nice {c}.",
    "a photo of the small {c}.",
    "a photo of the weird {c}.",
    "the cartoon {c}.",
    "art of the {c}.",
    "a drawing of the {c}.",
    "a photo of the large {c}.",
    "a black and white photo of a {c}.",
    "the plushie {c}.",
    "a dark photo of a {c}.",
    "itap of a {c}.",
    "graffiti of the {c}.",
    "a toy {c}.",
    "itap of my {c}.",
    "a photo of a cool {c}.",
    "a photo of a small {c}.",
    "a tattoo of the {c}.",
)

SIMPLE_TEMPLATES: tuple[str, ...] = (
    "itap of a {c}.",
    "a bad photo of the {c}.",
    "a origami {c}.",
    "a photo of the large {c}.",
    "a {c} in a video game.",
    "art of the {c}.",
    "a photo of the small {c}.",
)

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {c}.",)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "default": DEFAULT_TEMPLATES,
    "simple": SIMPLE_TEMPLATES,
    "imagenet": IMAGENET_TEMPLATES,
}


def fill_template(template: str, classname: str) -> str:
    """``template`` with every ``{c}`` and ``{}`` replaced by ``classname`` (other braces
    kept as is)."""
    for placeholder in PLACEHOLDERS:
        template = template.replace(placeholder, classname)
    return template


def check_templates(
    templates: list[str] | tuple[str, ...], *, source: str = "templates"
) -> list[str]:
    """Strip blank entries; raise UsageError if none is left or one has neither ``{c}``
    nor ``{}``."""
    out = [t.strip() for t in templates if t.strip()]
    if not out:
        raise UsageError(f"{source}: no templates (one per line, each containing {{c}} or {{}})")
    bad = [t for t in out if not any(p in t for p in PLACEHOLDERS)]
    if bad:
        raise UsageError(
            f"{source}: template {bad[0]!r} has no {{c}} or {{}} placeholder for the class name"
        )
    return out


def resolve_templates(name_or_path: str) -> list[str]:
    """Templates by set name (imagenet, simple, default) or from a file (one per line).

    Raises UsageError for an unknown name that is not a file, or a file without usable
    templates.
    """
    key = name_or_path.strip().lower()
    if key in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[key])
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise UsageError(
            f"unknown template set {name_or_path!r}: use one of {', '.join(TEMPLATE_SETS)} "
            "or a text file with one template per line containing {c} or {}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read templates ({e})") from e
    return check_templates(text.splitlines(), source=str(path))
