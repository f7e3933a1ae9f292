"""The accelerate launch line built from a recipe, read back through accelerate's own parser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser

from fnsft.errors import FnsftError, RecipeError
from fnsft.recipe.schema import Recipe
from fnsft.train.launch import (
    PRESET_FILES,
    LaunchFacts,
    check_launch,
    config_file,
    launch_command,
    preset_path,
    world_size,
)

PROGRAM = ["-m", "fnsft.cli", "train", "runs/x/recipe.yaml"]
EIGHT_GPUS = LaunchFacts(gpu_count=8, deepspeed_installed=True)


def make_recipe(precision: str = "auto", **distributed) -> Recipe:
    return Recipe.model_validate(
        {
            "model": {"name_or_path": "m"},
            "data": {"path": "d.jsonl"},
            "training": {"precision": precision},
            "distributed": distributed,
        }
    )


def accelerate_reading(command: list[str]):
    """What accelerate itself makes of our command line (config file merged with flags), without launching."""
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(command[3:])
    args, _defaults, _mp_from_config = _validate_launch_command(args)
    return args


def _plain(value):
    """accelerate keeps a config file's booleans as bool and a flag's as the string 'true'/'false'."""
    return {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value


@pytest.mark.parametrize(
    ("strategy", "distributed_type"),
    [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED")],
)
def test_every_preset_is_a_valid_accelerate_config(strategy, distributed_type):
    config = load_config_from_file(str(preset_path(strategy)))
    assert config.distributed_type == distributed_type
    assert config.mixed_precision == "no"  # the recipe's precision is passed as a flag instead


def test_presets_cover_every_schema_strategy():
    strategies = set(Recipe.model_fields["distributed"].annotation.model_fields["strategy"].annotation.__args__)
    assert strategies - {"none"} == set(PRESET_FILES)


def test_unknown_strategy_has_no_preset():
    with pytest.raises(RecipeError, match="no accelerate preset"):
        preset_path("zero1")


@pytest.mark.parametrize(
    ("strategy", "offload", "expect"),
    [
        ("none", "none", {"multi_gpu": True, "use_fsdp": False, "use_deepspeed": False}),
        ("ddp", "none", {"multi_gpu": True, "use_fsdp": False, "use_deepspeed": False}),
        ("fsdp", "none", {"use_fsdp": True, "fsdp_version": 2, "fsdp_offload_params": False}),
        ("fsdp", "params", {"use_fsdp": True, "fsdp_offload_params": True}),
        ("zero2", "none", {"use_deepspeed": True, "zero_stage": 2, "offload_optimizer_device": "none"}),
        ("zero2", "optimizer", {"zero_stage": 2, "offload_optimizer_device": "cpu", "offload_param_device": "none"}),
        ("zero3", "optimizer", {"zero_stage": 3, "offload_optimizer_device": "cpu", "offload_param_device": "none"}),
        ("zero3", "params", {"zero_stage": 3, "offload_optimizer_device": "cpu", "offload_param_device": "cpu"}),
    ],
)
def test_accelerate_reads_strategy_and_offload(strategy, offload, expect):
    args = accelerate_reading(launch_command(make_recipe(strategy=strategy, offload=offload), 4, PROGRAM))
    assert {key: _plain(getattr(args, key)) for key in expect} == expect
    assert args.num_processes == 4 and args.num_machines == 1
    assert args.module and args.training_script == "fnsft.cli"
    assert args.training_script_args == ["train", "runs/x/recipe.yaml"]


def test_multi_node_settings_pass_through_and_count_processes_per_node():
    recipe = make_recipe(strategy="zero3", num_nodes=2, node_rank=1, master_addr="10.1.2.3", master_port=29611)
    args = accelerate_reading(launch_command(recipe, 8, PROGRAM))
    assert (args.num_processes, args.num_machines, args.machine_rank) == (16, 2, 1)
    assert (args.main_process_ip, args.main_process_port) == ("10.1.2.3", 29611)
    assert world_size(recipe, 8) == 16


def test_nproc_defaults_to_recipe_num_processes():
    recipe = make_recipe(num_processes=3)
    assert accelerate_reading(launch_command(recipe, None, PROGRAM)).num_processes == 3
    assert world_size(recipe) == 3


def test_single_node_leaves_rank_and_address_to_accelerate():
    command = launch_command(make_recipe(strategy="ddp"), 2, PROGRAM)
    assert "--machine_rank" not in command and "--main_process_ip" not in command


@pytest.mark.parametrize(("precision", "flag"), [("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "no"), ("auto", "no")])
def test_recipe_precision_overrides_any_config(precision, flag, tmp_path):
    user_config = tmp_path / "mine.yaml"
    user_config.write_text(preset_path("ddp").read_text().replace("mixed_precision: 'no'", "mixed_precision: bf16"))
    for recipe in (make_recipe(precision), make_recipe(precision, accelerate_config=str(user_config))):
        command = launch_command(recipe, 2, PROGRAM)
        assert command[command.index("--mixed_precision") + 1] == flag


def test_user_accelerate_config_replaces_the_preset(tmp_path):
    user_config = tmp_path / "my_fsdp.yaml"
    user_config.write_text(preset_path("fsdp").read_text())
    recipe = make_recipe(strategy="ddp", accelerate_config=str(user_config))
    assert config_file(recipe) == user_config
    args = accelerate_reading(launch_command(recipe, 2, PROGRAM))
    assert args.use_fsdp and args.num_processes == 2


def test_missing_user_accelerate_config_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="is not a file"):
        launch_command(make_recipe(accelerate_config=str(tmp_path / "absent.yaml")), 2, PROGRAM)


@pytest.mark.parametrize(
    ("distributed", "nproc", "facts", "message"),
    [
        ({"strategy": "ddp"}, 4, LaunchFacts(2, True), "only 2 GPU"),
        ({"strategy": "fsdp"}, 2, LaunchFacts(0, True), "needs CUDA GPUs"),
        ({"strategy": "zero3"}, 2, LaunchFacts(0, True), "needs CUDA GPUs"),
        ({"strategy": "zero2"}, 2, LaunchFacts(8, False), "needs DeepSpeed"),
        ({"strategy": "ddp", "offload": "optimizer"}, 2, EIGHT_GPUS, "needs a sharded strategy"),
        ({"strategy": "none", "offload": "params"}, 2, EIGHT_GPUS, "needs a sharded strategy"),
        ({"strategy": "zero2", "offload": "params"}, 2, EIGHT_GPUS, "cannot offload parameters"),
        ({"strategy": "fsdp", "offload": "optimizer"}, 2, EIGHT_GPUS, "use offload: params"),
        ({"accelerate_config": "x.yaml", "offload": "params"}, 2, EIGHT_GPUS, "conflicts"),
        ({"num_nodes": 2, "node_rank": 2}, 2, EIGHT_GPUS, "node_rank 2 must be below"),
        ({}, 0, EIGHT_GPUS, "at least 1"),
    ],
)
def test_check_launch_refuses_before_starting(distributed, nproc, facts, message):
    with pytest.raises(FnsftError, match=message):  # TrainError for the machine, RecipeError for the recipe
        check_launch(make_recipe(**distributed), nproc, facts)


@pytest.mark.parametrize(
    ("distributed", "facts"),
    [
        ({"strategy": "none"}, LaunchFacts(0, False)),  # CPU DDP over gloo
        ({"strategy": "fsdp", "offload": "params"}, LaunchFacts(2, False)),
        ({"strategy": "zero3", "offload": "optimizer"}, LaunchFacts(2, True)),
        ({"accelerate_config": "mine.yaml"}, LaunchFacts(0, False)),
    ],
)
def test_check_launch_accepts_workable_setups(distributed, facts):
    check_launch(make_recipe(**distributed), 2, facts)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_preset_really_starts_two_processes_on_cpu(tmp_path):
    # `accelerate launch --cpu --num_processes 2` silently runs ONE process (accelerate 1.x); the ddp preset must run two.
    probe = tmp_path / "probe.py"
    probe.write_text(  # one write() per line: both ranks share the pipe, and print() may interleave them
        "import os, sys\n"
        "words = ['rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'],"
        " os.environ['ACCELERATE_MIXED_PRECISION'], *sys.argv[1:]]\n"
        "os.write(1, (' '.join(words) + '\\n').encode())\n"
    )
    command = launch_command(make_recipe("fp32", master_port=_free_port()), 2, [str(probe), "--seen"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("rank "))
    assert lines == ["rank 0 of 2 no --seen", "rank 1 of 2 no --seen"]
    assert command[0] == sys.executable
