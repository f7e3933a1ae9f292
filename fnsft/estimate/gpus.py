"""GPU catalog (total memory as nvidia-smi/rocm-smi report it) and memory-size parsing."""

from __future__ import annotations

import re

from fnsft.errors import EstimateError

MiB = 1 << 20

#: name → total device memory in bytes (nvidia-smi "Total" in MiB; a little under the marketing size on some cards).
GPU_MEMORY: dict[str, int] = {
    "T4": 15360 * MiB,
    "RTX3060": 12288 * MiB,
    "RTX4080": 16376 * MiB,
    "V100-16GB": 16384 * MiB,
    "V100-32GB": 32768 * MiB,
    "RTX3090": 24576 * MiB,
    "RTX4090": 24564 * MiB,
    "A10G": 23028 * MiB,
    "L4": 23034 * MiB,
    "A40": 46068 * MiB,
    "A6000": 49140 * MiB,
    "L40S": 46068 * MiB,
    "A100-40GB": 40960 * MiB,
    "A100-80GB": 81920 * MiB,
    "H100-80GB": 81559 * MiB,
    "H200": 143771 * MiB,
    "MI300X": 196592 * MiB,
}

#: The list the verdict is shown against when no --gpu/--gpu-memory is given.
COMMON_GPUS = ("T4", "RTX4090", "L4", "A100-40GB", "A100-80GB", "H100-80GB", "H200")

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY = {_key(name): name for name in GPU_MEMORY}


def gpu_memory(name: str) -> int:
    """Total memory of a catalog GPU (case and punctuation insensitive: ``a100-80gb``, ``A100 80GB``).

    Raises:
        EstimateError: unknown name; the message lists the known ones.
    """
    found = _BY_KEY.get(_key(name))
    if found is None:
        raise EstimateError(f"unknown GPU '{name}'; known GPUs: {', '.join(GPU_MEMORY)} (or give --gpu-memory 24GiB)")
    return GPU_MEMORY[found]


def parse_memory(text: str) -> int:
    """Bytes in a size such as ``80GiB``, ``24GB`` (10^9), ``24G`` (GiB), ``512MiB`` or a plain byte count.

    Raises:
        EstimateError: not a size, or not positive.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise EstimateError(f"'{text}' is not a memory size (examples: 80GiB, 24GB, 16G, 512MiB)")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise EstimateError(f"memory size must be positive, got '{text}'")
    return size
