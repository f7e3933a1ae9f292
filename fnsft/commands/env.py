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

    table = Table(title="fnsft environment (--json for all of it as JSON)", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in info.items():
        if isinstance(value, dict):  # one row per entry, under a section row (versions, devices, caches)
            table.add_section()
            table.add_row(key, "")
            for name, item in value.items():
                table.add_row(f"  {name}", json.dumps(item) if isinstance(item, dict | list) else str(item))
            continue
        table.add_row(key, json.dumps(value) if isinstance(value, list) else str(value))
    out.print(table)
