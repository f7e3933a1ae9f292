"""`fnsft train` end to end on a tiny model: LoRA, full, QLoRA, the guide's flags, dry-run, bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.commands.train import guide_flag_names, join_multi_value_flags
from fnsft.recipe.fields import FLAG_PATHS, METHOD_FLAGS, schema_field

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, join_multi_value_flags([str(a) for a in args]))


#: fnsft's own options of `fnsft train` (declared by hand in commands/train.py); every other option is a guide flag.
OWN_OPTIONS = {"recipe", "set_", "resume", "nproc", "nnodes", "node_rank", "master_addr", "master_port", "dry_run",
               "probe", "help"}


def train_command():
    return typer.main.get_command(app).commands["train"]


def test_options_are_the_flag_table():
    """Each guide flag is declared once, in FLAG_PATHS / METHOD_FLAGS: the options of `fnsft train` are that table."""
    guide = [p for p in train_command().params if p.name not in OWN_OPTIONS]
    assert [p.name for p in guide] == guide_flag_names()
    assert sorted(guide_flag_names()) == sorted([*FLAG_PATHS, *METHOD_FLAGS])
    for param in guide:
        assert param.opts == [f"--{param.name}"]  # one spelling shown; the hyphen one is accepted by parse_args
        if param.name in FLAG_PATHS:
            description = schema_field(FLAG_PATHS[param.name]).description
            assert description and param.help.startswith(description), param.name
        else:
            assert param.help == METHOD_FLAGS[param.name][1]


@pytest.mark.parametrize("flag", sorted(FLAG_PATHS))
def test_both_spellings_give_the_same_value(flag):
    value = {"model_name_or_path": "m", "dataset_name_or_path": "d", "output_dir": "o", "lr_scheduler_type": "linear",
             "lora_target_modules": "q_proj"}.get(flag, "3")
    kind = schema_field(FLAG_PATHS[flag]).annotation
    args = [f"--{flag}"] if kind is bool else [f"--{flag}", value]
    hyphen = [args[0].replace("_", "-"), *args[1:]]
    underscore_params = train_command().make_context("train", list(args)).params
    assert underscore_params == train_command().make_context("train", hyphen).params
    assert underscore_params[flag] is not None


def test_method_flags_and_own_options_in_both_spellings():
    params = train_command().make_context("train", ["--no-peft", "--dry_run", "--no-gradient-checkpointing"]).params
    assert params["no_peft"] and params["dry_run"] and params["gradient_checkpointing"] is False


def test_help_at_80_columns_shows_every_flag_whole_and_once():
    env = {**os.environ, "COLUMNS": "80"}
    result = subprocess.run([sys.executable, "-m", "fnsft.cli", "train", "--help"], capture_output=True, text=True,
                            env=env, cwd=Path(__file__).resolve().parents[2], check=True)
    text = result.stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "<bool>" not in text
    options = text.split("Options:")[1]
    for flag in guide_flag_names():
        assert len(re.findall(rf"(?<![\w-])--{flag}(?![\w-])", options)) == 1, flag
        if "_" in flag:
            assert f"--{flag.replace('_', '-')}" not in options  # one spelling in help (both accepted)
    assert "Default: 2e-4 for lora/qlora, 2e-5 for full." in " ".join(options.split())  # from METHOD_DEFAULTS


def test_hf_style_flags_reach_the_recipe(tiny_recipe):
    result = invoke("train", tiny_recipe(), "--dry-run", "--save_steps", "7", "--eval-steps", "3",
                    "--logging_steps", "2", "--lr_scheduler_type", "linear")
    assert result.exit_code == 0, result.output
    for line in ("save_steps: 7", "eval_steps: 3", "logging_steps: 2", "lr_scheduler_type: linear"):
        assert line in result.output


def test_lora_run_writes_adapter_manifest_metrics(tiny_recipe, tmp_path):
    result = invoke("train", tiny_recipe())
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run / "model").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method"] == "lora"
    assert manifest["dataset"]["fingerprint"].startswith("sha256:")
    assert manifest["memory"]["measured"]["peak_rss"] > 0
    assert len(manifest["weights_sha256"]) == 64
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 4
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and adapter_config["lora_alpha"] == 32
    assert "lm_head" not in adapter_config["target_modules"]


def test_guide_full_finetuning_command(tiny_llama_dir, alpaca_file, tmp_path):
    out = tmp_path / "full"
    result = invoke(
        "train", "--model_name_or_path", tiny_llama_dir, "--dataset_name_or_path", alpaca_file,
        "--output_dir", out, "--no_peft", "--num_train_epochs", "1", "--per_device_train_batch_size", "2",
        "--learning_rate", "5e-5", "--no-gradient-checkpointing", "--max_steps", "2",
    )
    assert result.exit_code == 0, result.output
    assert (out / "model" / "model.safetensors").is_file()
    recipe = (out / "recipe.yaml").read_text()
    assert "name: full" in recipe and "learning_rate: 5.0e-05" in recipe


def test_guide_peft_flags_hyphen_and_underscore(tiny_llama_dir, alpaca_file, tmp_path):
    out = tmp_path / "peft"
    result = invoke(
        "train", "--model-name-or-path", tiny_llama_dir, "--dataset_name_or_path", alpaca_file, "--output-dir", out,
        "--lora_r", "8", "--lora-target-modules", "q_proj", "k_proj", "v_proj", "o_proj", "--warmup_ratio", "0.1",
        "--weight-decay", "0.01", "--gradient_accumulation_steps", "2", "--max-steps", "2", "--gradient_checkpointing",
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_qlora_4bit_on_cpu(tiny_recipe, tmp_path):
    pytest.importorskip("bitsandbytes")
    result = invoke("train", tiny_recipe(), "--use_4bit", "--max_steps", "2", "--set", "data.validation_fraction=0")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["method"] == "qlora"
    assert "no held-out rows to compare" in result.output  # the summary says why there is no before/after table


def test_dry_run_loads_no_weights_and_prints_recipe(tiny_recipe, tmp_path):
    result = invoke("train", tiny_recipe(), "--dry-run", "--learning_rate", "3e-4")
    assert result.exit_code == 0, result.output
    assert "alpaca" in result.output and "learning_rate: 0.0003" in result.output
    assert not (tmp_path / "run").exists()


def test_set_override_and_recipe_flag_override(tiny_recipe, tmp_path):
    result = invoke("train", tiny_recipe(), "--dry-run", "--set", "training.lr_scheduler_type=linear", "--lora_r", "4")
    assert result.exit_code == 0, result.output
    assert "lr_scheduler_type: linear" in result.output and "r: 4" in result.output


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        (["--set", "training.lerning_rate=1"], "did you mean 'learning_rate'"),
        (["--set", "data.path=/nonexistent/x.jsonl"], "dataset file not found"),
        (["--set", "model.name_or_path=/nonexistent/model"], "model not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(tiny_recipe, extra_args, message):
    result = invoke("train", tiny_recipe(), *extra_args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_rows_and_formats(tiny_recipe, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    result = invoke("train", tiny_recipe(), "--dataset_name_or_path", bad)
    assert result.exit_code == 2 and "bad.jsonl:2 (row 2): missing field 'output'" in result.output
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"question": "a", "answer": "b"}\n')
    result = invoke("train", tiny_recipe(), "--dataset_name_or_path", odd)
    assert result.exit_code == 2 and "cannot detect the dataset format" in result.output
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_output_dir_holding_another_run_is_refused(tiny_recipe, tmp_path):
    assert invoke("train", tiny_recipe(), "--max_steps", "2").exit_code == 0
    result = invoke("train", tiny_recipe(), "--max_steps", "2", "--seed", "7")
    assert result.exit_code == 2 and "holds a different run" in result.output
    again = invoke("train", tiny_recipe(), "--max_steps", "2")
    assert again.exit_code == 2 and "already finished" in again.output


def test_foreign_nonempty_output_dir_is_refused(tiny_recipe, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    result = invoke("train", tiny_recipe())
    assert result.exit_code == 2 and "holds no fnsft run" in result.output
    assert (tmp_path / "run" / "precious.txt").read_text() == "keep me"


def test_pickle_only_model_is_refused(tiny_recipe, tmp_path, tiny_llama_dir):
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_llama_dir, pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not really")
    result = invoke("train", tiny_recipe(), "--model_name_or_path", pickled)
    assert result.exit_code == 2 and "pickle" in result.output


@pytest.mark.slow
def test_nproc_2_trains_with_two_ddp_processes_on_cpu(tiny_recipe, tmp_path):
    """`--nproc 2` goes through accelerate (gloo DDP on CPU); rank 0 writes the run, the manifest says world 2."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fnsft.cli", "train", str(tiny_recipe()), "--nproc", "2", "--max_steps", "2"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "strategy": "ddp"}


