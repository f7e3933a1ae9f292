"""`fnsft train`: recipe → run directory, with TRL's SFTTrainer doing the training."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnsft.atomic import atomic_write_json, staged_dir
from fnsft.console import err, out
from fnsft.console import warn as _warn
from fnsft.errors import FnsftError
from fnsft.hashing import files_sha256
from fnsft.quiet import quiet_libraries
from fnsft.recipe.check import check
from fnsft.recipe.schema import Recipe
from fnsft.rundir import RunDir
from fnsft.train import outdir


@dataclass
class RunResult:
    run: RunDir
    metrics: dict[str, Any]
    manifest: dict[str, Any]


def _info(message: str) -> None:
    err.print(message, highlight=False)


def weights_sha256(directory: Path) -> str:
    """Hash of the saved weight files (safetensors output is deterministic for identical tensors)."""
    return files_sha256(sorted(directory.glob("*.safetensors")))


def _save_final(trainer: Any, tokenizer: Any, target: Path) -> None:
    """Save the adapter (PEFT) or the whole model (full) into a temp dir, then rename into place."""
    with staged_dir(target) as staging:
        trainer.model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)


def _predicted_memory(recipe: Recipe, longest_example: int) -> dict[str, Any] | None:
    """The estimator's prediction for this run (None where the model shape is unknown to it).

    Batches are padded to their longest example, so the run's worst case is the dataset's longest example (capped
    at max_length; packed runs fill max_length). That is the prediction compared with the measured peak; the
    prediction at max_length, the bound for any data, is recorded beside it.
    """
    from fnsft.estimate import estimate, inputs_from_recipe
    from fnsft.train.build import cuda_available

    device = "cuda" if cuda_available() else "cpu"
    seq_len = recipe.data.max_length if recipe.data.packing else min(recipe.data.max_length, longest_example)
    try:
        breakdown = estimate(inputs_from_recipe(recipe, device=device, seq_len=seq_len))
        bound = estimate(inputs_from_recipe(recipe, device=device))
    except FnsftError as exc:
        _warn(f"memory estimate unavailable: {exc}")
        return None
    return {
        "total_bytes": breakdown.total,
        "seq_len": seq_len,
        "total_bytes_at_max_length": bound.total,
        "breakdown": breakdown.model_dump(mode="json"),
    }


def is_main_process() -> bool:
    """Rank 0 of a multi-process launch (or a single process): the one that writes the run directory."""
    return int(os.environ.get("RANK", "0")) == 0


def run_training(recipe: Recipe, *, resume: bool = False) -> RunResult:
    """Train one recipe into its run directory; the recipe is resolved and checked here, whoever the caller is."""
    started = time.time()
    recipe = recipe.resolved()  # method-dependent defaults: never trust the caller to have filled them
    warnings = check(recipe, int(os.environ.get("WORLD_SIZE", "1")))
    for warning in warnings if is_main_process() else []:
        _warn(warning)
    from fnsft.train.preflight import check_before_loading

    check_before_loading(recipe)  # seconds, before torch, weights or the run directory
    run = RunDir.at(recipe.output.dir)
    fresh = not run.root.exists()
    if is_main_process():
        outdir.refuse_if_locked(run)  # before judging the directory's contents: another run may be writing them
    checkpoint = outdir.prepare_output_dir(run, recipe, resume, _warn)
    from fnsft.train.signals import PreemptionCallback

    with outdir.RunLock(run) if is_main_process() else contextlib.nullcontext():
        try:  # inside the lock: only its holder may clean up, never a directory another run is writing
            if is_main_process():
                outdir.remove_staging(run, _warn)  # left by a run killed while saving
            with PreemptionCallback().installed() as preemption:  # SIGTERM/SIGINT: stop cleanly, see signals.py
                try:
                    return _train_locked(recipe, run, checkpoint, started, preemption)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    raise outdir.disk_full_error(run, exc) from exc
        except BaseException:  # FnsftError, any error or Ctrl-C: a run that trained nothing leaves nothing behind
            if fresh and is_main_process() and not outdir.checkpoints(run):
                shutil.rmtree(run.root, ignore_errors=True)
            raise


def _train_locked(recipe: Recipe, run: RunDir, checkpoint: Path | None, started: float, preemption: Any) -> RunResult:
    """One run, phase by phase (setup → data → model → trainer → mask → preflight → train → save → manifest)."""
    source, report_to = _setup(recipe)
    tokenizer, data = _load_data(recipe, source)
    precision, model = _load_model(recipe, source)
    architecture = model.config.model_type
    trainer, progress = _build_trainer(recipe, run, model, tokenizer, data, precision, report_to, preemption)
    mask = _attach_mask(trainer, recipe, source.identity, tokenizer, run)  # after PEFT wrapping: covers LoRA B too
    disk = _preflight(recipe, run, trainer, data, precision)
    preemption.expect_checkpoint(disk.checkpoint)
    metrics, probe = _before_training(recipe, run, trainer, tokenizer, data, checkpoint)
    train_output = _train(recipe, trainer, run, checkpoint, progress, preemption)
    _after_training(recipe, trainer, tokenizer, data, probe, train_output, metrics)
    target = run.adapter if recipe.method.is_peft else run.model
    if mask is not None:
        mask.remove()  # the saved weights are the plain model's, without the hooks
    if not is_main_process():
        return RunResult(run, metrics, {})
    _save_final(trainer, tokenizer, target)
    atomic_write_json(run.metrics, metrics)
    manifest = _write_manifest(recipe, run, source, architecture, data, metrics, started, trainer, target, mask, disk)
    _print_summary(run, target, metrics)
    return RunResult(run, metrics, manifest)


def _setup(recipe: Recipe) -> tuple[Any, list[str]]:
    """Seed, refuse missing trackers, resolve the model source (no weights yet)."""
    quiet_libraries()
    import torch

    from fnsft.models import resolve_model
    from fnsft.train.build import report_targets

    torch.manual_seed(recipe.training.seed)
    report_to = report_targets(recipe)
    source = resolve_model(recipe.model)
    if recipe.model.trust_remote_code:
        _warn(f"trust_remote_code is on: code from {recipe.model.name_or_path} will run on this machine")
    _info(f"[bold]model[/] {recipe.model.name_or_path} ({source.kind})   [bold]method[/] {recipe.method.name}")
    return source, report_to


def _load_data(recipe: Recipe, source: Any) -> tuple[Any, Any]:
    """The tokenizer, then the dataset: detected, converted, split, tokenized and checked against its pin."""
    from fnsft.data.check import summary_lines
    from fnsft.data.load import check_dataset_pin
    from fnsft.data.prepare import prepare_datasets
    from fnsft.models import load_tokenizer

    tokenizer = load_tokenizer(source, recipe.model)
    data = prepare_datasets(recipe.data, tokenizer, recipe.training.seed)
    check_dataset_pin(recipe.data, data.fingerprint)
    eval_rows = len(data.eval) if data.eval is not None else 0
    _info(
        f"[bold]data[/] {recipe.data.describe()}: {data.format} ({data.detection}); "
        f"{data.num_train} train / {eval_rows} eval rows; chat template: {data.template}"
    )
    for line in summary_lines(data.summary):
        _info(f"  {line}")
    if data.mixture is not None:
        from fnsft.data.mix import report_lines

        for line in report_lines(data.mixture, recipe.data.mix_by):
            _info(f"  {line}")
    for warning in data.summary.warnings:
        _warn(warning)
    return tokenizer, data


def _load_model(recipe: Recipe, source: Any) -> tuple[str, Any]:
    """The training precision and the base model's weights in it (quantized for QLoRA)."""
    from fnsft.models import load_causal_lm
    from fnsft.train.build import quantization_config, resolve_precision, torch_dtype

    precision = resolve_precision(recipe.training.precision)
    weights_dtype = precision if recipe.model.dtype == "auto" else recipe.model.dtype
    model = load_causal_lm(
        source, recipe.model, dtype=torch_dtype(weights_dtype), quantization_config=quantization_config(recipe, precision)
    )
    return precision, model


