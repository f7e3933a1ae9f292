"""Test-only fault injection for tests/train/test_faults.py: kill a real `fnsft train` process at an exact point.

Loaded by ``sitecustomize`` in this directory, which the tests put on the PYTHONPATH of the training processes
they start (and only there). It wraps the trainer phase of fnsft.train.run so that the trainer it builds carries
the kill point named by FNSFT_TEST_KILL_AT; fnsft's own code has no hook for it.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from typing import Any

from transformers import TrainerCallback

#: ``step:N`` (SIGKILL during step N, after backward, before the optimizer update), ``save:N`` (SIGKILL
#: while checkpoint-N is being written: weights on disk, optimizer state not yet), ``eval:N`` (SIGKILL inside the
#: evaluation at step N; 0 is the evaluation before training), ``sigterm:N`` / ``sigint:N`` (the process sends
#: itself that signal during step N, to exercise the real handler at a known step; N=0: before training starts).
#: A suffix ``@R`` limits any of them to the process of rank R (multi-process runs).
TEST_KILL_ENV = "FNSFT_TEST_KILL_AT"
#: Also ``export:0`` (SIGKILL `fnsft export` mid-merge), ``enospc:N`` (checkpoint-N's optimizer state fails to write with ENOSPC, as on a full disk) and
#: ``finalsave:0`` (SIGTERM once the final adapter/model weights are written into their staging directory).
POINTS = ("step", "save", "eval", "sigterm", "sigint", "enospc", "finalsave")


class KillCallback(TrainerCallback):
    """Kill this process at the point named by FNSFT_TEST_KILL_AT (see ``TEST_KILL_ENV``)."""

    def __init__(self, point: str, step: int) -> None:
        self.point = point
        self.step = step

    ended = False

    def on_train_end(self, args, state, control, **kwargs):
        self.ended = True
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        if self.point in ("sigterm", "sigint") and state.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGTERM if self.point == "sigterm" else signal.SIGINT)
        return control

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.point == "step" and state.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return control

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.point == "eval" and state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
        return control


def arm(trainer: Any) -> None:
    """Give ``trainer`` the kill point of FNSFT_TEST_KILL_AT (nothing when it is unset or names another rank)."""
    spec = os.environ.get(TEST_KILL_ENV)
    if not spec:
        return
    point, _, step = spec.partition(":")
    step, _, rank = step.partition("@")
    if point not in POINTS or not step.isdigit() or not (rank or "0").isdigit():
        raise ValueError(f"{TEST_KILL_ENV}={spec}: expected one of {', '.join(POINTS)} as POINT:N (+ @RANK)")
    if rank and int(rank) != int(os.environ.get("RANK", "0")):
        return
    if point in ("sigterm", "sigint") and int(step) == 0:  # before training starts
        os.kill(os.getpid(), signal.SIGTERM if point == "sigterm" else signal.SIGINT)
    if point in ("save", "enospc"):
        save_optimizer = trainer._save_optimizer_and_scheduler

        def killing_save(output_dir: str) -> None:
            if trainer.state.global_step == int(step):  # the weights of this checkpoint are already written
                if point == "enospc":  # what a full disk raises from the next write
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{output_dir}/optimizer.pt")
                os.kill(os.getpid(), signal.SIGKILL)
            save_optimizer(output_dir)

        trainer._save_optimizer_and_scheduler = killing_save
        return
    if point == "finalsave":  # SIGTERM while the final adapter/model is being written (after training)
        save_pretrained = trainer.model.save_pretrained
        trained = KillCallback(point, int(step))
        trainer.add_callback(trained)

        def interrupted_save(*args: Any, **kwargs: Any) -> Any:
            result = save_pretrained(*args, **kwargs)
            if trained.ended:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises here
            return result

        trainer.model.save_pretrained = interrupted_save
        return
    trainer.add_callback(KillCallback(point, int(step)))


def install() -> None:
    """Arm every trainer that fnsft.train.run builds in this process (or, for ``export:0``, the export)."""
    if os.environ.get(TEST_KILL_ENV, "").startswith("export:"):
        install_export_kill()
        return
    from fnsft.train import run

    build_trainer = run._build_trainer

    def build_armed_trainer(*args: Any, **kwargs: Any) -> Any:
        trainer, progress = build_trainer(*args, **kwargs)
        arm(trainer)
        return trainer, progress

    run._build_trainer = build_armed_trainer


def install_export_kill() -> None:
    """``export:0``: SIGKILL `fnsft export` once the first merged shard is written into its staging directory."""
    from fnsft.export import merge

    write_streaming = merge.write_streaming

    def killing_write(*args: Any, **kwargs: Any) -> Any:
        result = write_streaming(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    merge.write_streaming = killing_write
