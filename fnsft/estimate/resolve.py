"""Where a model's shape comes from: a config.json file, a model directory, a .gguf file, ``package://``, the
built-in catalog, or (online) the Hub's config.json. The shape itself is computed by :mod:`fnsft.estimate.arch`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fnsft.atomic import atomic_write_json
from fnsft.errors import EstimateError
from fnsft.estimate.arch import ModelShape, shape_from_config
from fnsft.estimate.catalog import CATALOG, catalog_lookup
from fnsft.estimate.gguf_shape import shape_from_gguf


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EstimateError(f"{path}: cannot read the model config ({exc})") from None


def _hub_config(repo_id: str, offline: bool) -> dict[str, Any] | None:
    """The Hub's config.json: from the huggingface_hub cache, else (online) one GET, cached under FNSFT_CACHE.

    One request with a short timeout rather than hf_hub_download, whose retries take ~25 s without a network.
    """
    from huggingface_hub import get_session, hf_hub_url, try_to_load_from_cache

    from fnsft.paths import cache_root

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return _read_json(Path(cached))
    ours = cache_root() / "estimate" / "hub" / f"{repo_id.replace('/', '--')}.json"
    if ours.is_file():
        return _read_json(ours)
    if offline:
        return None
    try:
        response = get_session().get(hf_hub_url(repo_id, "config.json"), timeout=5, follow_redirects=True)
        response.raise_for_status()
        config = response.json()
    except Exception:  # unknown, gated or private repo, no network: all mean "not available here"
        return None
    atomic_write_json(ours, config)
    return config


def catalog_names() -> list[str]:
    return sorted(CATALOG)


def resolve_shape(model: str, gguf_file: str | None = None) -> ModelShape:
    """Find the shape of ``model``: a config.json file, a model dir, a .gguf file, ``package://``, catalog or Hub id.

    Raises:
        EstimateError: when the model cannot be found; the message names the catalog and ``--model path/config.json``.
    """
    from fnsft.paths import PACKAGE_SCHEME, resolve_package_path

    path = Path(model).expanduser()
    if model.startswith(PACKAGE_SCHEME):
        try:
            path = resolve_package_path(model)
        except Exception as exc:  # ModelError: package missing
            raise EstimateError(str(exc)) from None
    if gguf_file:
        path = path / gguf_file
    if path.is_file() and path.suffix == ".gguf":
        return shape_from_gguf(path)
    if path.is_file():
        return shape_from_config(_read_json(path), model, "config")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EstimateError(f"{path}: no config.json in this directory")
        return shape_from_config(_read_json(path / "config.json"), model, "config")
    key = catalog_lookup(model)
    if key is not None:
        same = model.strip().lower() == key.lower()
        return shape_from_config(CATALOG[key], key if same else f"{model} (same shapes as {key})", "catalog")
    if model.count("/") == 1:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        config = _hub_config(model, offline)
        if config is not None:
            return shape_from_config(config, model, "hub")
    raise EstimateError(
        f"{model}: unknown model (not a file or directory, not in the built-in catalog of {len(CATALOG)} models, "
        "and its config.json could not be fetched from the Hub). Pass --model path/config.json (or a model "
        "directory), or use a catalog name such as meta-llama/Llama-3.1-8B (`fnsft estimate --list-models`)."
    )
