"""`fnsft mask` (issue "mask"): not built yet."""

import typer

from fnsft.errors import NotYetSupported

app = typer.Typer(help="ICA functional-network masks: build, show, match, eval (not built yet).", no_args_is_help=True)


@app.command("build")
def build() -> None:
    """Discover functional networks with ICA (not built yet)."""
    raise NotYetSupported("fnsft mask build is not built yet (tracked in the 'mask' issue)")
