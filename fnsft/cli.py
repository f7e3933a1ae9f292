"""The `fnsft` command line. Thin: each subcommand lives in fnsft/commands/<name>.py, parses, delegates, prints.

Nothing here imports torch/transformers/trl/peft, so `fnsft --help` and `fnsft estimate` start fast.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

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
from fnsft.errors import ExitStatus, FnsftError

#: Anywhere on the command line (or FNSFT_TRACEBACK=1): show the Python traceback behind an error message.
TRACEBACK_FLAG = "--traceback"
TRACEBACK_ENV = "FNSFT_TRACEBACK"

if TYPE_CHECKING:
    from typer._click import Context  # typer's own copy of click: the type its commands receive


class FnsftGroup(TyperGroup):
    """Turns every FnsftError into one readable line on stderr and exit code 2, and anything unexpected into one
    line and exit code 1: never a traceback unless asked for with --traceback / FNSFT_TRACEBACK=1."""

    def main(self, args=None, *pos, **kwargs):
        args = list(sys.argv[1:] if args is None else args)
        if TRACEBACK_FLAG in args[: args.index("--") if "--" in args else len(args)]:
            args.remove(TRACEBACK_FLAG)
            os.environ[TRACEBACK_ENV] = "1"  # inherited by the ranks of `fnsft train --nproc`
        return super().main(args, *pos, **kwargs)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise  # click's own: --help, usage errors (exit 2)
        except FnsftError as exc:
            _stop(exc, str(exc), exc.exit_code)
        except KeyboardInterrupt as exc:
            _stop(exc, "interrupted", ExitStatus.SIGINT)
        except Exception as exc:  # a bug or an unforeseen environment problem: one line, never a traceback
            first_line = next((line for line in str(exc).splitlines() if line.strip()), "")[:300]
            _stop(exc, f"unexpected {type(exc).__name__}: {first_line} (run with {TRACEBACK_FLAG} for details)",
                  ExitStatus.UNEXPECTED)

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.commands)  # registration order, not alphabetical


def _stop(exc: BaseException, message: str, code: int):
    from fnsft.console import fail
    from fnsft.train.supervise import record_exit_code

    if os.environ.get(TRACEBACK_ENV) == "1":
        _print_traceback(exc)
    fail(message)
    record_exit_code(int(code))  # a rank of `fnsft train --nproc`: tell the supervising fnsft why
    raise typer.Exit(int(code)) from None


def _print_traceback(exc: BaseException) -> None:
    """The whole chain, including the library exception an FnsftError replaced with ``raise ... from None``."""
    hidden = exc.__cause__ or exc.__context__
    if hidden is not None:
        sys.stderr.write("".join(traceback.format_exception(hidden)))
        sys.stderr.write("\nwhich fnsft reported as:\n")
    sys.stderr.write("".join(traceback.format_exception(exc)))


app = typer.Typer(
    cls=FnsftGroup,
    name="fnsft",
    help="Reproducible supervised fine-tuning of LLMs: LoRA/QLoRA (default) or full, on TRL. "
    f"Add {TRACEBACK_FLAG} to any command (or set {TRACEBACK_ENV}=1) to see the Python traceback behind an error.",
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
