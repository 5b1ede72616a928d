"""Walk roots and list the media files under them.

``scan`` is the first step of indexing: it turns folders into ``MediaFile`` records
(absolute path, kind, size, mtime) that the catalog compares with what it already knows.
One ``stat`` per file; nothing is opened. The walk never raises once it has started:
a broken symlink or an unreadable folder is reported through ``on_error`` and skipped.

Glob patterns (``include`` / ``exclude``) are matched case-insensitively against two
strings of each entry: its path relative to its root, with ``/`` separators (for a root
that is a single file, its name), and its base name. A pattern matches if it matches
either one. Syntax (fnmatch with globstar):

- ``*`` matches any run of characters except ``/``; ``?`` one character except ``/``;
  ``[abc]`` / ``[!abc]`` a character class;
- ``**`` matches anything, ``/`` included (also nothing), so ``**/`` matches zero or
  more whole folders: ``**/raw/**`` is everything under any folder named ``raw``;
- a pattern without ``/`` (``*.png``, ``Thumbs*``) thus matches a name at any depth;
  a pattern with ``/`` (``2019/*.jpg``) is anchored at the root.

A file is yielded if no ``exclude`` pattern matches it and, when ``include`` is given,
some ``include`` pattern does. A folder matched by an ``exclude`` pattern (tested on its
relative path, that path with a trailing ``/``, and its name) is not entered at all:
``exclude=["node_modules", "raw/**"]`` prunes both trees. ``include`` never prunes folders.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from clipsearch.errors import NotFoundError

log = logging.getLogger(__name__)

MediaKind = Literal["image", "video"]
MEDIA_KINDS: tuple[MediaKind, ...] = get_args(MediaKind)
ErrorCallback = Callable[[Path, str], None]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif",
        ".png", ".apng",
        ".gif",
        ".webp",
        ".bmp", ".dib",
        ".tif", ".tiff",
        ".heic", ".heif", ".hif",
        ".avif",
        ".jp2", ".j2k",
    }
)  # fmt: skip
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
        ".wmv", ".flv", ".3gp", ".ts", ".mts", ".m2ts", ".ogv",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MediaFile:
    """One media file found by ``scan``."""

    path: Path  # absolute, as reached by the walk (symlinks in it are not resolved)
    kind: MediaKind
    size: int  # bytes, from stat (symlinks followed)
    mtime_ns: int  # modification time in ns, from stat (symlinks followed)


def kind_of(path: Path | str) -> MediaKind | None:
    """The media kind a file name's extension says (case-insensitive), or None."""
    return _kind_of_name(os.path.basename(os.fsdecode(path)))


