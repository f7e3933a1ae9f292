"""`fnsft train --dry-run`: resolve and validate the whole run without loading weights."""

from __future__ import annotations

from fnsft.console import out
from fnsft.recipe.check import check
from fnsft.recipe.load import dump_recipe
from fnsft.recipe.schema import Recipe
from fnsft.rundir import RunDir


def dry_run(recipe: Recipe, processes: int = 1) -> None:
    """Rules, model config, dataset format on the first rows, chat template and output dir, then the resolved recipe.

    ``processes`` is the number of processes the real run would start (``--nproc`` × nodes).
    """
    from rich.table import Table

    from fnsft.data.check import encode_row
    from fnsft.data.prepare import preview, template_options
    from fnsft.data.templates import configure_template
    from fnsft.models import load_config, load_tokenizer, resolve_model
    from fnsft.train import outdir
    from fnsft.train.quiet import quiet_libraries

    warnings = check(recipe, processes)  # errors raise here, before anything is read
    quiet_libraries()
    source = resolve_model(recipe.model)
    config = load_config(source, recipe.model)
    detection, raw, sample = preview(recipe.data)
    checks = Table(title="fnsft train --dry-run", show_header=False)
    checks.add_row("model", f"{recipe.model.name_or_path} ({source.kind}, {config.model_type}, "
                   f"{config.num_hidden_layers} layers, hidden {config.hidden_size})")
    checks.add_row("data", f"{raw.source}: {len(raw.train)} rows, format {detection.format} ({detection.reason})")
    tokenizer = load_tokenizer(source, recipe.model)
    if "messages" in sample[0]:
        template = configure_template(tokenizer, recipe.data.chat_template)
        tokens = encode_row(tokenizer, sample[0], **template_options(recipe.data, template))
        checks.add_row("template", f"{template}: first row {len(tokens.input_ids)} tokens, "
                       f"{sum(tokens.assistant_masks)} of them trained on")
    run = RunDir.at(recipe.output.dir)
    state = "new" if not run.root.exists() or not any(run.root.iterdir()) else "exists"
    if state == "exists":
        latest = outdir.latest_complete_checkpoint(run)
        state += f" (resume point: {latest.name})" if latest else " (no checkpoint)"
    checks.add_row("output", f"{run.root} [{state}]")
    for warning in warnings:
        checks.add_row("[yellow]warning[/]", warning)
    out.print(checks)
    out.print(dump_recipe(recipe), highlight=False)