def _build_trainer(recipe: Recipe, run: RunDir, model: Any, tokenizer: Any, data: Any, precision: str,
                   report_to: list[str], preemption: Any) -> tuple[Any, Any]:
    """TRL's SFTTrainer with fnsft's callbacks (progress bar, preemption, completion marker); PEFT wraps here."""
    from transformers import PrinterCallback
    from trl import SFTTrainer

    from fnsft.train.build import lora_config, lora_dropout_refusal, sft_config
    from fnsft.train.callbacks import DiskBeforeSave, NonFiniteStop, RichProgressCallback
    from fnsft.train.order import longest_batch_first_trainer
    from fnsft.train.signals import CompletionMarkerCallback

    progress = RichProgressCallback()
    trainer_class = longest_batch_first_trainer() if recipe.training.longest_batch_first else SFTTrainer
    with lora_dropout_refusal(recipe, model):
        trainer = trainer_class(
            model=model,
            args=sft_config(recipe, run.checkpoints, precision, has_eval=data.eval is not None,
                            callbacks_report=report_to),
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            peft_config=lora_config(recipe),
            callbacks=[progress, preemption, NonFiniteStop(), DiskBeforeSave(), CompletionMarkerCallback()],
        )
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; the rich bar shows the same numbers
    return trainer, progress


