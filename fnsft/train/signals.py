"""Preemption and crash safety for `fnsft train`: SIGTERM/SIGINT save a checkpoint and exit; checkpoints get a
completion marker so a torn one is never resumed from.

The faults that test these paths are injected from the test suite (tests/train/faults/), never from here.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from fnsft.errors import ExitStatus, TrainError
from fnsft.train.outdir import write_completion_marker

#: Exit codes follow the shell convention 128 + signal number: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(TrainError):
    """SIGTERM/SIGINT stopped `fnsft train` cleanly (after saving a checkpoint, once training has begun); the exit
    code is 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = ExitStatus(128 + signum)


class PreemptionCallback(TrainerCallback):
    """SIGTERM/SIGINT handling for one `fnsft train`.

    Before training starts (loading, tokenizing, the first evaluation) a signal stops at once with a clean
    ``TrainingInterrupted``: nothing was trained, nothing needs saving. Once training runs, the handler only records
    the signal; the Trainer acts on it at the next step end (or evaluation end) through ``TrainerControl``: it writes
    checkpoint-N itself, consistently, and stops; the caller then raises ``TrainingInterrupted``.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.training = False
        self.finished_training: tuple[Path | None, Path] | None = None  # (last complete checkpoint, recipe file)
        self._previous: dict[int, Any] = {}
        self._timing = SaveTiming()
        self._stop_step: int | None = None  # the step all ranks agreed to stop (and save) at

    @contextmanager
    def installed(self) -> Iterator[PreemptionCallback]:
        """Handle SIGTERM/SIGINT while the block runs (or until ``restore``); the previous handlers come back after."""
        self._previous = {sig: signal.signal(sig, self._handle) for sig in HANDLED_SIGNALS}
        try:
            yield self
        finally:
            self.restore()

    def finishing(self, checkpoint: Path | None, recipe_path: Path) -> None:
        """Training is over (final evaluation and save follow): a signal now stops at once, and the final save
        rolls back its staging, so the run directory holds exactly what it held after the last checkpoint."""
        self.finished_training = (checkpoint, recipe_path)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        from fnsft.console import err

        self.restore()  # a second Ctrl-C/SIGTERM behaves as it normally would
        name = signal.Signals(signum).name
        if self.finished_training is not None and self.signum is None:
            checkpoint, recipe_path = self.finished_training
            saved = (f"the last complete checkpoint is {checkpoint}. Resume with: fnsft train {recipe_path} --resume"
                     if checkpoint is not None else "no checkpoint was saved. Run the same command again.")
            raise TrainingInterrupted(f"interrupted by {name} during the final evaluation or save; {saved}", signum)
        if not self.training:
            raise TrainingInterrupted(
                f"interrupted by {name} before training started: nothing was trained. Run the same command again.", signum
            )
        self.signum = signum
        err.print(
            f"\n[yellow]{name} received:[/] saving a checkpoint at the end of this step, then stopping; "
            f"{self._timing.expectation()} (a second signal stops at once).",
            highlight=False,
        )

    def expect_checkpoint(self, size_bytes: int) -> None:
        """The predicted size of a checkpoint (fnsft.train.disk), for the stop estimate before one is written."""
        self._timing.checkpoint_bytes = size_bytes

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True
        return control

    def _stop_and_save(self, state: Any, control: Any) -> Any:
        self.signum = agreed_signal(self.signum)
        if self.signum is not None:
            # An evaluation due at this step still runs before the checkpoint: it draws from the RNG (the eval
            # data loader's seed), and the checkpoint must hold the RNG state an uninterrupted run has after this
            # step, or the resumed run's dropout parts from it (seen: the two-rank SIGTERM test ended with other weights).
            control.should_training_stop = True
            if self._stop_step != state.global_step:
                self._stop_step = state.global_step
                control.should_save = True
                self._timing.save_started()
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        self._timing.step_started()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self._timing.step_ended()
        if control.should_save and not control.should_evaluate:  # an evaluation first would blur the write speed
            self._timing.save_started()
        return self._stop_and_save(state, control)

    def on_evaluate(self, args, state, control, **kwargs):
        return self._stop_and_save(state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        # Stopping ends the epoch early: its end-of-epoch evaluation (eval_strategy epoch) would run the held-out
        # rows and then, through on_evaluate, write the stop checkpoint a second time. Neither is needed. Every
        # rank agreed on the stop step, so every rank skips both.
        if self._stop_step == state.global_step:
            control.should_evaluate = False
            control.should_save = False
        return control

    def on_save(self, args, state, control, **kwargs):
        took = self._timing.save_ended(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        if self.signum is not None and took is not None and args.should_save:
            from fnsft.console import err

            err.print(f"checkpoint-{state.global_step} written in {took:.1f} s", highlight=False)
        return control

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


class SaveTiming:
    """What a stop costs: the last step's duration and the last checkpoint's write speed, for the log line that
    tells an orchestrator's grace period (docker stop -t, terminationGracePeriodSeconds) how long to wait."""

    #: The write speed assumed before this run has written a checkpoint (a slow network disk).
    ASSUMED_BYTES_PER_S = 100 * 2**20

    def __init__(self) -> None:
        self.checkpoint_bytes = 0
        self.bytes_per_s: float | None = None
        self.step_s: float | None = None
        self._step_start: float | None = None
        self._save_start: float | None = None

    def step_started(self) -> None:
        self._step_start = time.monotonic()

    def step_ended(self) -> None:
        if self._step_start is not None:
            self.step_s = time.monotonic() - self._step_start

    def save_started(self) -> None:
        self._save_start = time.monotonic()

    def save_ended(self, checkpoint: Path) -> float | None:
        """Record how fast checkpoint-N was written; returns the seconds it took."""
        if self._save_start is None:
            return None
        took = time.monotonic() - self._save_start
        self._save_start = None
        if checkpoint.is_dir():
            self.checkpoint_bytes = sum(f.stat().st_size for f in checkpoint.iterdir() if f.is_file())
            self.bytes_per_s = self.checkpoint_bytes / max(took, 1e-3)
        return took

    def expectation(self) -> str:
        speed = self.bytes_per_s or self.ASSUMED_BYTES_PER_S
        write_s = self.checkpoint_bytes / speed
        total = write_s + (self.step_s or 0.0)
        basis = "the last checkpoint's speed" if self.bytes_per_s else "100 MiB/s assumed, no checkpoint written yet"
        step = f"the rest of a {self.step_s:.1f} s step, then " if self.step_s is not None else ""
        return (f"expected within about {max(total, 1.0):.0f} s ({step}{self.checkpoint_bytes / 2**20:.1f} MiB "
                f"at {basis})")


def agreed_signal(signum: int | None) -> int | None:
    """With several processes, the signal any rank received, so that all stop (and save) at the same step.

    A signal can reach one rank only, or reach ranks on either side of a step boundary; a rank that stopped alone
    would leave the others waiting in their next gradient all-reduce for ever. One scalar all-reduce per step end
    (all ranks reach it together) makes the decision collective. A single process returns ``signum`` unchanged.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return signum
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flag = torch.tensor([signum or 0], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


class CompletionMarkerCallback(TrainerCallback):
    """Writes checkpoint-N/fnsft-complete.json once transformers has finished writing checkpoint-N.

    transformers writes a checkpoint file by file, in place; a crash in between leaves a torn directory. The marker
    (file names and sizes, written atomically, last) makes each checkpoint effectively atomic: one without a valid
    marker is never resumed from (see ``outdir.checkpoint_problem``).
    """

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:  # the main process only
            write_completion_marker(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        return control


def interrupted_message(callback: PreemptionCallback, checkpoint: Path, recipe_path: Path) -> str:
    return (
        f"training interrupted by {callback.signal_name}; checkpoint saved: {checkpoint}. "
        f"Resume exactly where it stopped with: fnsft train {recipe_path} --resume"
    )
