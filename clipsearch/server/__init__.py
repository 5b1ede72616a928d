"""clipsearch.server: the HTTP API and the web page (FastAPI; the ``server`` extra).

``create_app(library, ...)`` builds the app; ``clipsearch serve`` runs it with uvicorn.
Importing this package does not import FastAPI; calling ``create_app`` does, and raises
MissingDependencyError naming the extra when it is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipsearch.server.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from clipsearch.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
