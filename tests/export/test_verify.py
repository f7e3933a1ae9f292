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
    import torch

    data = _prompts_file(tmp_path)
    result = export_run(fresh_run.root, merge=True, gguf_types=["f32", "f16", "q8_0"], verify=True,
                        verify_data=data)
    report = result.verification
    assert report.passed, _failed(report)
    assert [(p.candidate, p.reference) for p in report.pairs] == [("merged", "adapter"), ("f32", "merged"),
                                                                  ("f16", "merged"), ("q8_0", "merged")]
    assert report.pairs[1].mean_kl < 1e-9 and report.pairs[1].top1_agreement == 1.0  # f32 is lossless
    assert all(pair.mean_kl >= 0 for pair in report.pairs)  # rounding never shows as a negative KL
    assert report.samples == 3 and str(data) in report.data_source
    f16 = report.pairs[2]
    assert f16.mean_kl < 1e-3 and f16.top1_agreement > 0.97 and len(f16.greedy) == 3
    assert abs(f16.perplexity_candidate / f16.perplexity_reference - 1) < 0.01
    names = {(c.subject, c.name) for c in report.checks}
    assert {("q8_0", "chat template"), ("q8_0", "eos id"), ("q8_0", "end of generation"), ("q8_0", "add-BOS flag"),
            ("Modelfile", "stop strings"), ("merged", "mean token KL")} <= names
    saved = json.loads((fresh_run.exports / VERIFY_JSON).read_text())
    assert saved["samples"] == 3 and saved["export_seconds"] > 0 and saved["seconds"] > 0
    assert saved["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert list(saved["step_seconds"]) == ["data", "adapter", "merged", "f32", "f16", "q8_0"]


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
    from transformers import AutoModelForCausalLM

    from fnsft.export.verify import gguf_model
    from fnsft.gguf_file import read_gguf

    run = small_run_factory(arch)[0]
    export_run(run.root, gguf_types=["q8_0"], modelfile=False)
    path = run.exports / f"{run.root.name}-q8_0.gguf"
    ours = prompt_logits(gguf_model(read_gguf(path), run.exports / "merged").eval(), run.adapter)
    theirs = prompt_logits(AutoModelForCausalLM.from_pretrained(run.exports, gguf_file=path.name,
                                                                dtype=torch.float32).eval(), run.adapter)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gemma2"])
def test_the_shared_prefix_is_computed_once_and_changes_no_logit(arch, small_run_factory, monkeypatch):
    """The system header every chat sample starts with is run once and its KV cache reused: the logits must be
    those of each sequence computed whole (gemma2 included: sliding-window layers)."""
    import torch
    from transformers import AutoModelForCausalLM

    from fnsft.export import verify

    model = AutoModelForCausalLM.from_pretrained(small_run_factory(arch)[1], dtype=torch.float32).eval()
    header = [5, 9, 17, 33, 2, 40, 41, 7]
    sequences = [header + tail for tail in ([3], [12, 13, 14, 15, 16], [60, 61] * 6, [8, 9, 10])] * 3  # 12 > BATCH
    calls = []
    model.register_forward_pre_hook(lambda _, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    with torch.no_grad():
        shared = verify._logits(model, sequences)
        monkeypatch.setattr(verify, "MIN_SHARED_PREFIX", 10**6)
        whole = verify._logits(model, sequences)
    assert calls[0] == (1, len(header)) and calls[1][1] == 12  # prefix once, then only the suffixes
    for a, b, sequence in zip(shared, whole, sequences, strict=True):
        assert a.shape == b.shape == (len(sequence), model.config.vocab_size)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_the_prompts_generated_together_continue_as_each_alone(small_run_factory):
    """The first model's greedy continuations come from one left-padded generate call: the same tokens as each
    prompt generated alone, cut after the end-of-generation token as a lone call stops there."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fnsft.export import verify

    run, base = small_run_factory("llama")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), run.adapter)
    tokenizer = AutoTokenizer.from_pretrained(run.adapter)
    prompts = [tokenizer(p).input_ids for p in PROMPTS]
    assert len({len(p) for p in prompts}) > 1  # different lengths: the batch is padded
    with torch.no_grad():
        together = verify._generate(model.eval(), prompts, 12)
        alone = [verify._generate(model, [prompt], 12)[0] for prompt in prompts]
        model.generation_config.eos_token_id = together[0][2]  # a token it generates early: every row stops there
        cut = verify._generate(model, prompts, 12)
    assert together == alone and all(len(row) == 12 for row in together)
    stop = together[0][2]
    assert cut == [row[:row.index(stop) + 1] if stop in row else row for row in together]


@pytest.mark.parametrize("type_name", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q5_0", "Q5_1", "Q8_0",
                                       "BF16", "F16", "F32"])
def test_the_gates_dequantizer_gives_ggufs_values(type_name, monkeypatch):
    """verify.dequantize_tensor runs gguf's block dequantizers on large chunks: bit for bit gguf.dequantize, over
    chunk boundaries (a small chunk here), on a 1-D tensor and into a given array."""
    import numpy as np
    from gguf import GGMLQuantizationType, dequantize, quants

    from fnsft.export import verify
    from fnsft.export.kquants import quantize_k
    from fnsft.export.legacy_quants import quantize_legacy

    monkeypatch.setattr(verify, "DEQUANTIZE_CHUNK", 3 * 512)  # 3 rows per call over 7 rows
    qtype = GGMLQuantizationType[type_name]
    values = np.random.default_rng(0).standard_normal((7, 512)).astype(np.float32)
    for data in (values, values[0]):
        if type_name.endswith("_K"):
            stored = quantize_k(data, type_name)
        elif type_name in ("Q4_0", "Q5_0", "Q5_1"):
            stored = quantize_legacy(data, type_name)
        else:
            stored = quants.quantize(data, qtype)
        ours = verify.dequantize_tensor(stored, qtype)
        assert ours.shape == data.shape and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, dequantize(stored, qtype))
        into = np.full(data.size, np.nan, dtype=np.float32)  # a flat parameter's memory, written in place
        written = verify.dequantize_tensor(stored, qtype, into)
        assert written.shape == data.shape and np.shares_memory(written, into)
        np.testing.assert_array_equal(into.reshape(data.shape), ours)


def test_a_model_following_its_references_continuations_gets_its_own_greedy_ones(small_run_factory):
    """_run_model reads a model's greedy continuation out of the samples' forward pass instead of generating it,
    along a guess: the data's answers for the first model, the reference's greedy tokens for the others. It must
    equal what the model generates itself, whether it agrees with the guess (the adapter along its own tokens or
    its data), departs from it (the base against the adapter), the guess ends early (a sample cut before 16
    tokens), or it stops at an end-of-generation token; a guess that begins a sample adds no sequence to the
    pass."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fnsft.export import verify

    run, base_dir = small_run_factory("llama")
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                        run.adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(run.adapter)
    prompts = [tokenizer(p).input_ids for p in PROMPTS]
    with torch.no_grad():
        own = verify._generate(adapter, prompts, verify.GREEDY_TOKENS)
        base_own = verify._generate(base, prompts, verify.GREEDY_TOKENS)
    # the base departs from the adapter in two prompts or more: the rest is generated for them together
    assert sum(a != b for a, b in zip(own, base_own, strict=True)) >= 2
    # sample 0 holds the adapter's continuation but its last token, 1 all of it and more, 2 only 5 tokens of it
    samples = [prompts[0] + own[0][:-1] + [7, 8], prompts[1] + own[1] + [9], prompts[2] + own[2][:5]]
    encoded = verify._Encoded(samples, prompts)
    for model, follow, expected in ((adapter, own, own), (base, own, base_own), (adapter, None, own)):
        rows = []
        hook = model.register_forward_pre_hook(
            lambda _, args, kwargs, rows=rows: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
        followed = verify._run_model(model, encoded, follow=follow)
        hook.remove()
        assert followed.greedy == expected
        # following the adapter: one continuation no sample begins with; following the data: none
        assert rows[0] == len(samples) + (follow is not None)
        with torch.no_grad():
            alone = verify._logits(model, samples)
        for ours, theirs in zip(followed.log_probs, alone, strict=True):
            torch.testing.assert_close(ours, theirs.log_softmax(-1), atol=1e-5, rtol=1e-5)
    stop = own[1][3]
    adapter.generation_config.eos_token_id = stop  # generation stops there, and so must the followed guess
    assert verify._run_model(adapter, encoded).greedy == [row[:row.index(stop) + 1] if stop in row else row
                                                          for row in own]


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_each_gguf_overwrites_every_weight_of_the_merged_model_in_place(arch, small_run_factory):
    """The gate loads each GGUF into the merged model's memory: afterwards the model must be the GGUF's exactly
    (as rebuilt fresh: llama's rotary permutation and gemma's 1 + w undone), its parameters the same tensors, and a
    GGUF short of a tensor an ExportError rather than a model that silently kept the merged weight."""
    import dataclasses

    import torch
    from export_runs import prompt_logits
    from transformers import AutoModelForCausalLM

    from fnsft.errors import ExportError
    from fnsft.export.verify import gguf_model, load_gguf_weights
    from fnsft.gguf_file import read_gguf

    run = small_run_factory(arch)[0]
    export_run(run.root, gguf_types=["q4_0"], modelfile=False)
    gguf = read_gguf(run.exports / f"{run.root.name}-q4_0.gguf")
    model = AutoModelForCausalLM.from_pretrained(run.exports / "merged", dtype=torch.float32).eval()
    merged = prompt_logits(model, run.adapter)
    storage = {name: p.data_ptr() for name, p in model.named_parameters()}
    load_gguf_weights(model, gguf, run.exports / "merged")
    assert storage == {name: p.data_ptr() for name, p in model.named_parameters()}
    ours = prompt_logits(model, run.adapter)
    fresh = prompt_logits(gguf_model(gguf, run.exports / "merged").eval(), run.adapter)
    assert all(torch.equal(a, b) for a, b in zip(ours, fresh, strict=True))
    assert not all(torch.allclose(a, b) for a, b in zip(ours, merged, strict=True))  # q4_0 did change it
    short = dataclasses.replace(gguf, tensors=[t for t in gguf.tensors if t.name != "blk.0.ffn_up.weight"])
    with pytest.raises(ExportError, match="missing from the GGUF: model.layers.0.mlp.up_proj.weight"):
        load_gguf_weights(model, short, run.exports / "merged")