def test_packing_and_tensorboard_reporting(tiny_recipe, tmp_path):
    pytest.importorskip("tensorboard")
    result = invoke(
        "train", tiny_recipe(), "--max_steps", "2", "--set", "data.packing=true", "--set", "output.report_to=[tensorboard]"
    )
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "run").rglob("events.out.tfevents.*")), "tensorboard wrote no event file"


def test_missing_tracker_is_a_clear_error(tiny_recipe, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    result = invoke("train", tiny_recipe(), "--set", "output.report_to=[wandb]")
    assert result.exit_code == 2 and "pip install wandb" in result.output


@pytest.mark.slow
def test_quickstart_recipe_on_real_smollm2(tmp_path):
    """The README's quickstart, shortened: real SmolLM2-135M from its GGUF, LoRA, accuracy measured before/after."""
    result = invoke(
        "train", "recipes/quickstart.yaml", "--output_dir", tmp_path / "qs", "--max_steps", "6",
        "--set", "evaluation.exact_match_samples=8",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "qs" / "metrics.json").read_text())
    assert {"exact_match_before", "exact_match_after", "eval_loss_before", "eval_loss_after"} <= set(metrics)
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    manifest = json.loads((tmp_path / "qs" / "manifest.json").read_text())
    assert manifest["base_model"]["identity"]["source"] == "gguf"


