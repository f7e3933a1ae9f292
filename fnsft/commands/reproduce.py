"""`fnsft reproduce RUN_DIR`: re-run a finished run and check that its weights come out bit for bit the same."""

from __future__ import annotations

from pathlib import Path

import typer

from fnsft.console import out


def reproduce(
    run_dir: Path = typer.Argument(..., help="A finished run directory (recipe.yaml + manifest.json)."),
    output_dir: Path | None = typer.Option(
        None, "-o", "--output-dir", "--output_dir", help="Where the re-run goes (default RUN_DIR-reproduce)."
    ),
    allow_changed_inputs: bool = typer.Option(
        False, "--allow-changed-inputs", help="Re-run even if the dataset or base model changed since the run (reported)."
    ),
) -> None:
    """Re-run a run from its recipe into a new directory; exit 0 if the weights hash matches, 1 if not."""
    import json

    from fnsft.reproduce import reproduce as run_reproduction

    report = run_reproduction(run_dir, output_dir, allow_changed_inputs=allow_changed_inputs)
    out.print(f"reproduction: {report.reproduction}")
    if report.weights_match:
        out.print(f"[green]weights match[/] (sha256 {report.new_sha256})")
    else:
        out.print(f"[red]weights differ[/]: recorded {report.recorded_sha256}, now {report.new_sha256}")
    if report.differences:
        from rich.table import Table

        table = Table(title="recorded facts that differ", show_header=True)
        table.add_column("fact")
        table.add_column("recorded")
        table.add_column("now")
        for difference in report.differences:
            table.add_row(difference.fact, json.dumps(difference.recorded), json.dumps(difference.now))
        out.print(table)
    elif not report.weights_match:
        out.print("no recorded fact differs: the difference comes from something fnsft does not record")
    if not report.weights_match:
        raise typer.Exit(1)
