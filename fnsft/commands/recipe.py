"""`fnsft recipe schema|validate|show`: the recipe format itself."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fnsft.console import out

app = typer.Typer(help="Recipe files: print the JSON schema, validate files, show a resolved recipe.", no_args_is_help=True)


@app.command("schema")
def schema() -> None:
    """Print the JSON schema of the current recipe version."""
    from fnsft.recipe.schema import Recipe

    out.print_json(json.dumps(Recipe.model_json_schema()))


@app.command("validate")
def validate(files: list[Path] = typer.Argument(..., help="Recipe YAML files.")) -> None:
    """Validate recipe files (every key and every cross-field rule); exits 2 naming the problems in each."""
    from fnsft.console import err, fail
    from fnsft.errors import RecipeError
    from fnsft.recipe.check import check
    from fnsft.recipe.load import load_recipe

    failed = 0
    for path in files:
        try:
            recipe = load_recipe(path).resolved()
            try:
                warnings = check(recipe)
            except RecipeError as exc:  # a broken rule is about the whole file, not one line of it
                raise RecipeError("\n".join(f"{path}: {line}" for line in str(exc).splitlines())) from None
            out.print(f"[green]ok[/]  {path}")
            for warning in warnings:
                err.print(f"[yellow]warning:[/] {path}: {warning}", highlight=False, soft_wrap=True)
        except RecipeError as exc:
            failed += 1
            fail(str(exc))
    if failed:
        raise typer.Exit(2)


@app.command("show")
def show(
    file: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set training.learning_rate=1e-4"),
) -> None:
    """Print the fully resolved recipe (defaults filled in)."""
    from fnsft.recipe.load import dump_recipe, load_recipe

    out.print(dump_recipe(load_recipe(file, sets=set_).resolved()), highlight=False)