def test_training_with_an_ica_mask_built_from_the_data(tiny_recipe, tmp_path):
    """`mask:` with no file: networks are found on the training data, lesioned during training, recorded."""
    extra = "mask:\n  mode: lesion\n  components: [0]\n"
    result = invoke("train", tiny_recipe(extra), "--max_steps", "2")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert (run / "mask.json").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["mask"] and manifest["mask"]["mode"] == "lesion"
    from safetensors import safe_open

    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), "pt") as weights:
        assert all("parametrizations" not in key for key in weights.keys())  # noqa: SIM118 (safe_open is no dict)


@pytest.mark.slow
def test_nproc_2_matches_one_process_with_the_same_global_batch(tiny_recipe, tmp_path):
    """2 DDP ranks × batch 2 and 1 process × batch 4 see the same examples per step: same adapter within 1e-5.
    With a validation split, as by default: an evaluation before train() once left the model out of DDP."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--max_steps", "3", "--lora_dropout", "0"]
    runs = {"one": ["--per_device_train_batch_size", "4"], "two": ["--per_device_train_batch_size", "2", "--nproc", "2"]}
    for name, args in runs.items():
        recipe = tiny_recipe(name=f"{name}.yaml", out=name)
        result = subprocess.run(
            [sys.executable, "-m", "fnsft.cli", "train", str(recipe), *common, *args],
            capture_output=True, text=True, env=env, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    one = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    two = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        assert (one[key] - two[key]).abs().max().item() < 1e-5, key
    assert not (tmp_path / "two" / "checkpoints" / "rank1").exists()


def test_run_training_resolves_and_checks_the_recipe_itself(tiny_recipe, tmp_path):
    """A caller that forgets .resolved() still gets the method's defaults; a broken rule stops before any file."""
    from fnsft.errors import RecipeError
    from fnsft.recipe.load import load_recipe
    from fnsft.recipe.schema import METHOD_DEFAULTS
    from fnsft.train.run import run_training

    broken = load_recipe(tiny_recipe(), sets=["method.name=full", "method.quantization.bits=8"])
    with pytest.raises(RecipeError, match="method.quantization.bits is set but method.name is full"):
        run_training(broken)
    assert not (tmp_path / "run").exists()
    unresolved = load_recipe(tiny_recipe(), sets=["training.learning_rate=null", "training.max_steps=1"])
    assert unresolved.training.learning_rate is None
    result = run_training(unresolved)
    assert load_recipe(result.run.recipe).training.learning_rate == METHOD_DEFAULTS["lora"]["learning_rate"]