def _preflight(recipe: Recipe, run: RunDir, trainer: Any, data: Any, precision: str) -> Any:
    """Report what trains, and refuse a run whose checkpoints would not fit on the disk; returns the disk need."""
    from fnsft.train.disk import check_free_disk, measure_saves, predict_disk, size

    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    _info(f"[bold]parameters[/] {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%)   precision {precision}")
    optimizer = getattr(trainer.args.optim, "value", trainer.args.optim)  # what the trainer will build (CPU: not fused)
    sizes = measure_saves(trainer.model, trainer.processing_class, optimizer, recipe.method.is_peft)
    eval_sets = 0 if data.eval is None else 1 + (len(data.eval_by_source) if data.mixture is not None else 0)
    need = predict_disk(recipe, sizes, train_rows=data.num_train, world_size=int(os.environ.get("WORLD_SIZE", "1")),
                        eval_sets=eval_sets)
    final_name = "adapter/" if recipe.method.is_peft else "model/"
    if is_main_process():
        _info(f"[bold]disk[/] about {size(need.peak)} at the peak: {need.describe(final_name)}")
        _warn_if_warmup_takes_the_run(recipe, trainer.args, data.num_train)
        check_free_disk(run.root, need, final_name)
    return need


def _warn_if_warmup_takes_the_run(recipe: Recipe, args: Any, train_rows: int) -> None:
    """A linear warmup that lasts the whole run never reaches the learning rate; over one step it trains at 0."""
    from fnsft.console import warn
    from fnsft.train.disk import planned_steps

    if recipe.training.lr_scheduler_type == "constant":  # no warmup in that schedule
        return
    steps, _ = planned_steps(recipe, train_rows, int(os.environ.get("WORLD_SIZE", "1")))
    warmup = args.get_warmup_steps(steps)
    if warmup < steps:
        return
    peak = args.learning_rate * (steps - 1) / warmup  # the scheduler's value at the last step: k / warmup × lr
    warn(f"the warmup ({warmup} steps) lasts all {steps} optimizer step{'s' if steps > 1 else ''} of this run: "
         + ("it trains at learning rate 0 and changes no weight" if steps == 1 else
            f"the learning rate peaks at {peak:.2e}, not {args.learning_rate:.2e}")
         + "; set training.warmup_steps (or a smaller warmup_ratio), or train more steps")


