"""Atomic writes, the one way fnsft writes a file or directory a reader may look at while it is being made.

Everything is written under a temporary name in the target's directory (same file system, so the final rename
is atomic), then renamed into place; on any error the temporary is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _plain_mode(full: int) -> int:
    """The mode open()/mkdir() would give under the current umask: mkstemp/mkdtemp make 0600/0700, which would
    leave outputs and caches unreadable to anyone else (another UID sharing a cache volume or a bind mount)."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


@contextmanager
def staged_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``target``; on success it is renamed onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    staging = Path(name)
    staging.chmod(_plain_mode(0o666))
    try:
        yield staging
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


@contextmanager
def staged_dir(target: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``target``; on success it becomes ``target`` in one rename.

    An existing ``target`` directory is swapped out first, then deleted. ``replace=False`` keeps a ``target`` that
    exists by then (another process made it first: a cache) and discards the staged copy.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    staging.chmod(_plain_mode(0o777))
    try:
        yield staging
        if target.is_dir() and not replace:
            shutil.rmtree(staging, ignore_errors=True)
        else:
            _replace_path(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_path(staged: Path, target: Path) -> None:
    """Move ``staged`` onto ``target``; an existing directory target is swapped out first, then deleted."""
    if target.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)


def remove_leftovers(directory: Path, patterns: tuple[str, ...]) -> list[str]:
    """Delete what killed writers left in ``directory`` under the temporary names ``patterns`` match (files or
    directories); returns the names removed, for the caller to report."""
    removed = []
    for pattern in patterns if directory.is_dir() else ():
        for path in directory.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) and fsync it before the rename, so a crash leaves the old file or the new one."""
    with staged_file(path) as staging, staging.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
