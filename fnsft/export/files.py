"""Output plumbing shared by the exporters: disk preflight, sizes, file listings (atomic writes: fnsft.atomic)."""

from __future__ import annotations

import shutil
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


def list_files(root: Path) -> list[OutputFile]:
    """Every regular file under ``root`` (recursively, hidden temporaries excluded), sorted by path."""
    if root.is_file():
        return [OutputFile(path=root, size=root.stat().st_size)]
    return [
        OutputFile(path=path, size=path.stat().st_size)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    ]
