"""Tensor-at-a-time safetensors I/O, so the merge's peak memory is one tensor, not one shard.

Why not the safetensors package here: ``safe_open`` memory-maps the file (touched pages stay resident while the
file is open) and ``save_file`` serialises a whole shard into bytes before writing (twice the shard in memory).
The format is a little-endian u64 header length, a JSON header (name → dtype, shape, data offsets), then raw
bytes, so reading one tensor is a seek + readinto and writing is a header followed by each tensor's bytes.
Files written here are read back by safetensors and transformers in the tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnsft.errors import ExportError

HEADER_ALIGN = 8


def _torch_dtypes() -> dict[str, Any]:
    import torch

    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file, described by its header entry (no data loaded)."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the data in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_entries(path: Path) -> list[TensorEntry]:
    """The tensors of one safetensors file, in data order."""
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    base = 8 + length
    entries = [
        TensorEntry(name, path, info["dtype"], tuple(info["shape"]), base + info["data_offsets"][0],
                    base + info["data_offsets"][1])
        for name, info in header.items()
        if name != "__metadata__"
    ]
    return sorted(entries, key=lambda entry: entry.start)


def read_tensor(entry: TensorEntry):
    """Read one tensor into fresh memory (exactly its size; the file is closed again)."""
    import torch

    buffer = bytearray(entry.nbytes)
    with entry.file.open("rb") as handle:
        handle.seek(entry.start)
        if handle.readinto(buffer) != entry.nbytes:
            raise ExportError(f"{entry.file}: truncated data for tensor {entry.name}")
    if not buffer:
        return torch.empty(entry.shape, dtype=_torch_dtypes()[entry.dtype])
    return torch.frombuffer(buffer, dtype=_torch_dtypes()[entry.dtype]).reshape(entry.shape)


def write_streaming(
    path: Path,
    entries: Iterable[TensorEntry],
    produce: Callable[[TensorEntry], Any],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a safetensors file whose tensors have the entries' names, dtypes and shapes, one tensor at a time.

    Args:
        path: file to write.
        entries: what the file will hold (the header is written from these before any data).
        produce: returns the tensor for an entry; it must have the entry's dtype and shape.
        metadata: the header's ``__metadata__`` strings.
    """
    import torch

    entries = list(entries)
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for entry in entries:
        header[entry.name] = {"dtype": entry.dtype, "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % HEADER_ALIGN)
    dtypes = _torch_dtypes()
    with path.open("wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for entry in entries:
            tensor = produce(entry)
            if tensor.dtype != dtypes[entry.dtype] or tuple(tensor.shape) != entry.shape:
                raise ExportError(f"{entry.name}: produced {tensor.dtype} {tuple(tensor.shape)}, "
                                  f"expected {entry.dtype} {entry.shape}")
            handle.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
            del tensor