def _before_training(recipe: Recipe, run: RunDir, trainer: Any, tokenizer: Any, data: Any,
                     checkpoint: Path | None) -> tuple[dict[str, Any], list]:
    """Write the recipe (a fresh run) and measure the before-training baselines; returns metrics and the probe set."""
    from fnsft.train.callbacks import BeforeTrainingReport
    from fnsft.train.evaluate import exact_match

    main = is_main_process()
    if checkpoint is None and main:
        outdir.write_recipe(run, recipe)  # only now: everything the user gave has been read and checked
    metrics = _read_metrics(run) if checkpoint is not None else {}
    n_exact = min(recipe.evaluation.exact_match_samples, len(data.eval_conversations)) if main else 0
    probe = data.eval_conversations[:n_exact]
    if checkpoint is None:
        if probe:
            before = exact_match(
                trainer.model, tokenizer, probe, recipe.evaluation.max_new_tokens, recipe.data.chat_template_kwargs)
            metrics["exact_match_before"] = before.accuracy
        trainer.add_callback(BeforeTrainingReport(trainer, metrics, data.eval is not None, run.metrics if main else None,
                                                  by_source=data.eval_by_source if data.mixture is not None else None))
    else:
        _info(f"resuming from {checkpoint.name}")
    return metrics, probe


def _train(recipe: Recipe, trainer: Any, run: RunDir, checkpoint: Path | None, progress: Any, preemption: Any) -> Any:
    """trainer.train(); a SIGTERM/SIGINT during it ends here as TrainingInterrupted, after its checkpoint; a CUDA
    out-of-memory as a TrainError with the estimate's breakdown and what makes it fit."""
    import torch

    try:
        train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.OutOfMemoryError as exc:
        from fnsft.train.oom import out_of_memory_error

        raise out_of_memory_error(recipe, trainer.state.global_step, exc) from None
    finally:
        progress.stop()
        preemption.finishing(outdir.latest_complete_checkpoint(run), run.recipe)  # a signal now stops at once
    from fnsft.errors import TrainError
    from fnsft.train.callbacks import DiskBeforeSave, NonFiniteStop

    disk = next(c for c in trainer.callback_handler.callbacks if isinstance(c, DiskBeforeSave))
    if disk.short is not None:
        raise TrainError(disk.error_message(run.root, outdir.latest_complete_checkpoint(run), run.recipe))
    diverged = next(c for c in trainer.callback_handler.callbacks if isinstance(c, NonFiniteStop))
    if diverged.step is not None:
        raise TrainError(diverged.error_message(outdir.latest_complete_checkpoint(run)))
    if preemption.signum is not None:
        from fnsft.train.signals import TrainingInterrupted, interrupted_message

        saved = run.checkpoints / f"checkpoint-{trainer.state.global_step}"
        raise TrainingInterrupted(interrupted_message(preemption, saved, run.recipe), preemption.signum)
    return train_output


def _after_training(recipe: Recipe, trainer: Any, tokenizer: Any, data: Any, probe: list, train_output: Any,
                    metrics: dict[str, Any]) -> None:
    """The after-training evaluation (eval loss, exact match) and the log history, into ``metrics``."""
    from fnsft.train.evaluate import exact_match

    metrics["train_loss"] = train_output.training_loss
    metrics["global_step"] = trainer.state.global_step
    if data.eval is not None:
        metrics["eval_loss_after"] = trainer.evaluate()["eval_loss"]
    if data.mixture is not None:
        from fnsft.train.callbacks import eval_loss_by_source

        metrics["eval_loss_after_by_source"] = eval_loss_by_source(trainer, data.eval_by_source)
    if probe:
        after = exact_match(
            trainer.model, tokenizer, probe, recipe.evaluation.max_new_tokens, recipe.data.chat_template_kwargs)
        metrics["exact_match_after"] = after.accuracy
        metrics["exact_match_samples"] = after.total
        metrics["exact_match_examples"] = after.examples[:10]
    metrics["log_history"] = trainer.state.log_history


