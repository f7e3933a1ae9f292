"""`fnsft train`: a recipe file and/or the guide's flags → a run directory.

The guide's flags are generated from one table, :data:`fnsft.recipe.fields.FLAG_PATHS` (plus the two method
flags), with the help text of the schema field each one sets. Help shows the guide's underscore spelling
(``--no_peft``); the hyphen spelling (``--no-peft``) is accepted too, for every option. Flags override the
recipe file; ``--set`` overrides both.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

import typer
from pydantic_core import PydanticUndefined
from typer.core import TyperCommand

from fnsft.recipe.fields import FLAG_PATHS, METHOD_FLAGS, schema_field

if TYPE_CHECKING:
    from typer._click import Context  # typer's own copy of click: the type its commands receive

#: Flags whose values the guide writes space-separated (``--lora_target_modules q_proj k_proj``).
MULTI_VALUE_FLAGS = ("--lora_target_modules", "--lora-target-modules")


def join_multi_value_flags(argv: list[str]) -> list[str]:
    """Fold ``--lora_target_modules a b c`` into ``--lora_target_modules a,b,c`` (Click options take one value)."""
    result: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        result.append(token)
        i += 1
        if token in MULTI_VALUE_FLAGS:
            values = []
            while i < len(argv) and not argv[i].startswith("-") and not argv[i].endswith((".yaml", ".yml")):
                values.append(argv[i])
                i += 1
            result.append(",".join(values))
    return result


def _spelling_key(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


class TrainCommand(TyperCommand):
    """Accepts each option in both spellings (``--no-peft`` = ``--no_peft``) while help shows only one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rich_markup_mode = None  # the plain layout: rich's table cuts these long option names at 80 columns

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        shown = {_spelling_key(name): name for param in self.params for name in [*param.opts, *param.secondary_opts]}
        normalized = []
        for position, arg in enumerate(args):
            if arg == "--":
                normalized.extend(args[position:])
                break
            name, equals, value = arg.partition("=")
            if name.startswith("--") and _spelling_key(name) in shown:
                arg = shown[_spelling_key(name)] + equals + value
            normalized.append(arg)
        return super().parse_args(ctx, normalized)


def _option_type(annotation: Any) -> type:
    """The click type of a guide flag: the schema field's bool/int/float, else a string pydantic validates."""
    kinds = [kind for kind in get_args(annotation) if kind is not type(None)] or [annotation]
    kinds = [get_args(kind)[0] if get_origin(kind) is Annotated else kind for kind in kinds]  # PositiveInt → int
    return kinds[0] if len(kinds) == 1 and kinds[0] in (bool, int, float) else str


def _help(path: str) -> str:
    field = schema_field(path)
    text = field.description or ""
    default = field.default
    if default is not None and default is not PydanticUndefined and "Default" not in text:
        shown = {True: "on", False: "off"}.get(default, default) if isinstance(default, bool) else default
        text += f" Default: {shown}."
    choices = [str(choice) for choice in get_args(field.annotation)] if get_origin(field.annotation) is Literal else []
    return text + (f" One of: {', '.join(choices)}." if choices else "")


def _guide_option(flag: str) -> inspect.Parameter:
    if flag in METHOD_FLAGS:
        option = typer.Option(False, f"--{flag}", help=METHOD_FLAGS[flag][1], show_default=False, metavar="")
        return inspect.Parameter(flag, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=bool)
    kind = _option_type(schema_field(FLAG_PATHS[flag]).annotation)
    names = (f"--{flag}/--no_{flag}",) if kind is bool else (f"--{flag}",)
    option = typer.Option(None, *names, help=_help(FLAG_PATHS[flag]), show_default=False,
                          metavar="" if kind is bool else None)
    return inspect.Parameter(flag, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None)


def guide_flag_names() -> list[str]:
    """The guide flags of `fnsft train`, in help order: FLAG_PATHS with the method flags after --output_dir."""
    names = list(FLAG_PATHS)
    at = names.index("output_dir") + 1
    return [*names[:at], *METHOD_FLAGS, *names[at:]]


