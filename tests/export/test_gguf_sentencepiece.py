"""GGUF export of sentencepiece BPE tokenizers (Llama 2, Mistral v0.1, Gemma), on tiny models whose tokenizer is a
real sentencepiece model trained in the fixture and converted by transformers, as such repositories ship it.

Verified three ways: transformers' GGUF loader rebuilds a tokenizer that encodes unseen text exactly like the
original; the scores written order the merges exactly as the sentencepiece model's own scores do (what
llama.cpp's converter would have written, up to a monotone map); the weights read back give identical logits (f32).
"""

from __future__ import annotations

import json

import pytest
import torch
from export_runs import SENTENCEPIECE_PROBES, compare_logits, make_run_dir, prompt_logits, reference_merged_model
from gguf import GGUFReader, TokenType
from transformers import AutoModelForCausalLM, AutoTokenizer

from fnsft.errors import NotYetSupported
from fnsft.export.gguf_vocab import adds_space_prefix, merge_rank_scores, tokenizer_family
from fnsft.export.pipeline import export_run


@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma2"])
def test_sentencepiece_models_round_trip(arch, sentencepiece_run_factory):
    run, base = sentencepiece_run_factory(arch)
    export_run(run.root, gguf_types=["f32"])
    name = f"{run.root.name}-f32.gguf"
    original = AutoTokenizer.from_pretrained(run.adapter)
    loaded = AutoTokenizer.from_pretrained(run.exports, gguf_file=name)
    for probe in SENTENCEPIECE_PROBES:
        assert loaded(probe)["input_ids"] == original(probe)["input_ids"], probe
        assert loaded.decode(loaded(probe)["input_ids"], skip_special_tokens=True) == original.decode(
            original(probe)["input_ids"], skip_special_tokens=True)
    expected = prompt_logits(reference_merged_model(run, base), run.adapter, SENTENCEPIECE_PROBES)
    model = AutoModelForCausalLM.from_pretrained(run.exports, gguf_file=name, dtype=torch.float32).eval()
    actual = prompt_logits(model, run.adapter, SENTENCEPIECE_PROBES)
    assert all(torch.equal(a, e) for a, e in zip(actual, expected, strict=True)), compare_logits(expected, actual)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_sentencepiece_metadata_matches_the_sentencepiece_model(arch, sentencepiece_run_factory):
    import sentencepiece

    run, base = sentencepiece_run_factory(arch)
    export_run(run.root, gguf_types=["f16"])
    fields = GGUFReader(run.exports / f"{run.root.name}-f16.gguf").fields
    processor = sentencepiece.SentencePieceProcessor(model_file=str(base / "tokenizer.model"))
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    scores = fields["tokenizer.ggml.scores"].contents()
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert fields["tokenizer.ggml.pre"].contents() == "default"
    assert len(tokens) == len(types) == len(scores) == 576  # the model's embedding rows, padding included
    assert fields["tokenizer.ggml.add_space_prefix"].contents() is (arch == "llama")
    assert "tokenizer.ggml.merges" not in fields
    for index in range(processor.get_piece_size()):
        assert tokens[index] == processor.id_to_piece(index)
        expected_type = (TokenType.BYTE if processor.is_byte(index) else TokenType.UNKNOWN if processor.is_unknown(
            index) else TokenType.CONTROL if processor.is_control(index) else TokenType.NORMAL)
        assert types[index] == expected_type, (index, tokens[index])
    assert all(types[i] == TokenType.UNUSED for i in range(len(AutoTokenizer.from_pretrained(base)), 576))
    # llama.cpp merges the adjacent pair whose joined piece scores highest: the order is what must survive
    merged = [i for i in range(processor.get_piece_size())
              if types[i] == TokenType.NORMAL and len(processor.id_to_piece(i)) > 1]
    assert len(merged) > 100
    assert sorted(merged, key=lambda i: -scores[i]) == sorted(merged, key=lambda i: -processor.get_score(i))
    bos = processor.bos_id()
    assert fields["tokenizer.ggml.bos_token_id"].contents() == bos
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True


def test_merge_rank_scores_keep_the_first_merge_of_each_token():
    assert merge_rank_scores([["a", "b"], "ab c", ["a", "bc"], ["c", "d"]]) == {"ab": 0.0, "abc": -1.0, "cd": -3.0}


@pytest.mark.parametrize(("tokenizer_json", "expected"), [
    ({"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                         {"type": "Replace"}]}}, True),  # Llama 2 as first shipped
    ({"pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "first"}}, True),  # transformers 5's conversion
    ({"pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "never"}}, False),
    ({"normalizer": {"type": "Replace"}, "pre_tokenizer": {"type": "Split"}}, False),  # Gemma
])
def test_space_prefix_is_read_from_the_tokenizer(tokenizer_json, expected):
    assert adds_space_prefix(tokenizer_json) is expected


def test_unigram_tokenizers_are_refused_by_name():
    with pytest.raises(NotYetSupported, match="Unigram"):
        tokenizer_family({"model": {"type": "Unigram"}, "decoder": {"type": "Metaspace"}})


def test_an_unwritable_tokenizer_fails_before_any_merge_work(small_run_factory, tmp_path):
    run = make_run_dir(tmp_path / "unigram-run", small_run_factory("llama")[1], fit_steps=0)
    tokenizer_file = run.adapter / "tokenizer.json"
    tokenizer_json = json.loads(tokenizer_file.read_text())
    tokenizer_json["model"] = {"type": "Unigram", "vocab": [["<unk>", 0.0]], "unk_id": 0}
    tokenizer_file.write_text(json.dumps(tokenizer_json))
    with pytest.raises(NotYetSupported, match="Unigram.*not written yet"):
        export_run(run.root, merge=True, gguf_types=["f16"])
    assert not run.exports.exists() or not any(run.exports.iterdir())