def _write_manifest(recipe: Recipe, run: RunDir, source: Any, architecture: str, data: Any, metrics: dict[str, Any],
                    started: float, trainer: Any, target: Path, mask: Any, disk: Any) -> dict[str, Any]:
    """manifest.json: versions, identities, data, metrics, predicted vs measured memory, the predicted disk, the
    weights' hash."""
    from fnsft.manifest import build_manifest, write_manifest
    from fnsft.train.callbacks import measured_peak_memory

    lengths = [len(ids) for ids in data.train["input_ids"]]
    memory = {"measured": measured_peak_memory(), "predicted": _predicted_memory(recipe, max(lengths, default=1))}
    manifest = build_manifest(
        recipe,
        model_identity=source.identity,
        architecture=architecture,
        dataset={"path": recipe.data.describe(), "format": data.format, "fingerprint": data.fingerprint,
                 "train_rows": data.num_train, "eval_rows": len(data.eval) if data.eval is not None else 0,
                 "summary": data.summary.to_dict(),
                 "sources": [r.to_dict() for r in data.mixture] if data.mixture is not None else None},
        metrics={k: v for k, v in metrics.items() if k not in ("log_history", "exact_match_examples")},
        memory=memory,
        disk={"predicted": disk.to_dict()},
        started=started,
        tokens_seen=int(sum(lengths) * (trainer.state.epoch or 0)),  # non-padding tokens × epochs (fractional)
        weights_sha256=weights_sha256(target),
        mask=mask.provenance if mask is not None else None,
        distributed=_distributed_facts(recipe),
    )
    write_manifest(run, manifest)
    return manifest


def _distributed_facts(recipe: Recipe) -> dict[str, Any]:
    from fnsft.train.launch import effective_strategy

    world = int(os.environ.get("WORLD_SIZE", "1"))
    return {"world_size": world, "strategy": effective_strategy(recipe) if world > 1 else "none"}


def _attach_mask(trainer: Any, recipe: Recipe, identity: dict, tokenizer: Any, run: RunDir) -> Any:
    """ICA masks as forward hooks on the (PEFT-wrapped) model; with no mask file one is built from the train data."""
    if recipe.mask is None:
        return None
    from fnsft.mask.apply import BuildOnTheFly, attach_training_masks

    build = BuildOnTheFly(tokenizer, recipe.data, recipe.training.seed, run.root / "mask.json", recipe.model.name_or_path)
    handle = attach_training_masks(trainer.model, recipe.mask, identity, build=build)
    for callback in handle.trainer_callbacks():
        trainer.add_callback(callback)
    source = recipe.mask.path or f"{run.root / 'mask.json'} (built from the training data)"
    _info(f"[bold]mask[/] {source}: {recipe.mask.mode} components {recipe.mask.components}")
    return handle


def _read_metrics(run: RunDir) -> dict[str, Any]:
    try:
        return json.loads(run.metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _print_summary(run: RunDir, target: Path, metrics: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="fnsft train: done", show_header=True)
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    if "eval_loss_after" in metrics:
        before = metrics.get("eval_loss_before")
        table.add_row("eval loss", f"{before:.4f}" if before is not None else "-", f"{metrics['eval_loss_after']:.4f}")
    for name, after in metrics.get("eval_loss_after_by_source", {}).items():  # a mixture: each source's held-out rows
        before = metrics.get("eval_loss_before_by_source", {}).get(name)
        table.add_row(f"  eval loss: {name}", f"{before:.4f}" if before is not None else "-", f"{after:.4f}")
    if "exact_match_after" in metrics:
        before = metrics.get("exact_match_before")
        n = metrics["exact_match_samples"]
        table.add_row(
            f"answer accuracy ({n} held-out)", f"{before:.1%}" if before is not None else "-", f"{metrics['exact_match_after']:.1%}"
        )
    if table.row_count:
        out.print(table)
    else:  # no held-out data: nothing to compare before and after
        out.print(f"fnsft train: done, train loss {metrics.get('train_loss', float('nan')):.4f} (no held-out rows to compare)")
    out.print(f"{'adapter' if target.name == 'adapter' else 'model'}: {target}")
    out.print(f"manifest: {run.manifest}")
    out.print(f"metrics:  {run.metrics}")
