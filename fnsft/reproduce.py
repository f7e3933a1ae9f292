"""Reproducibility: re-run a finished run with its inputs pinned and check its weights hash.

`fnsft reproduce RUN_DIR` re-runs the run's resolved recipe.yaml into a new directory, with the dataset
fingerprint and base-model identity recorded in RUN_DIR/manifest.json pinned (a changed input is an error unless
the user allows it), then compares the new weights hash with the recorded one and lists every recorded fact that
differs (package versions, hardware, devices, dataset fingerprint, model identity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fnsft.errors import ModelError, TrainError
from fnsft.recipe.schema import Recipe
from fnsft.rundir import RunDir

#: Manifest sections whose differences can explain different weights (compared key by key).
COMPARED_FACTS = ("fnsft_version", "git_commit", "packages", "hardware", "devices", "dataset", "base_model", "seed")
#: Keys inside those sections that describe the run's outcome or location rather than its inputs.
IGNORED_FACTS = ("base_model.identity.path",)


class FactDifference(BaseModel):
    fact: str
    recorded: Any
    now: Any


class ReproduceReport(BaseModel):
    original: str
    reproduction: str
    recorded_sha256: str | None
    new_sha256: str | None
    differences: list[FactDifference]

    @property
    def weights_match(self) -> bool:
        return self.recorded_sha256 is not None and self.recorded_sha256 == self.new_sha256


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def fact_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[FactDifference]:
    """Input facts (see COMPARED_FACTS) that differ between two manifests, key by key."""
    old = _flatten({key: recorded.get(key) for key in COMPARED_FACTS}, "")
    new = _flatten({key: now.get(key) for key in COMPARED_FACTS}, "")
    return [
        FactDifference(fact=key, recorded=old.get(key), now=new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) and key not in IGNORED_FACTS
    ]


def _holds_nothing(path: Path) -> bool:
    """Absent, or left empty (but for a stale lock) by a start that was interrupted: free to use."""
    from fnsft.train.outdir import SCRATCH_NAMES

    return not path.exists() or (path.is_dir() and all(p.name in SCRATCH_NAMES for p in path.iterdir()))


def default_output_dir(run: RunDir) -> Path:
    """RUN-reproduce, or RUN-reproduce-2, -3, ... when one holds something."""
    candidate = run.root.with_name(f"{run.root.name}-reproduce")
    number = 2
    while not _holds_nothing(candidate):
        candidate = run.root.with_name(f"{run.root.name}-reproduce-{number}")
        number += 1
    return candidate


def reproduction_recipe(run: RunDir, manifest: dict[str, Any], output_dir: Path, allow_changed_inputs: bool) -> Recipe:
    """The run's resolved recipe, writing into ``output_dir``, with the recorded dataset fingerprint pinned."""
    from fnsft.recipe.load import load_recipe

    recipe = load_recipe(run.recipe).resolved()
    pin = None if allow_changed_inputs else manifest.get("dataset", {}).get("fingerprint") or recipe.data.fingerprint
    data = recipe.data.model_copy(update={"fingerprint": pin})
    output = recipe.output.model_copy(update={"dir": str(output_dir)})
    return recipe.model_copy(update={"data": data, "output": output})


def check_model_identity(recipe: Recipe, manifest: dict[str, Any], allow_changed_inputs: bool) -> None:
    """The base model must be the one the run recorded (weights digest or GGUF hash), unless allowed to differ."""
    from fnsft.models import resolve_model

    recorded = manifest.get("base_model", {}).get("identity") or {}
    now = resolve_model(recipe.model).identity
    changed = sorted(
        key for key in set(recorded) | set(now)
        if recorded.get(key) != now.get(key) and f"base_model.identity.{key}" not in IGNORED_FACTS
    )
    if changed and not allow_changed_inputs:
        raise ModelError(
            f"{recipe.model.name_or_path}: the base model differs from the one the run used ({', '.join(changed)} "
            "changed). Restore it, or pass --allow-changed-inputs to re-run anyway."
        )


def reproduce(run_dir: str | Path, output_dir: str | Path | None = None, *, allow_changed_inputs: bool = False) -> ReproduceReport:
    """Re-run a finished run into a new directory and compare weights hash and recorded facts.

    Args:
        run_dir: a finished run (recipe.yaml + manifest.json).
        output_dir: where the re-run goes (default RUN_DIR-reproduce[-N]); must not hold another run.
        allow_changed_inputs: re-run even if the dataset fingerprint or base-model identity changed (reported).

    Raises:
        TrainError: ``run_dir`` is not a finished run.
        DataError / ModelError: an input changed and ``allow_changed_inputs`` is off.
    """
    from fnsft.manifest import read_manifest
    from fnsft.train.run import run_training

    run = RunDir.at(run_dir)
    if not run.is_finished() or not run.recipe.is_file():
        raise TrainError(f"{run.root}: not a finished fnsft run (needs recipe.yaml, manifest.json and adapter/ or model/)")
    recorded = read_manifest(run)
    target = Path(output_dir) if output_dir is not None else default_output_dir(run)
    recipe = reproduction_recipe(run, recorded, target, allow_changed_inputs)
    check_model_identity(recipe, recorded, allow_changed_inputs)
    from fnsft.console import err

    err.print(f"reproducing {run.root} into {target}", highlight=False)
    result = run_training(recipe)
    return ReproduceReport(
        original=str(run.root),
        reproduction=str(result.run.root),
        recorded_sha256=recorded.get("weights_sha256"),
        new_sha256=result.manifest.get("weights_sha256"),
        differences=fact_differences(recorded, result.manifest),
    )
