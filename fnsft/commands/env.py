"""`fnsft env`: versions, devices and cache locations, for bug reports."""

from __future__ import annotations

import typer

from fnsft.console import out


def env(json_output: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Print package versions, devices and where caches live."""
    import json

    from fnsft.environment import collect_environment

    info = collect_environment()
    if json_output:
        out.print_json(json.dumps(info))
        return
    from rich.table import Table

    table = Table(title="fnsft environment", show_header=False)
    for key, value in info.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    out.print(table)
