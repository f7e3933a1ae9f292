"""`fnsft export --verify`: passes a sound export, and catches a wrong EOS id, a missing chat template and a merge
with the wrong alpha/r scaling, each as a failed check with a clear line (and exit status 1 from the CLI)."""

from __future__ import annotations

import json

import pytest
from export_runs import PROMPTS, make_run_dir
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.export.pipeline import export_run
from fnsft.export.verify import VERIFY_JSON


@pytest.fixture
def fresh_run(small_run_factory, tmp_path):
    """A run of its own (the tests below break its exports on purpose)."""
    return make_run_dir(tmp_path / "run", small_run_factory("llama")[1], fit_steps=30)


def _failed(report) -> list[str]:
    return [f"{c.subject} {c.name}: {c.detail}" for c in report.checks if not c.passed]


def _prompts_file(tmp_path):
    """The texts the tiny models were fitted to: confident predictions, so a broken export shows in KL too."""
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": " and so on."}) + "\n" for p in PROMPTS))
    return data


def test_a_sound_export_passes_and_writes_verify_json(fresh_run, tmp_path):
    data = _prompts_file(tmp_path)
    result = export_run(fresh_run.root, merge=True, gguf_types=["f32", "f16", "q8_0"], verify=True,
                        verify_data=data)
    report = result.verification
    assert report.passed, _failed(report)
    assert [(p.candidate, p.reference) for p in report.pairs] == [("merged", "adapter"), ("f32", "merged"),
                                                                  ("f16", "merged"), ("q8_0", "merged")]
    assert report.pairs[1].mean_kl < 1e-9 and report.pairs[1].top1_agreement == 1.0  # f32 is lossless
    assert report.samples == 3 and str(data) in report.data_source
    f16 = report.pairs[2]
    assert f16.mean_kl < 1e-3 and f16.top1_agreement > 0.97 and len(f16.greedy) == 3
    assert abs(f16.perplexity_candidate / f16.perplexity_reference - 1) < 0.01
    names = {(c.subject, c.name) for c in report.checks}
    assert {("q8_0", "chat template"), ("q8_0", "eos id"), ("q8_0", "end of generation"), ("q8_0", "add-BOS flag"),
            ("Modelfile", "stop strings"), ("merged", "mean token KL")} <= names
    saved = json.loads((fresh_run.exports / VERIFY_JSON).read_text())
    assert saved["samples"] == 3 and saved["export_seconds"] > 0 and saved["seconds"] > 0


def test_a_wrong_eos_id_fails(fresh_run):
    from gguf import GGUFReader

    export_run(fresh_run.root, gguf_types=["q8_0"])
    path = fresh_run.exports / f"{fresh_run.root.name}-q8_0.gguf"
    field = GGUFReader(path, "r+").fields["tokenizer.ggml.eos_token_id"]
    field.parts[field.data[0]][0] = 5  # an ordinary token, as a converter that mixed up ids would write
    result = _verify_only(fresh_run)
    failed = _failed(result)
    assert failed == ["q8_0 eos id: run-q8_0.gguf: eos id 5 (tokenizer: 2 '<|im_end|>')"]
    # generation still ends in llama.cpp here: it also stops at the token text <|im_end|>, which the check knows


def _verify_only(run):
    from fnsft.export.pipeline import MERGED, base_model_dir, open_run
    from fnsft.export.verify import verify_exports

    run, recipe, _ = open_run(run.root)
    gguf_files = {p.stem.rsplit("-", 1)[1]: p for p in run.exports.glob("*.gguf")}
    return verify_exports(run, recipe, run.exports / MERGED, gguf_files, adapter_base=base_model_dir(recipe),
                          modelfile=run.exports / "Modelfile")


def test_a_missing_chat_template_fails(fresh_run, monkeypatch):
    import gguf

    monkeypatch.setattr(gguf.GGUFWriter, "add_chat_template", lambda self, value: None)
    failed = _failed(export_run(fresh_run.root, gguf_types=["q8_0"], verify=True).verification)
    assert any(line.startswith("q8_0 chat template:") and "no chat template" in line for line in failed), failed


def test_a_merge_with_the_wrong_scaling_fails(fresh_run, monkeypatch, tmp_path):
    from fnsft.export import merge

    right = merge.Adapter.scale
    monkeypatch.setattr(merge.Adapter, "scale", lambda self, module, rank: right(self, module, rank) * 2)
    report = export_run(fresh_run.root, merge=True, verify=True, verify_data=_prompts_file(tmp_path)).verification
    failed = _failed(report)
    assert failed and all(line.startswith("merged ") and "merged vs adapter" in line for line in failed), failed
    print(f"\nalpha/r doubled: {report.pairs[0].model_dump_json()}")


def test_cli_prints_the_verdicts_and_exits_1_on_a_failed_check(fresh_run, monkeypatch):
    import gguf

    ok = CliRunner().invoke(app, ["export", str(fresh_run.root), "--gguf", "q8_0"])
    assert ok.exit_code == 0, ok.output
    assert "verification on" in ok.output and "mean KL" in ok.output and "end of generation" in ok.output
    monkeypatch.setattr(gguf.GGUFWriter, "add_chat_template", lambda self, value: None)
    bad = CliRunner().invoke(app, ["export", str(fresh_run.root), "--gguf", "q8_0"])
    assert bad.exit_code == 1, bad.output
    assert "FAILED q8_0 chat template" in bad.output and "Traceback" not in bad.output
    skipped = CliRunner().invoke(app, ["export", str(fresh_run.root), "--gguf", "q8_0", "--no-verify"])
    assert skipped.exit_code == 0 and "verification on" not in skipped.output


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
def test_the_gates_gguf_reader_equals_transformers_gguf_loader(arch, small_run_factory):
    """verify.gguf_model rebuilds the model with fnsft's name map; transformers' own loader must agree exactly."""
    import torch
    from export_runs import prompt_logits
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    from fnsft.export.verify import gguf_model

    run = small_run_factory(arch)[0]
    export_run(run.root, gguf_types=["q8_0"], modelfile=False)
    path = run.exports / f"{run.root.name}-q8_0.gguf"
    ours = prompt_logits(gguf_model(GGUFReader(path), run.exports / "merged").eval(), run.adapter)
    theirs = prompt_logits(AutoModelForCausalLM.from_pretrained(run.exports, gguf_file=path.name,
                                                                dtype=torch.float32).eval(), run.adapter)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs, strict=True))
