"""`fnsft data preview|check`: what the model is trained on, from the tokenizer alone (no weights loaded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from fnsft.console import err, out

app = typer.Typer(help="See the training data as the model does: rendered rows with trained tokens, and a summary.",
                  no_args_is_help=True)

RECIPE_HELP = "Recipe YAML (its model and data sections); or give --model and --data."


def _sections(recipe: Path | None, model: str | None, data: str | None, sets: list[str]) -> tuple[Any, Any]:
    from fnsft.errors import RecipeError
    from fnsft.recipe.load import load_recipe
    from fnsft.recipe.schema import DataSection, ModelSection

    if recipe is None:
        if not (model and data):
            raise RecipeError("give a recipe file, or both --model and --data")
        return ModelSection(name_or_path=model), DataSection(path=data)
    loaded = load_recipe(recipe, sets=sets).resolved()
    model_section = loaded.model.model_copy(update={"name_or_path": model}) if model else loaded.model
    data_section = loaded.data.model_copy(update={"path": data}) if data else loaded.data
    return model_section, data_section


def _tokenizer(model_section: Any) -> Any:
    from fnsft.models import load_tokenizer, resolve_model
    from fnsft.quiet import quiet_libraries

    quiet_libraries()
    return load_tokenizer(resolve_model(model_section), model_section)


@app.command("preview")
def preview(
    recipe: Path | None = typer.Argument(None, help=RECIPE_HELP),
    model: str | None = typer.Option(None, "--model", help="Model id/dir/.gguf whose tokenizer renders the rows."),
    data: str | None = typer.Option(None, "--data", help="Dataset file/dir/Hub id."),
    rows: int = typer.Option(3, "--rows", min=1, help="How many rows, from the start."),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML page of the same view."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per row: text, trained spans, ids, mask."),
    ids: bool = typer.Option(False, "--ids", help="Show token ids (trained ones starred)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: --set data.train_on=last_turn"),
) -> None:
    """Rendered rows with the trained characters highlighted (plain [[ ]] markers when not a terminal)."""
    from fnsft.atomic import atomic_write_text
    from fnsft.data.prepare import sample_rows, template_options
    from fnsft.data.preview import html_page, plain, preview_rows, rich_text
    from fnsft.data.templates import configure_template

    model_section, data_section = _sections(recipe, model, data, set_)
    tokenizer = _tokenizer(model_section)
    template = configure_template(tokenizer, data_section.chat_template)
    previews = []
    for _name, part in data_section.source_sections():  # a mixture: the first rows of each source
        sample, wheres = sample_rows(part, rows)
        previews += preview_rows(tokenizer, sample, wheres, **template_options(part, template))
    if as_json:
        for row in previews:  # JSON lines: one object per row
            print(json.dumps(row.to_json(), ensure_ascii=False))
    else:
        for row in previews:
            if out.is_terminal:
                out.print(rich_text(row, ids=ids), highlight=False)
            else:
                print(plain(row, ids=ids))
    if html is not None:
        count = f"{len(previews)} row" + ("s" if len(previews) != 1 else "")
        summary = f"{count} of {data_section.describe()}, tokenizer of {model_section.name_or_path}, " \
                  f"chat template: {template}"
        atomic_write_text(html, html_page(previews, summary, ids=ids))
        err.print(f"wrote {html}", highlight=False)


@app.command("check")
def check(
    recipe: Path | None = typer.Argument(None, help=RECIPE_HELP),
    model: str | None = typer.Option(None, "--model", help="Model id/dir/.gguf whose tokenizer renders the rows."),
    data: str | None = typer.Option(None, "--data", help="Dataset file/dir/Hub id."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG histogram of tokens per row."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: --set data.max_length=512"),
) -> None:
    """Every row tokenized and masked as training will: lengths, trained share, cut rows, end-of-turn markers."""
    from fnsft.data.check import plot_lengths, summary_lines
    from fnsft.data.prepare import check_dataset

    model_section, data_section = _sections(recipe, model, data, set_)
    tokenizer = _tokenizer(model_section)
    all_facts = []
    for name, part in data_section.source_sections():  # a mixture: each source on its own
        summary, facts = check_dataset(part, tokenizer)
        all_facts += facts
        label = part.path if data_section.sources is None else f"{name} ({part.path})"
        out.print(f"[bold]data check[/] {label}", highlight=False)
        for line in summary_lines(summary):
            out.print(f"  {line}", highlight=False)
        for warning in summary.warnings:
            err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if plot is not None:
        plot_lengths(all_facts, data_section.max_length, str(plot))
        err.print(f"wrote {plot}", highlight=False)
