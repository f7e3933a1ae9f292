"""Trainer callbacks: a rich progress bar with live loss (rank 0 only), the evaluation before training, and
peak-memory measurement."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from fnsft.atomic import atomic_write_json
from fnsft.console import err


class RichProgressCallback(TrainerCallback):
    """One bar for optimizer steps showing the latest loss and learning rate.

    Without a terminal (CI logs, `docker logs`, a redirected file) a bar would only appear at the end, so each
    step that logged something prints one plain line instead: its loss, its evaluation loss (only when one was
    computed at that step) and the learning rate the step used (transformers logs the rate before the scheduler
    steps; ``lr 0.00e+00`` on step 1 is real: a linear warmup starts at 0). The line of a step is printed when the next step
    begins or training ends, so a loss and the evaluation right after it share one line. Evaluations after
    training (the after-training report) print nothing here: the run's summary table shows them.
    """

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = None
        self.last: dict[str, float] = {}
        self.eval_step: int | None = None  # the step the shown eval loss was computed at
        self.pending: tuple[int, int, dict[str, float]] | None = None  # (step, max steps, values) not printed yet
        self.finished = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.finished = False
        if not err.is_terminal or not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, stats="",
                                           phase="training")

    def on_step_begin(self, args, state, control, **kwargs):
        self._flush()

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, stats=self._stats())

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.progress is not None:  # the bar stands still while the held-out rows are evaluated: say so
            label = "evaluating before training" if state.global_step == 0 else f"evaluating at step {state.global_step}"
            self.progress.update(self.task, phase=label)

    def on_evaluate(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, phase="training")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.finished or not state.is_world_process_zero:
            return
        shown = {key: value for key, value in (logs or {}).items() if key in ("loss", "eval_loss", "learning_rate")}
        self.last.update(shown)
        if "eval_loss" in shown:
            self.eval_step = state.global_step
        if self.progress is not None:
            self.progress.update(self.task, stats=self._stats())
        elif "loss" in shown or "eval_loss" in shown:
            if self.pending is not None and self.pending[0] != state.global_step:
                self._flush()
            step, total, values = self.pending or (state.global_step, state.max_steps, {})
            self.pending = (step, total, values | shown)

    def _flush(self) -> None:
        if self.pending is not None:
            step, total, values = self.pending
            self.pending = None
            err.print(f"step {step}/{total}  {self._stats(values, eval_label='eval')}", highlight=False)

    def _stats(self, values: dict[str, float] | None = None, eval_label: str | None = None) -> str:
        values = self.last if values is None else values
        parts = []
        if "loss" in values:
            parts.append(f"loss {values['loss']:.4f}")
        if "eval_loss" in values:
            parts.append(f"{eval_label or f'eval@{self.eval_step}'} {values['eval_loss']:.4f}")
        if "learning_rate" in values:
            parts.append(f"lr {values['learning_rate']:.2e}")
        return "  ".join(parts)

    def on_train_end(self, args, state, control, **kwargs):
        self.stop()

    def stop(self) -> None:
        """End of training: the last step's line is printed, later evaluations are not (see the class doc)."""
        self._flush()
        self.finished = True
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def measured_peak_memory() -> dict[str, int | str]:
    """Peak memory of this run, in the units the estimator predicts (one helper for both, so they compare)."""
    import torch

    from fnsft.estimate.measure import peak_rss_bytes

    if torch.cuda.is_available():
        return {
            "device": "cuda",
            "max_memory_allocated": int(torch.cuda.max_memory_allocated()),
            "max_memory_reserved": int(torch.cuda.max_memory_reserved()),
            "peak_rss": peak_rss_bytes(),
        }
    return {"device": "cpu", "peak_rss": peak_rss_bytes()}


def eval_loss_by_source(trainer: Any, by_source: dict[str, Any]) -> dict[str, float]:
    """The evaluation loss of each source's held-out rows (a mixture's per-source report).

    Logged as ``eval_<source>_loss``, not ``eval_loss``: that is the whole eval split's, which the progress lines,
    trackers and best-model selection read, and a source's loss logged under it would pass for it.
    """
    return {name: trainer.evaluate(eval_dataset=dataset, metric_key_prefix=f"eval_{name}")[f"eval_{name}_loss"]
            for name, dataset in by_source.items()}


