"""Typed errors. The library raises these and never prints or exits; the CLI and the
server turn them into one clear line (CLI) or a JSON error body (HTTP).

Every message must tell the user what went wrong *and* what to do about it.
"""

from __future__ import annotations


class ClipsearchError(Exception):
    """Base of every error clipsearch raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class UsageError(ClipsearchError):
    """The caller asked for something malformed (bad option value, empty query...)."""

    exit_code = 2


class MissingDependencyError(ClipsearchError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed. Install it with: pip install 'clipsearch[{extra}]'"
        )
        self.package = package
        self.extra = extra


# --- models -------------------------------------------------------------------------------
class ModelError(ClipsearchError):
    """A model could not be resolved or loaded."""

    exit_code = 3


class UnknownModelError(ModelError):
    """The spec names no known architecture or pretrained tag (the message suggests near matches)."""


class WeightsUnavailableError(ModelError):
    """Weights could not be downloaded or found (offline?); the message says how to supply them."""


class ModelMismatchError(ModelError):
    """A library bound to one model was used with another."""


# --- media --------------------------------------------------------------------------------
class MediaError(ClipsearchError):
    """A media file could not be read. Recorded per file during indexing; never stops a run."""


class CorruptMediaError(MediaError):
    """Truncated, empty, damaged or mislabelled file."""


class UnsupportedMediaError(MediaError):
    """A format or codec we cannot decode (the message says which)."""


class MediaTooLargeError(MediaError):
    """Decompression-bomb guard or frame/size cap tripped."""


# --- library / storage --------------------------------------------------------------------
class LibraryError(ClipsearchError):
    """The library directory or catalog is unusable (missing, locked, newer schema...)."""


class DiskFullError(LibraryError):
    """The disk filled up while writing; nothing already written is lost and the run can resume."""


class EngineError(ClipsearchError):
    """An external engine failed or cannot be reached: the Ray cluster that embeds, the
    Milvus server that serves vectors. The message names it and what to check; work
    already committed to the catalog is kept."""


class QueryError(UsageError):
    """A search query could not be parsed or encoded (e.g. a query image that is not an image)."""


class QueryFileRefusedError(QueryError):
    """A query named a file by path where query files are not read (a remote client's text)."""


class NotFoundError(ClipsearchError):
    """An item id, path or file the caller named does not exist."""

    exit_code = 4


# --- serving ------------------------------------------------------------------------------
class BindError(ClipsearchError):
    """The server cannot listen on the address asked for (port in use, a port below 1024
    without privileges, an address that is not this machine's)."""

    exit_code = 5


# --- evaluation / training ----------------------------------------------------------------
class DatasetError(ClipsearchError):
    """An evaluation or training dataset is malformed (missing split, empty captions...)."""


class TrainingError(ClipsearchError):
    """Training cannot go on (NaN loss, output folder already holds a run...)."""
