"""The `fnsft` command line. Thin: each subcommand lives in fnsft/commands/<name>.py, parses, delegates, prints.

Nothing here imports torch/transformers/trl/peft, so `fnsft --help` and `fnsft estimate` start fast.
"""

from __future__ import annotations

import sys

import click
import typer
from typer.core import TyperGroup

from fnsft.commands import data as data_cmd
from fnsft.commands import env as env_cmd
from fnsft.commands import estimate as estimate_cmd
from fnsft.commands import export as export_cmd
from fnsft.commands import mask as mask_cmd
from fnsft.commands import migrate as migrate_cmd
from fnsft.commands import push as push_cmd
from fnsft.commands import recipe as recipe_cmd
from fnsft.commands import reproduce as reproduce_cmd
from fnsft.commands import train as train_cmd
from fnsft.errors import FnsftError


class FnsftGroup(TyperGroup):
    """Turns every FnsftError into one readable line on stderr and exit code 2 (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FnsftError as exc:
            from fnsft.console import fail
            from fnsft.train.supervise import record_exit_code

            fail(str(exc))
            record_exit_code(exc.exit_code)  # a rank of `fnsft train --nproc`: tell the supervising fnsft why
            raise typer.Exit(exc.exit_code) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # registration order, not alphabetical


app = typer.Typer(
    cls=FnsftGroup,
    name="fnsft",
    help="Reproducible supervised fine-tuning of LLMs: LoRA/QLoRA (default) or full, on TRL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("estimate")(estimate_cmd.estimate)
train_cmd.register(app)
app.command("migrate-config")(migrate_cmd.migrate_config)
app.add_typer(mask_cmd.app, name="mask")
app.command("export")(export_cmd.export)
app.command("push")(push_cmd.push)
app.add_typer(recipe_cmd.app, name="recipe")
app.add_typer(data_cmd.app, name="data")
app.command("env")(env_cmd.env)
app.command("reproduce")(reproduce_cmd.reproduce)


def main() -> None:
    """Console entry point: accepts the guide's multi-value flags, then runs the Typer app."""
    sys.argv[1:] = train_cmd.join_multi_value_flags(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