def _kind_of_name(name: str) -> MediaKind | None:
    """`kind_of` a bare file name (the walk's hot path): its extension as
    ``os.path.splitext`` finds it (leading dots belong to the name), lower-cased."""
    stem = name.lstrip(".")
    dot = stem.rfind(".")
    suffix = stem[dot:].lower() if dot >= 0 else ""
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def scan(
    roots: Sequence[Path | str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    follow_symlinks: bool = True,
    on_error: ErrorCallback | None = None,
) -> Iterator[MediaFile]:
    """Walk ``roots`` recursively and yield every image and video file under them.

    Args:
        roots: folders to walk, or single files (yielded if their extension is media).
            Relative paths are made absolute against the current directory.
        include / exclude: glob patterns, see the module docstring for the exact rules.
        hidden: also enter dot-folders and yield dot-files (skipped by default). A root
            is never filtered by this, even if its own name starts with a dot.
        follow_symlinks: follow symlinks to files and folders (default). Folder loops
            terminate: each folder (device, inode) is entered once. When False, every
            symlink below a root is ignored.
        on_error: called as ``on_error(path, reason)`` for each broken symlink and each
            folder or file that cannot be read; the entry is skipped and the walk goes on.

    Yields:
        ``MediaFile`` records in a deterministic order: depth-first, the entries of each
        folder sorted by name, roots in the order given. A file reached more than once
        (through symlinks, hard links or overlapping roots) is yielded once, under the
        first path the walk reaches it by. Zero-byte files are yielded (the decoder
        records them as failures).

    Raises:
        NotFoundError: a root does not exist or is neither a folder nor a regular file.
            All roots are checked when ``scan`` is called, before anything is yielded.
    """
    walk = _walk(roots, include, exclude, hidden, follow_symlinks, on_error)
    return (
        MediaFile(Path(path) if folder is None else folder / name, kind, st.st_size, st.st_mtime_ns)
        for path, name, folder, kind, st in walk
    )


def scan_paths(
    roots: Sequence[Path | str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    follow_symlinks: bool = True,
    on_error: ErrorCallback | None = None,
) -> Iterator[tuple[str, MediaKind, int, int]]:
    """`scan` as plain tuples: ``(path, kind, size, mtime_ns)`` per media file, ``path``
    the absolute path as a string (``str`` of the record's ``path``). Same files, order,
    errors and arguments as `scan`; for a caller that compares many files with what it
    knows and makes records only of the few it keeps (an index run over unchanged files
    keeps none).
    """
    walk = _walk(roots, include, exclude, hidden, follow_symlinks, on_error)
    return ((path, kind, st.st_size, st.st_mtime_ns) for path, _, _, kind, st in walk)


def _walk(
    roots: Sequence[Path | str],
    include: Sequence[str],
    exclude: Sequence[str],
    hidden: bool,
    follow_symlinks: bool,
    on_error: ErrorCallback | None,
) -> Iterator[_Found]:
    """Check every root now (NotFoundError), then walk them lazily."""
    checked: list[tuple[str, os.stat_result]] = []
    for root in roots:
        path = os.path.abspath(os.fsdecode(root))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFoundError(f"folder not found: {path} (check the path)") from None
        except OSError as e:
            raise NotFoundError(f"cannot open folder {path}: {_reason(e)}") from e
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise NotFoundError(f"not a folder or a file: {path}")
        checked.append((path, st))
    walker = _Walker(
        include=_compile(include),
        exclude=_compile(exclude),
        hidden=hidden,
        follow_symlinks=follow_symlinks,
        on_error=on_error,
    )
    return walker.walk_all(checked)


_Matcher = Callable[[str], object]


def _compile(patterns: Sequence[str]) -> list[_Matcher]:
    if isinstance(patterns, str):  # a bare string would otherwise be split into characters
        patterns = [patterns]
    return [re.compile(_glob_to_regex(p), re.IGNORECASE | re.DOTALL).fullmatch for p in patterns]


def _glob_to_regex(pattern: str) -> str:
    """Translate a glob with ``**`` into a regex (``*`` and ``?`` do not cross ``/``)."""
    pattern = pattern.replace(os.sep, "/")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more whole folders
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and (end := _class_end(pattern, i)) > 0:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            body = body.replace("\\", "\\\\")
            if not negate and body.startswith("^"):
                body = "\\" + body  # a literal ^, not a regex negation
            out.append(f"[^/{body}]" if negate else f"[{body}]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """Index of the ``]`` closing the class opened at ``start``, or -1 (then ``[`` is literal)."""
    j = start + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1  # a leading ] is part of the class, as in fnmatch
    end = pattern.find("]", j)
    return end


def _matches(matchers: list[_Matcher], rel: str, name: str) -> bool:
    return any(m(rel) or m(name) for m in matchers)


def _reason(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


# What the walk finds of a media file: (path, name, the Path of its folder or None for a
# root that is a file, kind, stat). Plain tuples: a walk over 10,000 unchanged files makes
# no object it does not need.
_Found = tuple[str, str, Path | None, MediaKind, os.stat_result]


@dataclass
class _Walker:
    include: list[_Matcher]
    exclude: list[_Matcher]
    hidden: bool
    follow_symlinks: bool
    on_error: ErrorCallback | None

    def __post_init__(self) -> None:
        self._dirs_seen: set[tuple[int, int]] = set()
        self._files_seen: set[tuple[int, int]] = set()

    def walk_all(self, roots: list[tuple[str, os.stat_result]]) -> Iterator[_Found]:
        for path, st in roots:
            if stat.S_ISDIR(st.st_mode):
                yield from self._walk_dir(path, st)
            else:
                name = os.path.basename(path)
                kind = self._media_kind(name, name, st)
                if kind is not None:
                    yield path, name, None, kind, st

    def _report(self, path: str, reason: str) -> None:
        log.debug("scan: skipping %s: %s", path, reason)
        if self.on_error is not None:
            self.on_error(Path(path), reason)

    def _media_kind(self, rel: str, name: str, st: os.stat_result) -> MediaKind | None:
        """The kind of a regular file the walk yields, or None: not media, filtered out
        by the patterns, or already yielded under another path."""
        kind = _kind_of_name(name)
        if kind is None:
            return None
        if self.exclude and _matches(self.exclude, rel, name):
            return None
        if self.include and not _matches(self.include, rel, name):
            return None
        key = (st.st_dev, st.st_ino)
        if key in self._files_seen:
            return None
        self._files_seen.add(key)
        return kind

    def _listing(self, path: str) -> list[os.DirEntry[str]] | None:
        try:
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as e:
            self._report(path, f"cannot read folder: {_reason(e)}")
            return None

    def _walk_dir(self, root: str, root_st: os.stat_result) -> Iterator[_Found]:
        key = (root_st.st_dev, root_st.st_ino)
        if key in self._dirs_seen:  # an earlier root already covered it
            return
        self._dirs_seen.add(key)
        entries = self._listing(root)
        if entries is None:
            return
        hidden, follow, patterns = self.hidden, self.follow_symlinks, self.exclude or self.include
        # Depth-first with an explicit stack (no recursion limit on deep trees): each
        # frame is (relative folder path, its sorted entries, position of the next one,
        # the folder's Path). A folder's entries are read in one loop; a subfolder
        # suspends it (its frame goes back on the stack) until the subfolder is done.
        stack: list[tuple[str, list[os.DirEntry[str]], int, Path]] = [("", entries, 0, Path(root))]
        while stack:
            rel_dir, entries, i, folder = stack.pop()
            n = len(entries)
            while i < n:
                entry = entries[i]
                i += 1
                name = entry.name
                if not hidden and name.startswith("."):
                    continue
                try:
                    is_link = entry.is_symlink()
                except OSError as e:
                    self._report(entry.path, _reason(e))
                    continue
                if is_link and not follow:
                    continue
                try:
                    st = entry.stat(follow_symlinks=True)
                except FileNotFoundError:
                    reason = "broken symbolic link" if is_link else "vanished during the scan"
                    self._report(entry.path, reason)
                    continue
                except OSError as e:
                    # ELOOP (a symlink pointing at itself) lands here too.
                    self._report(entry.path, _reason(e))
                    continue
                mode = st.st_mode
                if stat.S_ISREG(mode):
                    rel = (f"{rel_dir}/{name}" if rel_dir else name) if patterns else name
                    kind = self._media_kind(rel, name, st)
                    if kind is not None:
                        yield entry.path, name, folder, kind, st
                elif stat.S_ISDIR(mode):
                    rel = f"{rel_dir}/{name}" if rel_dir else name
                    if self.exclude and (
                        _matches(self.exclude, rel, name) or _matches(self.exclude, rel + "/", name)
                    ):
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in self._dirs_seen:  # a symlink loop, or a folder reached twice
                        continue
                    self._dirs_seen.add(key)
                    children = self._listing(entry.path)
                    if children:
                        stack.append((rel_dir, entries, i, folder))
                        stack.append((rel, children, 0, folder / name))
                        break
                # sockets, FIFOs and devices are not media: skipped silently.
