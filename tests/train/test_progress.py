"""The plain progress lines (no terminal: CI logs, docker logs): each log event once, eval only where computed."""

from __future__ import annotations

import json
from types import SimpleNamespace

from fnsft.train.callbacks import RichProgressCallback


def test_plain_lines_show_eval_only_at_the_step_it_was_computed_and_no_line_twice(capsys):
    callback = RichProgressCallback()
    state = SimpleNamespace(global_step=0, max_steps=10, is_world_process_zero=True)
    events = [(0, {"eval_loss": 2.9813}), (5, {"loss": 2.5, "learning_rate": 1e-4}),
              (10, {"loss": 1.5, "learning_rate": 1e-5}), (10, {"eval_loss": 1.2}),
              (10, {"train_runtime": 12.0, "train_loss": 2.0})]
    for step, logs in events:
        if step != state.global_step:
            callback.on_step_begin(None, state, None)
        state.global_step = step
        callback.on_log(None, state, None, logs=logs)
    callback.stop()
    callback.on_log(None, state, None, logs={"eval_loss": 1.2})  # the after-training evaluation
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["step 0/10  eval 2.9813", "step 5/10  loss 2.5000  lr 1.00e-04",
                     "step 10/10  loss 1.5000  eval 1.2000  lr 1.00e-05"]
    assert callback._stats() == "loss 1.5000  eval@10 1.2000  lr 1.00e-05"  # the bar names the eval's step


def test_a_mixture_run_prints_one_line_per_step_and_no_per_source_or_after_training_eval_lines(
        tiny_llama_dir, tmp_path, capsys):
    from fnsft.recipe.load import load_recipe
    from fnsft.train.run import run_training

    rows = [{"instruction": f"What number comes after {i}?", "output": str(i + 1)} for i in range(40)]
    for name, part in (("a", rows[:20]), ("b", rows[20:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"""version: 1
model:
  name_or_path: {tiny_llama_dir}
data:
  sources:
    - {{path: {tmp_path / 'a.jsonl'}}}
    - {{path: {tmp_path / 'b.jsonl'}}}
  validation_fraction: 0.2
  max_length: 64
training:
  max_steps: 4
  per_device_train_batch_size: 4
  learning_rate: 1.0e-2
  warmup_steps: 1
  lr_scheduler_type: linear
  logging_steps: 1
  eval_steps: 2
  save_steps: 4
  gradient_checkpointing: false
output:
  dir: {tmp_path / 'run'}
""")
    capsys.readouterr()
    result = run_training(load_recipe(recipe))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert [line.split("  ")[0] for line in lines] == ["step 0/4", "step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert [" eval " in f" {line} " for line in lines] == [True, False, True, False, True]
    # linear warmup over 1 step, then linear decay to 0 after step 4: each line shows the rate its step used
    assert [line.rsplit("lr ", 1)[-1] for line in lines[1:]] == ["0.00e+00", "1.00e-02", "6.67e-03", "3.33e-03"]
    assert set(result.metrics["eval_loss_after_by_source"]) == {"a", "b"}
    assert [k for k in result.metrics["log_history"][0] if k.endswith("_loss")] == ["eval_loss"]
