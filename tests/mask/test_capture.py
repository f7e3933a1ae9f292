import numpy as np
import pytest
import torch

from fnsft.errors import MaskError
from fnsft.mask.capture import describe_architecture, find_decoder_blocks, iter_activations, parse_layer_spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(None, [0, 1, 2, 3]), ("all", [0, 1, 2, 3]), ("1", [1]), ("0-2", [0, 1, 2]), ("-1", [3]), ("-2--1", [2, 3]),
     ("3,0,0", [0, 3]), ([2, 1], [1, 2]), ("1--1", [1, 2, 3])],
)
def test_layer_spec_parses(spec, expected):
    assert parse_layer_spec(spec, 4) == expected


@pytest.mark.parametrize("spec", ["4", "-5", "0-9", "3-1", "", "a", "1,,2", "1.5", []])
def test_bad_layer_spec_is_an_error_never_ignored(spec):
    with pytest.raises(MaskError, match="layer spec"):
        parse_layer_spec(spec, 4)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma"])
def test_blocks_found_for_each_architecture_and_under_peft(tiny_model_factory, arch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_factory(arch))
    plain = find_decoder_blocks(model)
    assert len(plain) == 2
    described = describe_architecture(model)
    assert (described.num_layers, described.hidden_size, described.intermediate_size) == (2, 64, 128)
    wrapped = get_peft_model(model, LoraConfig(r=4, target_modules=["down_proj", "q_proj"]))
    assert [id(b) for b in find_decoder_blocks(wrapped)] == [id(b) for b in plain]
    assert describe_architecture(wrapped) == described


def test_model_without_mlp_blocks_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ModuleList([torch.nn.Linear(4, 4)]))
    with pytest.raises(MaskError, match="no decoder blocks with an MLP"):
        find_decoder_blocks(model)


def _rows(model, seqs, **kwargs):
    return np.concatenate(list(iter_activations(model, seqs, pad_token_id=0, **kwargs)))


def test_capture_drops_pad_tokens_and_matches_unbatched(tiny_llama, token_seqs):
    model, _tok = tiny_llama
    seqs = token_seqs[:5]  # different lengths, so batching pads
    batched = _rows(model, seqs, layers=[0, 1], capture="mlp-output", batch_size=5)
    single = _rows(model, seqs, layers=[0, 1], capture="mlp-output", batch_size=1)
    assert batched.shape == (sum(map(len, seqs)), 2 * 64)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    # Column block 0 is layer 0's MLP output c: with h = layer 0's output, h - c is the residual stream the MLP
    # read (after its norm), so mlp(norm(h - c)) must give c back — row order and column block both right.
    captured = torch.from_numpy(single[: len(seqs[0]), :64])
    block = model.model.layers[0]
    with torch.no_grad():
        layer_out = model(torch.tensor([seqs[0]]), output_hidden_states=True).hidden_states[1][0]
        recomputed = block.mlp(block.post_attention_layernorm(layer_out - captured))
    torch.testing.assert_close(recomputed, captured, atol=1e-4, rtol=1e-4)


def test_intermediate_capture_width_and_selected_layers(tiny_llama, token_seqs):
    model, _tok = tiny_llama
    rows = _rows(model, token_seqs[:3], layers=[1], capture="mlp-intermediate")
    assert rows.shape == (sum(map(len, token_seqs[:3])), 128)
    assert rows.dtype == np.float32


def test_bf16_model_captures_without_crash(tiny_llama_dir, token_seqs):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)
    rows = _rows(model, token_seqs[:2], layers=[0], capture="mlp-output")
    assert rows.dtype == np.float32 and np.isfinite(rows).all()


def test_hooks_are_removed_after_capture(tiny_llama, token_seqs):
    model, _tok = tiny_llama
    _rows(model, token_seqs[:1], layers=[0, 1], capture="mlp-output")
    assert all(not block.mlp._forward_hooks for block in model.model.layers)