class BeforeTrainingReport(TrainerCallback):
    """A fresh run's "before" numbers: the evaluation loss, computed once training has begun, and metrics.json.

    ``trainer.evaluate()`` before ``trainer.train()`` lets accelerate mark the model as prepared (for evaluation,
    unwrapped); ``train()`` then skips wrapping it in DistributedDataParallel and every rank trains on its own
    batches with unsynchronised gradients (measured with 2 processes: the ranks' LoRA weights parted after the
    first update). At ``on_train_begin`` the model is already wrapped, and evaluating changes no training state.
    """

    def __init__(self, trainer: Any, metrics: dict[str, Any], evaluate: bool, metrics_file: Path | None,
                 by_source: dict[str, Any] | None = None) -> None:
        self.trainer = trainer
        self.metrics = metrics
        self.evaluate = evaluate
        self.metrics_file = metrics_file
        self.by_source = by_source  # a mixture's held-out rows per source: each gets its own loss

    def on_train_begin(self, args, state, control, **kwargs):
        if self.evaluate and "eval_loss_before" not in self.metrics:
            self.metrics["eval_loss_before"] = self.trainer.evaluate()["eval_loss"]
        if self.by_source and "eval_loss_before_by_source" not in self.metrics:
            self.metrics["eval_loss_before_by_source"] = eval_loss_by_source(self.trainer, self.by_source)
        if self.metrics_file is not None:
            atomic_write_json(self.metrics_file, self.metrics)  # kept for a resumed run's before/after report
        return control


class NonFiniteStop(TrainerCallback):
    """Stops training at the first step whose gradient norm or logged loss is not finite (NaN/inf).

    Without it a diverged run trains on to an all-NaN adapter and reports "done". The gradients are checked
    before each optimizer step (one reduction over the trainable parameters' gradients, one device sync), so a
    non-finite loss at any step is caught, not only at logging steps; that step's checkpoint is not saved.
    """

    def __init__(self) -> None:
        self.step: int | None = None
        self.what = ""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        import torch

        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        if grads and self.step is None:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))
            if not torch.isfinite(norm):
                self._stop(state.global_step + 1, f"the gradient norm is {norm.item()}", control)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, float) and not math.isfinite(value) and self.step is None:
                self._stop(state.global_step, f"the {key.replace('_', ' ')} is {value}", control)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.step is not None:
            control.should_save = False  # never a checkpoint of diverged weights
            control.should_training_stop = True
        return control

    def _stop(self, step: int, what: str, control: Any) -> None:
        self.step, self.what = step, what
        control.should_training_stop = True
        control.should_save = False

    def error_message(self, last_good: Path | None) -> str:
        checkpoint = f"the last good checkpoint is {last_good}" if last_good is not None else "no checkpoint was saved"
        return (
            f"training stopped at step {self.step}: {self.what}, so the weights would be garbage; {checkpoint}. "
            "Lower training.learning_rate or training.max_grad_norm, check the data, "
            "and start again in a new output.dir"
        )


class DiskBeforeSave(TrainerCallback):
    """Before each checkpoint save, the disk must still hold one more checkpoint the size of the last one written
    (measured, not predicted). Otherwise training stops without starting a save that would tear, and the run
    says which checkpoint is complete (a resume on a still-full disk stops here again, not mid-save)."""

    def __init__(self) -> None:
        self.short: tuple[int, int, int] | None = None  # (free bytes, needed bytes, step)

    def on_step_end(self, args, state, control, **kwargs):
        if not control.should_save or not state.is_world_process_zero:
            return control
        import shutil

        root = Path(args.output_dir)
        saved = sorted((p for p in root.glob("checkpoint-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        needed = int(1.1 * sum(f.stat().st_size for f in saved[-1].rglob("*") if f.is_file())) if saved else 0
        free = shutil.disk_usage(root if root.is_dir() else root.parent).free
        if free < needed:
            self.short = (free, needed, state.global_step)
            control.should_save = False
            control.should_training_stop = True
        return control

    def error_message(self, run_root: Path, last_good: Path | None, recipe_path: Path) -> str:
        free, needed, step = self.short or (0, 0, 0)
        kept = f"the last complete checkpoint is {last_good}" if last_good is not None else "no checkpoint is complete"
        return (
            f"{run_root}: stopped before saving checkpoint-{step}: {free / 2**20:.1f} MiB free, a checkpoint takes "
            f"about {needed / 2**20:.1f} MiB; {kept}. Free some space (or lower training.save_total_limit), then "
            f"resume with: fnsft train {recipe_path} --resume"
        )
