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
    """Validate recipe files; exits 2 naming file and line of the first problem in each."""
    from fnsft.console import fail
    from fnsft.errors import RecipeError
    from fnsft.recipe.load import load_recipe

    failed = 0
    for path in files:
        try:
            load_recipe(path)
            out.print(f"[green]ok[/]  {path}")
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
