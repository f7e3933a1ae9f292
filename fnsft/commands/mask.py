"""`fnsft mask`: ICA functional networks — build a mask file, show it, match two, lesion-test one.

Thin: options are parsed here; the work is in fnsft.mask (imported inside the commands, so `--help` is fast).
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

app = typer.Typer(help="ICA functional-network masks: build, show, match, eval.", no_args_is_help=True)

RecipeArg = typer.Argument(None, help="Recipe YAML (its model: and data: sections). Optional with --model and --data.")
ModelOpt = typer.Option(None, "--model", "-m", help="Hub id, local dir, .gguf file or package://pkg/file.")
DataOpt = typer.Option(None, "--data", "-d", help="Dataset file/dir (json/jsonl/csv/parquet), any supported format.")


def _stem(text: str) -> str:
    name = Path(text.rstrip("/")).stem or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "model"


@app.command("build")
def build(
    recipe: Path | None = RecipeArg,
    model: str | None = ModelOpt,
    data: str | None = DataOpt,
    output: Path | None = typer.Option(None, "--output", "-o", help="Mask file to write (default masks/MODEL-DATA.json)."),
    components: int = typer.Option(10, "--components", "-k", help="Number of ICA components (networks)."),
    samples: int = typer.Option(100, "--samples", help="Sequences sampled (seeded) from the data."),
    max_tokens: int = typer.Option(20_000, "--max-tokens", help="Cap on the total tokens analysed."),
    layers: str | None = typer.Option(None, "--layers", help="Layers to capture: all (default), '0-11', '0,4,-1'."),
    capture: str = typer.Option("mlp-output", "--capture", help="mlp-output (hidden size, the paper's) or mlp-intermediate."),
    threshold: str = typer.Option("percentile=98", "--threshold", help="z=3 | percentile=98 | union=2 (percent of neurons)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for sampling, PCA and ICA (default: the recipe's, else 42)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Sequences per forward pass."),
    memory_budget_gb: float = typer.Option(2.0, "--memory-budget-gb", help="RAM for captured activations; beyond it they spill to a temp file."),
) -> None:
    """Discover functional networks: capture MLP activations, PCA + FastICA, threshold into neuron sets."""
    from fnsft.console import err, out
    from fnsft.errors import MaskError
    from fnsft.mask.build import BuildSettings, build_mask
    from fnsft.mask.capture import CAPTURE_POINTS
    from fnsft.mask.ica import ThresholdRule
    from fnsft.mask.inputs import load_model, sources_from, token_sequences
    from fnsft.mask.maskfile import save_mask

    if capture not in CAPTURE_POINTS:
        raise MaskError(f"--capture {capture!r}: use one of {', '.join(CAPTURE_POINTS)}")
    ThresholdRule.parse(threshold)  # fail before loading anything
    for name, value in (("--components", components), ("--samples", samples), ("--max-tokens", max_tokens), ("--batch-size", batch_size)):
        if value < 1:
            raise MaskError(f"{name} must be positive (got {value})")
    sources = sources_from(recipe, model, data, seed)
    settings = BuildSettings(
        components=components, samples=samples, max_tokens=max_tokens, layers=layers, capture=capture,  # type: ignore[arg-type]
        threshold=threshold, seed=sources.seed, batch_size=batch_size, memory_budget=int(memory_budget_gb * (1 << 30)),
    )
    target = output or Path("masks") / f"{_stem(sources.model.name_or_path)}-{_stem(sources.data.path or 'mixture')}.json"
    with err.status("loading model and data"):
        loaded = load_model(sources.model)
        tokens = token_sequences(sources.data, loaded.tokenizer, sources.seed, "train")
    with err.status(f"capturing activations and running ICA ({components} components)"):
        mask = build_mask(
            loaded.model, tokens.sequences, settings, model_name=loaded.name, source_identity=loaded.identity,
            pad_token_id=loaded.tokenizer.pad_token_id, data_source=tokens.source, data_format=tokens.format,
        )
    save_mask(mask, target)
    _component_table(mask, out)
    ica = mask.method.ica
    if not ica.converged:
        err.print(f"[yellow]warning:[/] FastICA did not converge in {ica.max_iter} iterations (tol {ica.tol}); "
                  "the networks may be unstable. Try more tokens or fewer components. Recorded in the file.")
    empty = [c.id for c in mask.components if c.neurons == 0]
    if empty:
        err.print(f"[yellow]warning:[/] components {empty} select no neurons under {mask.method.threshold}; "
                  "try a lower z or a percentile/union rule.")
    out.print(f"wrote {target} ({mask.data.tokens} tokens from {mask.data.samples} sequences, seed {mask.method.seed})")


def _component_table(mask, console) -> None:
    from rich.table import Table

    union = sum(len(n) for n in mask.union([c.id for c in mask.components]).values())
    table = Table(title=f"{mask.model.name}: {len(mask.components)} networks, {mask.capture}, {mask.method.threshold}")
    for column in ("component", "neurons", "share %", "layers", "variance %", "kurtosis"):
        table.add_column(column, justify="right")
    for c in mask.components:
        table.add_row(str(c.id), str(c.neurons), f"{100 * c.share:.2f}", f"{c.layers_touched}/{len(mask.layers)}",
                      f"{100 * c.variance_share:.2f}", f"{c.source_kurtosis:.2f}")
    table.add_row("union", str(union), f"{100 * union / mask.total_neurons:.2f}", "", "", "", style="bold")
    console.print(table)


@app.command("show")
def show(
    file: Path = typer.Argument(..., help="Mask file."),
    png: Path | None = typer.Option(None, "--png", help="Heat map to write (default: FILE with .png)."),
) -> None:
    """Per-component table and a layer × component heat map (PNG)."""
    from fnsft.console import out
    from fnsft.mask.maskfile import load_mask
    from fnsft.mask.report import heatmap

    mask = load_mask(file)
    ica = mask.method.ica
    out.print(
        f"model {mask.model.name} ({mask.model.architecture}, {mask.model.num_layers} layers); "
        f"data {mask.data.source} ({mask.data.samples} seqs, {mask.data.tokens} tokens, {mask.data.fingerprint[:19]}…); "
        f"seed {mask.method.seed}; ICA {'converged' if ica.converged else 'did NOT converge'} after {ica.n_iter} iterations",
        highlight=False,
    )
    _component_table(mask, out)
    out.print(f"heat map: {heatmap(mask, png or file.with_suffix('.png'))}")


@app.command("match")
def match(
    a: Path = typer.Argument(..., help="Mask file A (e.g. an individual decomposition)."),
    b: Path = typer.Argument(..., help="Mask file B (e.g. the templates)."),
    iou: float = typer.Option(0.2, "--iou", help="IoU at or above which two networks count as the same."),
) -> None:
    """Match each component of A to its best IoU partner in B (the paper's template comparison)."""
    from rich.table import Table

    from fnsft.console import out
    from fnsft.mask.maskfile import load_mask
    from fnsft.mask.report import match_masks

    matches = match_masks(load_mask(a), load_mask(b), iou)
    table = Table(title=f"{a.name} → {b.name} (IoU ≥ {iou:g})")
    for column in ("A component", "best in B", "IoU", "match"):
        table.add_column(column, justify="right")
    for m in matches:
        table.add_row(str(m.component), "-" if m.best is None else str(m.best), f"{m.iou:.3f}", "yes" if m.matched else "no")
    out.print(table)
    out.print(f"{sum(m.matched for m in matches)}/{len(matches)} components of A match a component of B")


@app.command("eval")
def evaluate(
    file: Path = typer.Argument(..., help="Mask file."),
    model: str | None = ModelOpt,
    data: str | None = DataOpt,
    recipe: Path | None = typer.Option(None, "--recipe", help="Take model and data from a recipe instead."),
    samples: int = typer.Option(50, "--samples", help="Eval sequences (seeded sample of the held-out split)."),
    max_tokens: int = typer.Option(5_000, "--max-tokens", help="Cap on eval tokens."),
    top: int | None = typer.Option(None, "--top", help="Union of the first N components (default: all)."),
    draws: int = typer.Option(5, "--draws", help="Random neuron sets per baseline kind (mean ± std)."),
    exclude_top_rms: int = typer.Option(0, "--exclude-top-rms", help="Drop the N highest-RMS channels from networks and random pool."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for sampling and random sets."),
    batch_size: int = typer.Option(8, "--batch-size"),
    other_weights: bool = typer.Option(False, "--other-weights", help="Allow a model with other weights of the same shape (e.g. fine-tuned)."),
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Where lesion.json/.png go (default: FILE-lesion/)."),
) -> None:
    """The lesion test: eval loss unmasked, per network, union, random sets of equal size, preserve-only."""
    from rich.table import Table

    from fnsft.console import err, out
    from fnsft.mask.build import cap_tokens, sample_sequences
    from fnsft.mask.capture import describe_architecture
    from fnsft.mask.evaluate import distinct_token_share, lesion_test, save_report, verdict
    from fnsft.mask.inputs import load_model, sources_from, token_sequences
    from fnsft.mask.maskfile import check_against_model, load_mask

    mask = load_mask(file)
    sources = sources_from(recipe, model, data, seed)
    with err.status("loading model and data"):
        loaded = load_model(sources.model)
        check_against_model(mask, describe_architecture(loaded.model), loaded.identity, same_weights=not other_weights)
        tokens = token_sequences(sources.data, loaded.tokenizer, sources.seed, "eval")
        sequences = cap_tokens(sample_sequences(tokens.sequences, samples, sources.seed), max_tokens)
    with err.status("lesion test") as status:
        report = lesion_test(
            loaded.model, mask, sequences, pad_token_id=loaded.tokenizer.pad_token_id, mask_file=str(file),
            model_name=loaded.name, top=top, draws=draws, seed=sources.seed, exclude_top_rms=exclude_top_rms,
            batch_size=batch_size, progress=lambda name: status.update(f"lesion test: {name}"),
        )
    table = Table(title=f"lesion test on {report.eval_tokens} tokens ({report.eval_sequences} sequences)")
    for column in ("condition", "neurons", "share %", "loss", "± std", "ppl", "Δ loss"):
        table.add_column(column, justify="right")
    for c in report.conditions:
        table.add_row(c.name, str(c.neurons), f"{100 * c.share:.2f}", f"{c.loss:.4f}",
                      "" if c.loss_std is None else f"{c.loss_std:.4f}", f"{c.perplexity:.2f}", f"{c.loss - report.baseline:+.4f}")
    out.print(table)
    reading = verdict(report, distinct_token_share(sequences))
    out.print(reading.reading, highlight=False)
    for warning in reading.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    json_path, png_path = save_report(report, out_dir or file.with_name(f"{file.stem}-lesion"), reading)
    out.print(f"wrote {json_path} and {png_path}")
