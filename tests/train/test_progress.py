"""The plain progress lines (no terminal: CI logs, docker logs): each log event once, eval only where computed."""

from __future__ import annotations

from types import SimpleNamespace

from fnsft.train.callbacks import RichProgressCallback


def test_plain_lines_show_eval_only_at_the_step_it_was_computed_and_no_line_twice(capsys):
    callback = RichProgressCallback()
    state = SimpleNamespace(global_step=0, max_steps=10, is_world_process_zero=True)
    events = [(0, {"eval_loss": 2.9813}), (5, {"loss": 2.5, "learning_rate": 1e-4}),
              (10, {"loss": 1.5, "learning_rate": 0.0}), (10, {"eval_loss": 1.2}),
              (10, {"train_runtime": 12.0, "train_loss": 2.0})]
    for step, logs in events:
        state.global_step = step
        callback.on_log(None, state, None, logs=logs)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["step 0/10  eval 2.9813", "step 5/10  loss 2.5000  lr 1.00e-04",
                     "step 10/10  loss 1.5000  lr 0.00e+00", "step 10/10  eval 1.2000"]
    assert callback._stats() == "loss 1.5000  eval@10 1.2000  lr 0.00e+00"  # the bar names the eval's step
