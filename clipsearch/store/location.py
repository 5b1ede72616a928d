"""Where a library lives when none is named: ``$CLIPSEARCH_HOME``, else the user's data
folder. Imports nothing heavy, so a command can find its library (and a running server of
it) before loading anything."""

from __future__ import annotations

import os
from pathlib import Path


def default_library_path() -> Path:
    """``$CLIPSEARCH_HOME``, else ``$XDG_DATA_HOME/clipsearch/default`` (~/.local/share)."""
    env = os.environ.get("CLIPSEARCH_HOME")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data) / "clipsearch" / "default"
