"""migrate-config on files: read any supported version, apply the rules (and the optional GPU sizing), write
the changes into the user's YAML with comments and key order kept, and check that the text reads back the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from fnsft.errors import FnsftError
from fnsft.migrate.fit import fit_to_gpu, model_params
from fnsft.migrate.rules import (
    Change,
    StaleComments,
    Target,
    apply_to_yaml,
    lr_warnings,
    merge_changes,
    migrate,
    spread_over_gpus,
)
from fnsft.recipe import roundtrip
from fnsft.recipe.load import load_recipe, parse_yaml_file, validate
from fnsft.recipe.schema import Recipe
from fnsft.recipe.versions import UpgradeResult, plan_upgrade


class FileMigration(BaseModel):
    """A migrated or upgraded recipe file: the new text, what changed and why, ready to write or diff."""

    source: str
    original_text: str
    text: str
    recipe: Recipe
    changes: list[Change] = []
    upgrade: UpgradeResult | None = None  # set when the file was an older schema version
    warnings: list[str] = []
    peak_bytes: int | None = None  # the estimator's peak per GPU, when sized for a GPU budget


def _load_current(path: Path) -> tuple[CommentedMap, UpgradeResult | None, Recipe]:
    """Parse, upgrade to the current schema (keeping comments) and validate a recipe file."""
    raw = parse_yaml_file(path)
    roundtrip.strip_generated_comments(raw)
    upgraded = plan_upgrade(raw, str(path))
    recipe = validate(upgraded.data, str(path))  # the upgraded map keeps each old key's line for errors
    return upgraded.data, upgraded if upgraded.from_version != upgraded.to_version else None, recipe


def _finish(path: Path, root: CommentedMap, recipe: Recipe, **fields: Any) -> FileMigration:
    """Dump the edited YAML and check that it reads back as exactly the recipe the rules produced."""
    text = roundtrip.dump(root)
    reread = validate(YAML(typ="rt").load(text), f"{path} (migrated)")
    if reread != recipe:
        raise AssertionError(f"the migrated YAML of {path} does not read back as the migrated recipe")
    return FileMigration(source=str(path), original_text=path.read_text(encoding="utf-8"), text=text, recipe=recipe,
                         **fields)


def output_dirs_taken(source: Path, output: Path | None) -> Callable[[str], bool]:
    """Whether a run directory is claimed: by another recipe in the source's folder (the shipped recipes/ pairs:
    ``peft-7b`` → full must not train into ``full-7b``'s runs/full-7b), or by an existing directory (relative to
    the current directory, as ``fnsft train`` reads it). The source and the file being written do not count.
    """
    skip = {source.resolve(), *([output.resolve()] if output is not None else [])}
    claimed = set()
    for sibling in sorted([*source.parent.glob("*.yaml"), *source.parent.glob("*.yml")]):
        if sibling.resolve() in skip:
            continue
        try:
            claimed.add(os.path.normpath(load_recipe(sibling).output.dir))
        except (FnsftError, OSError):  # a file beside it that is no recipe claims nothing
            continue
    return lambda run_dir: os.path.normpath(run_dir) in claimed or Path(run_dir).expanduser().exists()


def migrate_file(path: str | Path, to: Target, *, command: str, num_gpus: int | None = None,
                 gpu_budget: tuple[int, str] | None = None, num_params: int | None = None,
                 output: Path | None = None) -> FileMigration:
    """Migrate a recipe file (any supported version) to ``to``, keeping the user's comments and key order.

    Args:
        path: The recipe file; never modified here.
        to: ``full``, ``peft`` or ``qlora``.
        command: The command line that asked for it, written into the header comment.
        num_gpus: Total GPUs for the new recipe (the effective batch is kept); None keeps the recipe's.
        gpu_budget: (bytes per GPU, how the user said it) to size the batch and memory savers with the estimator.
        num_params: Model size for the lr rule (None: :func:`model_params`).
        output: Where the result will be written (its own ``output.dir`` does not count as taken).

    Raises:
        RecipeError: invalid recipe (with file and line), unknown version, or a batch that cannot be spread.
        AlreadyMigrated: the recipe already uses that method.
        EstimateError: with ``gpu_budget``, when nothing fits (the message lists ways to make it fit).
    """
    path = Path(path)
    root, upgraded, recipe = _load_current(path)
    migration = migrate(recipe, to, num_params=num_params if num_params is not None else model_params(recipe.model),
                        output_dir_taken=output_dirs_taken(path, output))
    result, changes = migration.recipe, migration.changes
    if num_gpus is not None:
        result, gpu_changes = spread_over_gpus(result, num_gpus)
        changes = merge_changes(changes, gpu_changes)
    peak = None
    if gpu_budget is not None:
        fit = fit_to_gpu(result, *gpu_budget)
        result, changes, peak = fit.recipe, merge_changes(changes, fit.changes), fit.peak_bytes
    header = [f"{roundtrip.HEADER_PREFIX}: {migration.source_method} → {migration.target_method} from {path}"
              + (f" (recipe version {upgraded.from_version} upgraded to {upgraded.to_version})" if upgraded else ""),
              f"{roundtrip.HEADER_PREFIX}: made by `{command}`"]
    apply_to_yaml(root, changes, header, StaleComments(migration.source_method, migration.target_method, path.name))
    return _finish(path, root, result, changes=changes, upgrade=upgraded, warnings=lr_warnings(result),
                   peak_bytes=peak)


def upgrade_file(path: str | Path, *, command: str) -> FileMigration:
    """Upgrade a recipe file to the current schema version; ``upgrade`` is None when it already is current."""
    path = Path(path)
    root, upgraded, recipe = _load_current(path)
    if upgraded is not None:
        roundtrip.set_header(root, [
            f"{roundtrip.HEADER_PREFIX}: recipe version {upgraded.from_version} upgraded to {upgraded.to_version} "
            f"from {path}", f"{roundtrip.HEADER_PREFIX}: made by `{command}`"])
    return _finish(path, root, recipe, upgrade=upgraded)


def default_output_path(path: str | Path, suffix: str) -> Path:
    """Where a migrated recipe goes without ``-o``: next to the input, ``name-SUFFIX.yaml``."""
    path = Path(path)
    return path.with_name(f"{path.stem}-{suffix}{path.suffix or '.yaml'}")
