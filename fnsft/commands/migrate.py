"""`fnsft migrate-config`: the guide's PEFT ⇄ full "Migration Guide" as a command, and recipe schema upgrades.

Thin: the rules live in :mod:`fnsft.migrate` and :mod:`fnsft.recipe.versions`; this module parses options,
decides where the result goes, writes it atomically and prints a summary table (or a unified diff).
"""

from __future__ import annotations

import difflib
import shlex
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer


class MigrateTarget(StrEnum):
    full = "full"
    peft = "peft"
    qlora = "qlora"


def migrate_config(
    recipe: Path = typer.Argument(..., help="Recipe YAML to migrate (any supported schema version)."),
    to: MigrateTarget | None = typer.Option(None, "--to", help="full, peft (LoRA) or qlora.", case_sensitive=False),
    upgrade: bool = typer.Option(False, "--upgrade", help="Upgrade an older schema version (e.g. FunctionalNetworksSFT's "
                                 "flat flag YAML) to the current one, changing nothing else."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Where to write (default: next to RECIPE, "
                                       "NAME-full.yaml, NAME-peft.yaml, NAME-qlora.yaml or NAME-v1.yaml)."),
    gpu_memory: str | None = typer.Option(None, "--gpu-memory", help="Per-GPU memory budget, e.g. 80GiB: pick the "
                                          "largest per-device batch that fits (by the memory estimator)."),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU model whose memory is the budget, e.g. A100-80GB."),
    num_gpus: int | None = typer.Option(None, "--num-gpus", help="Total GPUs; the effective batch stays the same."),
    diff: bool = typer.Option(False, "--diff", help="Print a unified diff instead of writing a file."),
    in_place: bool = typer.Option(False, "--in-place", help="Overwrite RECIPE itself (atomically)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    from_tool: str | None = typer.Option(None, "--from", help="Convert another tool's config: auto, axolotl, "
                                         "llama-factory, torchtune or trl (auto is the default for a file that is "
                                         "not an fnsft recipe)."),
    report: bool = typer.Option(False, "--report", help="With --from: print the key-by-key table (source key, "
                                "value, fnsft key, status, note)."),
) -> None:
    """Convert a recipe between PEFT (LoRA/QLoRA) and full fine-tuning, upgrade its schema version, or turn an
    axolotl / LLaMA-Factory / torchtune / TRL config into an fnsft recipe.

    Every changed line gets a comment saying what it was and why; your own comments and key order are kept.
    """
    from fnsft.errors import RecipeError
    from fnsft.migrate.files import default_output_path, migrate_file, upgrade_file
    from fnsft.migrate.rules import AlreadyMigrated

    if from_tool is not None or (to is None and not upgrade and _is_foreign(recipe)):
        if to is not None or upgrade or diff or in_place or num_gpus is not None or gpu_memory or gpu:
            raise RecipeError("--from converts another tool's config and takes only -o, --force and --report; "
                              "migrate the recipe it writes with a second migrate-config")
        _convert_foreign(recipe, from_tool or "auto", output, force=force, report=report)
        return
    if report:
        raise RecipeError("--report goes with --from (another tool's config)")

    if to is None and not upgrade:
        raise RecipeError("say what to do: --to full|peft|qlora, or --upgrade (see `fnsft migrate-config --help`)")
    if to is None and (num_gpus is not None or gpu_memory or gpu):
        raise RecipeError("--num-gpus, --gpu-memory and --gpu need --to (they size a migrated recipe)")
    if in_place and output is not None:
        raise RecipeError("--in-place writes RECIPE itself; drop -o/--output, or drop --in-place")
    if diff and (in_place or output is not None):
        raise RecipeError("--diff only prints; drop -o/--output and --in-place")
    if gpu_memory and gpu:
        raise RecipeError("give --gpu-memory or --gpu, not both")
    budget = _gpu_budget(gpu_memory, gpu)
    command = _command_line(recipe, to, upgrade, num_gpus, gpu_memory, gpu)
    target = recipe if in_place else output or default_output_path(recipe, to.value if to else "v1")
    try:
        if to is not None:
            result = migrate_file(recipe, to.value, command=command, num_gpus=num_gpus, gpu_budget=budget,
                                  output=target)
        else:
            result = upgrade_file(recipe, command=command)
    except AlreadyMigrated as exc:
        _say_nothing_to_do(f"{recipe}: {exc}")
        return
    if to is None and result.upgrade is None:
        _say_nothing_to_do(f"{recipe}: already at the current recipe version; nothing to upgrade")
        return

    if diff:
        _print_diff(recipe, result.original_text, result.text)
        return
    _write(recipe, target, result.text, in_place=in_place, force=force)
    _print_summary(result)
    from fnsft.console import err, out
    from fnsft.migrate.fit import GiB

    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if result.peak_bytes is not None and budget is not None:
        out.print(f"estimated peak {result.peak_bytes / GiB:.1f} GiB per GPU (budget {budget[0] / GiB:.1f} GiB, "
                  f"{budget[1]})", highlight=False)
    out.print(f"wrote [bold]{target}[/]", highlight=False)


def _is_foreign(path: Path) -> bool:
    from fnsft.recipe import foreign

    return path.is_file() and foreign.detect_tool(foreign.read_config(path)) is not None


def _convert_foreign(source: Path, tool: str, output: Path | None, *, force: bool, report: bool) -> None:
    from fnsft.console import out
    from fnsft.recipe import foreign

    target = output or source.with_name(f"{source.stem}-fnsft.yaml")
    words = ["fnsft", "migrate-config", str(source), "--from", tool] + (["-o", str(output)] if output else [])
    result = foreign.convert_file(source, tool, command=shlex.join(words), output=target)
    if result.detected:
        out.print(f"{source}: read as a config of {result.tool} (from its keys; say --from to choose)", highlight=False)
    if report:
        _print_foreign_report(result)
    _write(source, target, result.text, in_place=False, force=force)
    counts = ", ".join(f"{result.count(status)} {status.value}" for status in foreign.Status)
    out.print(f"{len(result.rows)} keys: {counts}", highlight=False)
    out.print(f"wrote [bold]{target}[/]  (run it: fnsft train {target})", highlight=False)


def _print_foreign_report(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from fnsft.console import out
    from fnsft.recipe.foreign import Status, format_source

    table = Table(title=f"{result.tool} → fnsft", title_justify="left")
    for column in ("source key", "value", "fnsft key", "status", "note"):
        table.add_column(column, overflow="fold")
    styles = {Status.UNSUPPORTED: "yellow", Status.APPROXIMATED: "cyan", Status.UNSET: "dim"}
    for row in result.rows:
        value = "" if row.value is None else format_source(row.value)
        table.add_row(*(escape(cell) for cell in (row.source, value, row.target or "-", row.status.value, row.note)),
                      style=styles.get(row.status))
    out.print(table)


def _gpu_budget(gpu_memory: str | None, gpu: str | None) -> tuple[int, str] | None:
    """(bytes per GPU, the words the user gave) from --gpu-memory or --gpu, via the estimator's tables."""
    from fnsft.estimate.gpus import gpu_memory as memory_of_gpu
    from fnsft.estimate.gpus import parse_memory

    if gpu_memory:
        return parse_memory(gpu_memory), gpu_memory
    if gpu:
        return memory_of_gpu(gpu), gpu
    return None


def _command_line(recipe: Path, to: MigrateTarget | None, upgrade: bool, num_gpus: int | None,
                  gpu_memory: str | None, gpu: str | None) -> str:
    """The command, as a user would retype it (written into the output's header comment)."""
    words = ["fnsft", "migrate-config", str(recipe)]
    words += ["--to", to.value] if to else []
    words += ["--upgrade"] if upgrade and not to else []
    words += ["--num-gpus", str(num_gpus)] if num_gpus is not None else []
    words += ["--gpu-memory", gpu_memory] if gpu_memory else []
    words += ["--gpu", gpu] if gpu else []
    return shlex.join(words)


def _say_nothing_to_do(message: str) -> None:
    from fnsft.console import out

    out.print(f"{message} (no file written)", highlight=False)


def _write(source: Path, target: Path, text: str, *, in_place: bool, force: bool) -> None:
    from fnsft.atomic import atomic_write_text
    from fnsft.errors import RecipeError

    if not in_place and target.resolve() == source.resolve():
        raise RecipeError(f"{target} is the input recipe; use --in-place to overwrite it")
    if not in_place and target.exists() and not force:
        raise RecipeError(f"{target} already exists; use --force to overwrite it, or -o to write elsewhere")
    if target.exists() and not target.is_file():
        raise RecipeError(f"{target} is not a file")
    atomic_write_text(target, text)


def _print_diff(recipe: Path, before: str, after: str) -> None:
    from fnsft.console import out

    lines = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                 fromfile=str(recipe), tofile=f"{recipe} (migrated)")
    out.print("".join(lines), end="", highlight=False, markup=False, soft_wrap=True)


def _print_summary(result: Any) -> None:
    from rich.table import Table

    from fnsft.console import out
    from fnsft.migrate.rules import format_value

    if result.upgrade is not None:
        table = Table(title=f"recipe version {result.upgrade.from_version} → {result.upgrade.to_version}",
                      title_justify="left")
        for column in ("old key", "status", "now", "note"):
            table.add_column(column, overflow="fold")
        for change in result.upgrade.changes:
            style = "yellow" if change in result.upgrade.unmapped else None
            table.add_row(change.old, change.status.value, ", ".join(change.new) or "-", change.note, style=style)
        out.print(table)
    if result.changes:
        table = Table(title="changes", title_justify="left")
        for column in ("key", "was", "now", "why"):
            table.add_column(column, overflow="fold")
        for change in result.changes:
            now = "(removed)" if change.action == "remove" else format_value(change.new)
            was = format_value(change.old) + (" (default)" if change.was_default else "")
            table.add_row(change.path, was, now, change.reason)
        out.print(table)
