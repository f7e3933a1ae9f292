"""The run manifest: everything needed to reproduce and audit a run, written atomically as manifest.json.

Never contains tokens or other secrets: environment variables are not recorded, and recipe values are the
user's own recipe (which has no token field).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from fnsft import __version__
from fnsft.atomic import atomic_write_json
from fnsft.environment import devices, git_commit, hardware, package_versions
from fnsft.errors import FnsftError
from fnsft.models import base_hub_id
from fnsft.recipe.schema import Recipe
from fnsft.rundir import RunDir

MANIFEST_VERSION = 1


def recipe_sha256(recipe: Recipe) -> str:
    canonical = json.dumps(recipe.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_manifest(
    recipe: Recipe,
    *,
    model_identity: dict[str, Any],
    architecture: str | None,
    dataset: dict[str, Any],
    metrics: dict[str, Any],
    memory: dict[str, Any] | None,
    started: float,
    tokens_seen: int | None,
    weights_sha256: str | None,
    mask: dict[str, Any] | None = None,
    distributed: dict[str, Any] | None = None,
    disk: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": MANIFEST_VERSION,
        "fnsft_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": recipe.method.name,
        "recipe_sha256": recipe_sha256(recipe),
        "seed": recipe.training.seed,
        "base_model": {"name_or_path": recipe.model.name_or_path, "hub_id": base_hub_id(recipe.model),
                       "architecture": architecture, "identity": model_identity},
        "dataset": dataset,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "hardware": hardware(),
        "devices": devices(),  # decide bitwise equality besides packages and hardware (`fnsft reproduce` compares)
        "distributed": distributed or {"strategy": recipe.distributed.strategy, "world_size": 1},
        "wall_time_seconds": round(time.time() - started, 2),
        "tokens_seen": tokens_seen,
        "metrics": metrics,
        "memory": memory,
        "disk": disk,
        "mask": mask,
        "weights_sha256": weights_sha256,
    }


def write_manifest(run: RunDir, manifest: dict[str, Any]) -> None:
    atomic_write_json(run.manifest, manifest)


def read_manifest(run: RunDir) -> dict[str, Any]:
    """The run's manifest, or an FnsftError naming the file when it is unreadable or not a JSON object."""
    try:
        manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FnsftError(f"{run.manifest}: not found; is {run.root} a finished fnsft run?") from None
    except (OSError, ValueError) as exc:
        raise FnsftError(f"{run.manifest}: unreadable or not JSON ({exc}); the run directory is damaged") from None
    if not isinstance(manifest, dict):
        raise FnsftError(f"{run.manifest}: not a JSON object; the run directory is damaged")
    return manifest
