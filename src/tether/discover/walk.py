"""Finding the files to scan, safely: only under the scanned paths, no symlink followed
out of them or round in a loop, no file over the size cap, no binary file, nothing
unreadable — each skipped with a counted warning, never an exception."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from tether.discover.interface import SourceFile, Warnings

__all__ = ["MAX_BYTES", "SKIP_DIRS", "walk"]

MAX_BYTES = 2 * 1024 * 1024  # bigger files are skipped (counted as too-large)
SKIP_DIRS = frozenset(
    {".git", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache"}
)
_SNIFF = 8192  # bytes read to tell binary from text


def walk(
    paths: Sequence[Path], warnings: Warnings, max_bytes: int = MAX_BYTES
) -> Iterator[SourceFile]:
    """Every regular text file under ``paths`` (each a file or a directory), once."""
    roots = []
    for given in paths:
        try:
            roots.append(given.resolve(strict=True))
        except (OSError, RuntimeError):
            warnings.add("unreadable", str(given))
    seen: set[tuple[int, int]] = set()
    for root in roots:
        yield from _walk_root(root, roots, warnings, seen, max_bytes)


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _walk_root(
    root: Path,
    roots: Sequence[Path],
    warnings: Warnings,
    seen: set[tuple[int, int]],
    max_bytes: int,
) -> Iterator[SourceFile]:
    if root.is_file():
        found = _file(root, root.parent, warnings, seen, max_bytes)
        if found is not None:
            yield found
        return
    visited_dirs: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            info = directory.stat()
        except OSError:
            warnings.add("unreadable", str(directory))
            continue
        ident = (info.st_dev, info.st_ino)
        if ident in visited_dirs:
            warnings.add("symlink-loop", _shown(directory, root))
            continue
        visited_dirs.add(ident)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            warnings.add("unreadable", _shown(directory, root))
            continue
        subdirs: list[Path] = []
        for entry in entries:
            kind = _classify(entry, directory, root, roots, warnings)
            if kind == "dir":
                subdirs.append(Path(entry.path))
            elif kind == "file":
                found = _file(Path(entry.path), root, warnings, seen, max_bytes)
                if found is not None:
                    yield found
        stack.extend(reversed(subdirs))


def _classify(
    entry: os.DirEntry[str],
    directory: Path,
    root: Path,
    roots: Sequence[Path],
    warnings: Warnings,
) -> str | None:
    """``dir`` (descend), ``file`` (read) or None (skipped, and why is counted)."""
    path = Path(entry.path)
    try:
        if entry.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):  # dangling, or a loop of links
                warnings.add("symlink-loop", _shown(path, root))
                return None
            if not _inside(target, roots):
                warnings.add("outside-root", _shown(path, root))
                return None
            if target.is_dir() and _inside(directory.resolve(), [target]):  # points back up
                warnings.add("symlink-loop", _shown(path, root))
                return None
        if entry.is_dir(follow_symlinks=True):
            return "dir" if entry.name not in SKIP_DIRS else None
    except OSError:
        warnings.add("unreadable", _shown(path, root))
        return None
    return "file"


def _file(
    path: Path, root: Path, warnings: Warnings, seen: set[tuple[int, int]], max_bytes: int
) -> SourceFile | None:
    shown = _shown(path, root)
    try:
        info = path.stat()
    except OSError:
        warnings.add("unreadable", shown)
        return None
    if not stat.S_ISREG(info.st_mode):
        return None  # sockets, devices, fifos: nothing to read
    ident = (info.st_dev, info.st_ino)
    if ident in seen:  # the same file again (a hard or symbolic link): scanned once
        return None
    seen.add(ident)
    if info.st_size > max_bytes:
        warnings.add("too-large", shown)
        return None
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF)
    except OSError:
        warnings.add("unreadable", shown)
        return None
    if b"\x00" in head:
        warnings.add("binary", shown)
        return None
    return SourceFile(path=path, root=root, warnings=warnings)


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
