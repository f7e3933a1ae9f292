"""Facts about this machine and its libraries, for `fnsft env` and the run manifest."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from fnsft import __version__

TRACKED_PACKAGES = (
    "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "safetensors",
    "huggingface_hub", "bitsandbytes", "gguf", "scikit-learn", "numpy", "pydantic", "typer", "rich",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from metadata (no imports)."""
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: str | Path = ".") -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def devices() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["cuda"] = [
            {"name": torch.cuda.get_device_name(i), "memory_bytes": torch.cuda.get_device_properties(i).total_memory}
            for i in range(torch.cuda.device_count())
        ]
        info["cuda_version"] = torch.version.cuda
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def hardware() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def caches() -> dict[str, str]:
    from fnsft.models import cache_root

    hf_home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return {"fnsft_cache": str(cache_root()), "hf_home": hf_home, "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "0")}


def collect_environment() -> dict[str, Any]:
    return {"fnsft": __version__, **hardware(), "packages": package_versions(), "devices": devices(), "caches": caches()}
