"""SHA-256 of files, streamed in blocks (weights and GGUF files are gigabytes): the one place fnsft hashes files."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_BLOCK = 1 << 22


def _update(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of one file's bytes (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    _update(digest, Path(path))
    return digest.hexdigest()


def files_sha256(files: Iterable[Path]) -> str:
    """Hex SHA-256 over several files in the given order, each as its name then its bytes (a rename changes it)."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        _update(digest, file)
    return digest.hexdigest()
