"""Output plumbing shared by the exporters: disk preflight, atomic directory/file replacement, file listings."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from fnsft.errors import ExportError

#: Kept free on top of the estimate: file systems misbehave when completely full, and metadata adds a little.
DISK_MARGIN_BYTES = 64 * 1024**2


class OutputFile(BaseModel):
    """One file written by an export, for the summary table and the push listing."""

    path: Path
    size: int


def human_size(size: float) -> str:
    """Bytes as a short human-readable string (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def parse_size(text: str) -> int:
    """``"2GB"``, ``"500MB"``, ``"1.5GiB"`` or a plain byte count → bytes."""
    units = {"tib": 1024**4, "gib": 1024**3, "mib": 1024**2, "kib": 1024,
             "tb": 1000**4, "gb": 1000**3, "mb": 1000**2, "kb": 1000, "b": 1}
    cleaned = text.strip().lower().replace(" ", "")
    suffix = next((unit for unit in units if cleaned.endswith(unit)), "")
    number, factor = cleaned[: len(cleaned) - len(suffix)], units.get(suffix, 1)
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise ExportError(f"cannot read size {text!r}: use e.g. 2GB, 500MB or a byte count") from None
    if value <= 0:
        raise ExportError(f"size must be positive, got {text!r}")
    return value


def ensure_free_space(directory: Path, needed: int, what: str) -> None:
    """Refuse to start an export that cannot fit: a half-written multi-GB file helps nobody."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if needed + DISK_MARGIN_BYTES > free:
        raise ExportError(
            f"not enough disk space for {what}: about {human_size(needed)} needed, {human_size(free)} free in "
            f"{directory}. Free some space or export to another run directory."
        )


def _replace_path(staged: Path, target: Path) -> None:
    """Move ``staged`` onto ``target``; an existing directory target is swapped out first, then deleted."""
    if target.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``target``; on success it replaces ``target`` in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        _replace_path(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def staged_file(target: Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``target``; on success it is renamed onto ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    staging = Path(name)
    try:
        yield staging
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def list_files(root: Path) -> list[OutputFile]:
    """Every regular file under ``root`` (recursively, hidden temporaries excluded), sorted by path."""
    if root.is_file():
        return [OutputFile(path=root, size=root.stat().st_size)]
    return [
        OutputFile(path=path, size=path.stat().st_size)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    ]