def train(
    recipe: Path | None = typer.Argument(None, help="Recipe YAML (recipes/*.yaml). Optional when flags give model and data."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override any recipe key: --set training.optimizer=adamw_8bit"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint in the run dir.", metavar=""),
    nproc: int | None = typer.Option(
        None, "--nproc", help="Processes per node (GPUs): launches through accelerate with the recipe's distributed strategy."
    ),
    nnodes: int | None = typer.Option(None, "--nnodes", help="Machines in the run (distributed.num_nodes); start one fnsft train on each."),
    node_rank: int | None = typer.Option(None, "--node-rank", help="This machine's index, 0 to nnodes-1 (distributed.node_rank)."),
    master_addr: str | None = typer.Option(None, "--master-addr", help="Address of node 0, where the nodes meet (distributed.master_addr)."),
    master_port: int | None = typer.Option(None, "--master-port", help="Port on node 0 for the rendezvous (distributed.master_port)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve and validate everything, load no weights.", metavar=""),
    probe: bool = typer.Option(
        False, "--probe", metavar="",
        help="Run one step (forward+backward+optimizer) on the longest batch, print measured vs predicted peak memory.",
    ),
    **guide_flags: Any,
) -> None:
    """Fine-tune a model (LoRA by default; --no_peft for full, --use_4bit for QLoRA)."""
    from fnsft.recipe.load import load_recipe

    flags = {name: (value or None) if name in METHOD_FLAGS else value for name, value in guide_flags.items()}
    flags["lora_target_modules"] = _modules(flags.get("lora_target_modules"))
    placement = {"num_nodes": nnodes, "node_rank": node_rank, "master_addr": master_addr, "master_port": master_port}
    sets = [*set_, *(f"distributed.{key}={value}" for key, value in placement.items() if value is not None)]
    resolved = load_recipe(recipe, flags=flags, sets=sets).resolved()
    if dry_run:
        from fnsft.train.launch import world_size
        from fnsft.train.plan import dry_run as run_dry

        run_dry(resolved, world_size(resolved, nproc))
        return
    if probe:
        from fnsft.errors import NotYetSupported
        from fnsft.train.probe import run_probe

        if launch_needed(resolved, nproc) or resume:
            raise NotYetSupported("--probe measures one process from a fresh start: drop --nproc/--resume")
        run_probe(resolved)
        return
    if launch_needed(resolved, nproc):
        raise typer.Exit(launch(resolved, nproc, resume))
    from fnsft.train.run import run_training

    run_training(resolved, resume=resume)


def _with_guide_flags(command: Any) -> Any:
    """Give ``command`` one keyword option per guide flag (after the recipe argument) in place of ``**guide_flags``."""
    own = [p for p in inspect.signature(command).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    command.__signature__ = inspect.Signature([own[0], *map(_guide_option, guide_flag_names()), *own[1:]])
    return command


_with_guide_flags(train)


#: Set in the processes that `fnsft train --nproc` starts, so they train instead of launching again.
LAUNCHED_ENV = "FNSFT_LAUNCHED"


def launch_needed(recipe, nproc: int | None) -> bool:
    import os

    from fnsft.train.launch import world_size

    return os.environ.get(LAUNCHED_ENV) != "1" and world_size(recipe, nproc) > 1


def launch(recipe, nproc: int | None, resume: bool) -> int:
    """Run this recipe in N processes through `accelerate launch`; returns their exit code."""
    import os
    import tempfile

    from fnsft.console import err
    from fnsft.recipe.load import dump_recipe
    from fnsft.train.launch import check_launch, detect_launch_facts, launch_command
    from fnsft.train.supervise import run_supervised

    check_launch(recipe, nproc, detect_launch_facts())
    with tempfile.TemporaryDirectory(prefix="fnsft-launch-") as tmp:
        recipe_file = Path(tmp) / "recipe.yaml"
        recipe_file.write_text(dump_recipe(recipe), encoding="utf-8")
        program = ["-m", "fnsft.cli", "train", str(recipe_file), *(["--resume"] if resume else [])]
        command = launch_command(recipe, nproc, program)
        err.print(f"launching: {' '.join(command)}", highlight=False)
        return run_supervised(command, {**os.environ, LAUNCHED_ENV: "1"})


def _modules(value: str | None) -> str | list[str] | None:
    if value is None:
        return None
    names = [name for part in value.split(",") for name in part.split() if name]
    return "auto" if names == ["auto"] else names


def register(app: typer.Typer) -> None:
    app.command("train", cls=TrainCommand)(train)
