"""`fnsft push RUN_DIR --repo-id OWNER/NAME`: upload an adapter, model or exports with a generated model card.

Thin: the work is in :mod:`fnsft.hub`. `--dry-run` is fully offline.
"""

from __future__ import annotations

from pathlib import Path

import typer

from fnsft.errors import ExportError


def push(
    run_dir: Path = typer.Argument(..., help="A finished run directory (written by `fnsft train`)."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub repository, OWNER/NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private (only when created)."),
    adapter_only: bool = typer.Option(False, "--adapter-only", help="Push only the adapter (default for LoRA runs)."),
    merged: bool = typer.Option(False, "--merged", help="Push exports/merged/ (from `fnsft export --merge`)."),
    gguf: bool = typer.Option(False, "--gguf", help="Push the GGUF files and Modelfile from exports/."),
    revision: str | None = typer.Option(None, "--revision", help="Branch to commit to (created if missing)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the files, sizes and card; no network access."),
    base_model_id: str | None = typer.Option(
        None, "--base-model-id",
        help="Hub id of the base model, written into the pushed adapter config (needed for local bases).",
    ),
) -> None:
    """Upload a run to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`; never stored by fnsft)."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from fnsft.console import err, out
    from fnsft.export.files import human_size
    from fnsft.hub import PushWhat, execute_push, plan_push

    if adapter_only and merged:
        raise ExportError("--adapter-only and --merged exclude each other")
    what: PushWhat = "adapter" if adapter_only else ("merged" if merged else "default")
    plan = plan_push(run_dir, repo_id, what=what, gguf=gguf, private=private, revision=revision,
                     base_model_id=base_model_id)
    table = Table(title=f"{'would upload' if dry_run else 'uploading'} to {plan.repo_id}"
                  f"{'@' + plan.revision if plan.revision else ''} ({', '.join(plan.kinds)})")
    table.add_column("path in repository")
    table.add_column("from")
    table.add_column("size", justify="right")
    for item in plan.items:
        table.add_row(item.path_in_repo, str(item.local_path) if item.local_path else "(generated)",
                      human_size(item.size))
    table.add_row("[bold]total[/]", "", f"[bold]{human_size(plan.total_bytes)}[/]")
    out.print(table)
    if "adapter" in plan.kinds:
        out.print(f"adapter_config.json base_model_name_or_path: {plan.base_model_id}", highlight=False)
    if dry_run:
        out.print(Panel(Text(plan.card), title="README.md (model card)", expand=False))
        err.print("dry run: nothing was uploaded", highlight=False)
        return
    url = execute_push(plan)
    out.print(f"pushed in one commit: {url}", highlight=False)
