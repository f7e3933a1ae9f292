"""The SLURM and Kubernetes examples: committed files equal what fnsft.train.cluster renders, and the command each
node runs, with the scheduler's variables filled in, reaches accelerate as that node's place in the job."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.commands import train as train_command
from fnsft.train.cluster import EXAMPLE_RECIPE, EXAMPLES, kubernetes_job, slurm_script
from fnsft.train.launch import launch_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("relative", sorted(EXAMPLES))
def test_committed_examples_are_rendered_from_the_launch_code(relative):
    assert (ROOT / relative).read_text(encoding="utf-8") == EXAMPLES[relative](), (
        f"{relative} is stale: run python -m fnsft.train.cluster"
    )


def accelerate_args_for(argv: list[str], monkeypatch):
    """Run `fnsft train ARGV` up to the launch, then read the launch line back through accelerate's parser."""
    launched = {}
    monkeypatch.setattr(train_command, "launch", lambda recipe, nproc, resume: launched.update(recipe=recipe, nproc=nproc) or 0)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    command = launch_command(launched["recipe"], launched["nproc"], ["-m", "fnsft.cli", "train", "r.yaml"])
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    return args


def test_slurm_node_command_as_node_1_of_2(tmp_path, monkeypatch):
    script = slurm_script()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    payload = script.split("bash -c '", 1)[1].rsplit("'", 1)[0]
    fake = tmp_path / "bin" / "fnsft"  # stands in for fnsft on the node: prints the argv the node's shell built
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
           "MASTER_ADDR": "10.0.0.7", "RECIPE": str(ROOT / EXAMPLE_RECIPE)}
    argv = subprocess.run(["bash", "-c", payload], env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    args = accelerate_args_for(argv, monkeypatch)
    assert (args.num_machines, args.machine_rank, args.num_processes) == (2, 1, 16)
    assert (args.main_process_ip, args.main_process_port) == ("10.0.0.7", 29500)


def test_kubernetes_pod_command_as_index_1_of_2(monkeypatch):
    service, job = yaml.safe_load_all(kubernetes_job())
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    assert pod["terminationGracePeriodSeconds"] >= 180
    container = pod["containers"][0]
    assert {"name": "JOB_COMPLETION_INDEX"}.items() <= container["env"][0].items()
    # Kubernetes expands $(VAR) in args from the container's env; the image's entry point runs fnsft
    args = [a.replace("$(JOB_COMPLETION_INDEX)", "1") for a in container["args"]]
    args[args.index(EXAMPLE_RECIPE)] = str(ROOT / EXAMPLE_RECIPE)
    parsed = accelerate_args_for(args, monkeypatch)
    assert (parsed.num_machines, parsed.machine_rank, parsed.num_processes) == (2, 1, 16)
    assert (parsed.main_process_ip, parsed.main_process_port) == ("fnsft-0.fnsft", 29500)