@pytest.mark.parametrize("hub", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
                                  "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline", "unreachable"])
def test_dry_run_of_a_shipped_recipe_offline_falls_back_to_the_catalog(tmp_path, hub):
    """recipes/full-7b.yaml names a Hub model and a Hub dataset: offline (or with the Hub unreachable) and an empty
    Hugging Face cache, the dry-run still describes the model (from the estimator's catalog, saying so) and says
    what it could not check."""
    from fnsft.estimate.resolve import resolve_shape

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, **hub, "HF_HOME": str(tmp_path / "hf"), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "fnsft.cli", "train", str(root / "recipes" / "full-7b.yaml"),
                             "--dry-run"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    shape = resolve_shape("mistralai/Mistral-7B-v0.1")
    assert f"from the offline catalog: {shape.model_type}, {shape.num_layers} layers, hidden {shape.hidden_size}" \
        in result.stdout
    note = " ".join(result.stderr.split())
    assert note.startswith("note: mistralai/Mistral-7B-v0.1: cannot read the model config: ")  # fnsft's sentence first
    assert "Using the estimator's offline catalog entry for mistralai/Mistral-7B-v0.1 instead." in note
    assert "not checked" in result.stdout and "name: full" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_two_nodes_on_one_machine_match_one_process_with_the_same_global_batch(tiny_recipe, tmp_path):
    """`--nnodes 2`: two launchers (one per "node", as SLURM or Kubernetes would start them) meet on 127.0.0.1 and
    train as world 2 (gloo); 2 × batch 2 ends with the adapter of 1 process × batch 4."""
    import os
    import socket
    import subprocess
    import sys

    from safetensors.torch import load_file

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "fnsft.cli", "train", "--max_steps", "3", "--lora_dropout", "0"]
    one = subprocess.run([*command, str(tiny_recipe(name="one.yaml", out="one")), "--per_device_train_batch_size", "4"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    recipe = str(tiny_recipe(name="nodes.yaml", out="nodes"))
    nodes = [
        subprocess.Popen([*command, recipe, "--per_device_train_batch_size", "2", "--nproc", "1", "--nnodes", "2",
                          "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", port],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr[-3000:]
    assert "--machine_rank 1 --main_process_ip 127.0.0.1" in " ".join(outputs[1][1].split())  # the console wraps it
    manifest = json.loads((tmp_path / "nodes" / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "strategy": "ddp"}
    single = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    both = load_file(tmp_path / "nodes" / "adapter" / "adapter_model.safetensors")
    assert single.keys() == both.keys()
    for key in single:
        assert (single[key] - both[key]).abs().max().item() < 1e-5, key


def test_a_run_shorter_than_its_warmup_is_warned_and_really_learns_nothing(tiny_recipe, tmp_path):
    """--max_steps 1 with the default warmup: linear warmup's first step has learning rate 0."""
    from safetensors.numpy import load_file

    result = invoke("train", tiny_recipe(), "--max_steps", "1")
    assert result.exit_code == 0, result.output
    assert "trains at learning rate 0 and changes no weight" in " ".join(result.output.split())
    lora_b = {k: v for k, v in load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors").items()
              if "lora_B" in k}
    assert lora_b and all(not v.any() for v in lora_b.values())  # PEFT initialises B to 0: still 0
    longer = invoke("train", tiny_recipe(out="run2"), "--max_steps", "2")
    assert longer.exit_code == 0 and "warmup" not in longer.output
