"""`fnsft push`: the plan (files, sizes, card) offline, the CLI, and a real huggingface_hub upload to a local server.

No test reaches huggingface.co (there is no network here): the upload test runs the real client against a small
HTTP server on 127.0.0.1 implementing create-repo, card validation, preupload and commit, and inspects what arrived.
"""

from __future__ import annotations

import base64
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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    base = build_small_vocab_model("llama", root / "base")
    (base / "README.md").write_text("---\nlicense: mit\n---\n# tiny base\n")
    manifest_mask = {"mask": {"path": "masks/tiny.json", "sha256": "f00d", "mode": "lesion", "components": [0]}}
    return {
        "lora": make_run_dir(root / "lora-run", base, manifest_extra=manifest_mask),
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
    assert "train_loss" in card and "predicted_peak_gib" in card and "Functional-network mask" in card


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
