"""Package names loaded on first use (PEP 562).

A package lists the names it exports and the module each lives in; importing the package
imports none of them, so ``clipsearch --help`` or a warm search does not pay for numpy,
torch or the library:

    _LAZY = {"Library": "clipsearch.library.facade"}
    __getattr__ = lazy_names(__name__, _LAZY)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``name`` from ``modules[name]``, imported
    on first use; AttributeError for any other name."""

    def __getattr__(name: str) -> Any:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        return getattr(importlib.import_module(modules[name]), name)

    return __getattr__
