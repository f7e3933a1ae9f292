"""Shared rich consoles: results to stdout, messages and progress to stderr."""

from rich.console import Console

out = Console()
err = Console(stderr=True)


def fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False, markup=True, soft_wrap=True)
