"""`fnsft train --dry-run`: resolve and validate the whole run without loading weights."""

from __future__ import annotations

from fnsft.console import err, out
from fnsft.errors import DataError, EstimateError, ModelError
from fnsft.models import ModelSource
from fnsft.recipe.check import check
from fnsft.recipe.load import dump_recipe
from fnsft.recipe.schema import Recipe
from fnsft.rundir import RunDir


def dry_run(recipe: Recipe, processes: int = 1) -> None:
    """Rules, model config, dataset format on the first rows, chat template and output dir, then the resolved recipe.

    ``processes`` is the number of processes the real run would start (``--nproc`` × nodes). A Hub model whose
    config cannot be read here (offline, gated) is described from the estimator's offline catalog instead, and what
    could not be checked without the Hub is shown as not checked, never passed over in silence.
    """
    from rich.table import Table

    from fnsft.models import resolve_model
    from fnsft.quiet import quiet_libraries
    from fnsft.train import outdir

    warnings = check(recipe, processes)  # errors raise here, before anything is read
    quiet_libraries()
    source = resolve_model(recipe.model)
    checks = Table(title="fnsft train --dry-run", show_header=False)
    model_row, hub_unavailable = _model_row(recipe, source)
    checks.add_row("model", model_row)
    for name, value in _data_rows(recipe, source, check_template=not hub_unavailable):
        checks.add_row(name, value)
    run = RunDir.at(recipe.output.dir)
    state = "new" if not run.root.exists() or not any(run.root.iterdir()) else "exists"
    if state == "exists":
        latest = outdir.latest_complete_checkpoint(run)
        state += f" (resume point: {latest.name})" if latest else " (no checkpoint)"
    checks.add_row("output", f"{run.root} ({state})")
    for warning in warnings:
        checks.add_row("[yellow]warning[/]", warning)
    out.print(checks)
    out.print(dump_recipe(recipe), highlight=False)


def _model_row(recipe: Recipe, source: ModelSource) -> tuple[str, bool]:
    """What the model is, from its config; for a Hub model that cannot be read here, from the offline catalog.

    Returns the row and whether the Hub model's files were unavailable.
    """
    from fnsft.hub_access import endpoint, hub_offline, unreachable_reason
    from fnsft.models import load_config

    name = recipe.model.name_or_path
    try:
        reason = None if source.kind != "hub" or hub_offline() else unreachable_reason(endpoint())
        if reason is not None:  # without the minutes of HTTP retries transformers would spend
            raise ModelError(f"{name}: cannot read the model config: the Hugging Face Hub ({endpoint()}) is "
                             f"unreachable ({reason})")
        config = load_config(source, recipe.model)
    except ModelError as exc:
        if source.kind != "hub":
            raise
        from fnsft.estimate.resolve import resolve_shape

        try:
            shape = resolve_shape(name)
        except EstimateError:
            raise exc from None
        if shape.source != "catalog":
            raise exc from None
        err.print(f"[yellow]note:[/] {str(exc).rstrip('.')}. Using the estimator's offline catalog entry for "
                  f"{shape.name} instead.", highlight=False, soft_wrap=True)
        return f"{name} (hub, from the offline catalog: {shape.model_type}, {shape.num_layers} layers, hidden " \
               f"{shape.hidden_size})", True
    return f"{name} ({source.kind}, {config.model_type}, {config.num_hidden_layers} layers, hidden " \
           f"{config.hidden_size})", False


def _data_rows(recipe: Recipe, source: ModelSource, check_template: bool) -> list[tuple[str, str]]:
    """The data row (format detected on the first rows) and the chat template row (the first row tokenized)."""
    from fnsft.data.check import encode_row
    from fnsft.data.load import is_hub_dataset
    from fnsft.data.prepare import preview, template_options
    from fnsft.data.templates import configure_template
    from fnsft.hub_access import check_hub_dataset
    from fnsft.models import load_tokenizer

    rows: list[tuple[str, str]] = []
    samples = []
    for name, part in recipe.data.source_sections():
        label = "data" if recipe.data.sources is None else f"data {name}"
        if is_hub_dataset(part):
            try:
                check_hub_dataset(str(part.path))  # seconds, not minutes of HTTP retries
            except DataError as exc:  # offline or the Hub unreachable: what cannot be checked here is said
                rows.append((label, f"[yellow]not checked[/]: {exc}"))
                continue
        detection, raw, sample = preview(part)
        rows.append((label, f"{raw.source}: {len(raw.train)} rows, format {detection.format} ({detection.reason})"))
        samples.append((part, sample[0]))
    if not check_template:
        return [*rows, ("template", "[yellow]not checked[/]: the model's tokenizer is not available without the Hub")]
    tokenizer = load_tokenizer(source, recipe.model)
    for part, first in samples:
        if "messages" in first:
            template = configure_template(tokenizer, recipe.data.chat_template)
            tokens = encode_row(tokenizer, first, **template_options(part, template))
            rows.append(("template", f"{template}: first row of {part.path} {len(tokens.input_ids)} tokens, "
                         f"{sum(tokens.assistant_masks)} of them trained on"))
    return rows
