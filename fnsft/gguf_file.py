"""Reading a GGUF file: its metadata as Python values and its tensors as memory-mapped numpy views.

gguf's own ``GGUFReader`` builds a numpy view for every element of every metadata array, so opening a file with
a 49k-token vocabulary and 48k merges costs it 3-13 s on a small CPU (llama.cpp PR #13378, a faster read-only
mode, has been open since 2025). This reader walks the same bytes with ``struct`` and decodes numeric arrays in
one ``numpy.frombuffer``: about 0.1 s for the same file. Tensor data is shaped exactly as ``GGUFReader`` shapes it
(typed arrays for F32/F16/F64/I*, bytes with gguf's block shape otherwise), so ``gguf.dequantize`` reads it; gguf
stays the reference for the format's constants and dequantizers, and the tests compare this reader with
``GGUFReader`` on real files. Little-endian files only (every GGUF in circulation; big-endian ones are refused).

No torch import: ``fnsft estimate`` reads GGUF metadata with it.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: GGUF metadata value types (gguf.GGUFValueType): struct format of the fixed-size ones.
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
#: Tensor types stored as plain values (the rest are blocks of bytes).
_VALUE_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8, "I16": np.int16,
                 "I32": np.int32, "I64": np.int64}
_VERSIONS = (2, 3)  # v1 counted in 32 bits; llama.cpp has not written it since 2023
_DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class GgufTensor:
    """One tensor: attribute names as gguf's ``ReaderTensor``, so code written for either reads both."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # ggml order: the fastest-moving dimension first
    data: np.ndarray  # a read-only view into the mapped file


@dataclass(frozen=True)
class GgufFile:
    path: Path
    fields: dict[str, Any]  # key → str, int, float, bool or a list of them
    tensors: list[GgufTensor]


class _Cursor:
    def __init__(self, buffer: mmap.mmap, path: Path):
        self.buffer, self.path, self.offset = buffer, path, 0

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.buffer, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def string(self) -> str:
        (length,) = self.unpack("Q")
        start = self.offset
        self.offset += length
        if self.offset > len(self.buffer):
            raise ValueError(f"{self.path}: truncated (a string runs past the end of the file)")
        return self.buffer[start:self.offset].decode("utf-8", errors="replace")

    def value(self, value_type: int) -> Any:
        if value_type in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[value_type])[0]
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            element_type, count = self.unpack("IQ")
            if element_type in _SCALAR_FORMATS:
                dtype = np.dtype("<" + _SCALAR_FORMATS[element_type])
                values = np.frombuffer(self.buffer, dtype, count, self.offset).tolist()
                self.offset += dtype.itemsize * count
                return values
            return [self.value(element_type) for _ in range(count)]
        raise ValueError(f"{self.path}: unknown metadata value type {value_type} at byte {self.offset}")


def read_gguf(path: str | Path) -> GgufFile:
    """The file's metadata and tensors. Raises OSError (unreadable) or ValueError (not a GGUF this reads)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    path = Path(path)
    with path.open("rb") as handle:
        if not path.stat().st_size:
            raise ValueError(f"{path}: empty file, not a GGUF")
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    cursor = _Cursor(buffer, path)
    try:
        if buffer[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file (no GGUF magic)")
        cursor.offset = 4
        (version,) = cursor.unpack("I")
        if version not in _VERSIONS:
            raise ValueError(f"{path}: GGUF version {version} (or a big-endian file): only little-endian v2/v3 "
                             "files can be read")
        tensor_count, field_count = cursor.unpack("QQ")
        fields = {}
        for _ in range(field_count):
            key = cursor.string()
            (value_type,) = cursor.unpack("I")
            fields[key] = cursor.value(value_type)
        infos = []
        for _ in range(tensor_count):
            name = cursor.string()
            (dims,) = cursor.unpack("I")
            shape = cursor.unpack("Q" * dims)
            raw_type, offset = cursor.unpack("IQ")
            infos.append((name, shape, GGMLQuantizationType(raw_type), offset))
    except struct.error:
        raise ValueError(f"{path}: truncated (the metadata runs past the end of the file)") from None
    alignment = fields.get("general.alignment", _DEFAULT_ALIGNMENT)
    data_start = -(-cursor.offset // alignment) * alignment
    mapped = np.frombuffer(buffer, dtype=np.uint8)  # read-only, backed by the same mapping
    tensors = []
    for name, shape, tensor_type, offset in infos:
        numpy_shape = tuple(reversed(shape))
        block, block_bytes = GGML_QUANT_SIZES[tensor_type]
        start = data_start + offset
        nbytes = int(np.prod(shape, dtype=np.int64)) * block_bytes // block
        if start + nbytes > len(mapped):
            raise ValueError(f"{path}: truncated (tensor {name} runs past the end of the file)")
        raw = mapped[start:start + nbytes]
        if tensor_type.name in _VALUE_DTYPES:
            data = raw.view(_VALUE_DTYPES[tensor_type.name]).reshape(numpy_shape)
        else:
            data = raw.reshape(quant_shape_to_byte_shape(numpy_shape, tensor_type))
        tensors.append(GgufTensor(name, tensor_type, shape, data))
    return GgufFile(path, fields, tensors)
