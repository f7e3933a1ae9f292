import numpy as np
import pytest
import torch

from fnsft.errors import MaskError
from fnsft.mask.apply import NeuronMasks, apply_mask, attach_training_masks
from fnsft.mask.capture import iter_activations
from fnsft.mask.maskfile import load_mask
from fnsft.recipe.schema import MaskSection


def captured(model, seqs, capture="mlp-output", layers=(0, 1)):
    rows = np.concatenate(list(iter_activations(model, seqs, layers=list(layers), capture=capture, pad_token_id=0)))
    return rows.reshape(len(rows), len(layers), -1)


def fresh_model(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir)


def test_lesion_zeroes_exactly_the_selected_channels_and_remove_restores(tiny_llama, token_seqs, built_mask):
    model, _tok = tiny_llama
    mask = load_mask(built_mask)
    ids = torch.tensor([token_seqs[0]])
    with torch.no_grad():
        before = model(ids).logits
    keys = set(model.state_dict())
    hooks = apply_mask(model, mask, [0, 1], "lesion")
    acts = captured(model, token_seqs[:3])
    union = mask.union([0, 1])
    for pos, layer in enumerate(mask.layers):
        selected = sorted(union.get(layer, ()))
        assert (acts[:, pos, selected] == 0).all()
        others = np.setdiff1d(np.arange(64), selected)
        assert (np.abs(acts[:, pos, others]).max(axis=0) > 0).all()
    with torch.no_grad():
        assert not torch.equal(model(ids).logits, before)
    assert set(model.state_dict()) == keys  # no parametrization keys
    hooks.remove()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)


def test_preserve_zeroes_everything_else_in_every_masked_layer(tiny_llama, token_seqs):
    model, _tok = tiny_llama
    # Layer 1 has no selected neurons: preserve must zero it completely (the predecessor left it intact).
    hooks = NeuronMasks(model, {0: {5, 9}}, mode="preserve", capture="mlp-output", width=64, layers=[0, 1])
    try:
        acts = captured(model, token_seqs[:2])
    finally:
        hooks.remove()
    assert (acts[:, 0, [5, 9]] != 0).any(axis=0).all()
    acts[:, 0, [5, 9]] = 0
    assert (acts == 0).all()


def test_intermediate_mask_zeroes_down_proj_input(tiny_llama, token_seqs):
    model, _tok = tiny_llama
    hooks = NeuronMasks(model, {1: {0, 127}}, mode="lesion", capture="mlp-intermediate", width=128, layers=[1])
    try:
        # The capture pre-hook is registered after the mask's, so it sees the masked input.
        acts = captured(model, token_seqs[:2], capture="mlp-intermediate", layers=[1])
    finally:
        hooks.remove()
    assert (acts[:, 0, [0, 127]] == 0).all() and (acts[:, 0, 1:127] != 0).any()


def _section(path, **kwargs):
    return MaskSection(path=str(path), **kwargs)


def _lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["down_proj", "up_proj", "q_proj"]))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # give the adapter a non-zero contribution so "zero contribution" is a real claim
            torch.nn.init.normal_(param, std=0.5)
    return peft_model


@pytest.mark.parametrize("order", ["after-peft", "before-peft"])
def test_peft_lora_masked_neurons_contribute_nothing_and_lora_gets_gradients(tiny_llama_dir, built_mask, token_seqs, order):
    model = fresh_model(tiny_llama_dir)
    section = _section(built_mask, components=[0], freeze_masked_rows=False)
    if order == "before-peft":
        handle = attach_training_masks(model, section)
        model = _lora(model)
    else:
        model = _lora(model)
        handle = attach_training_masks(model, section)
    union = load_mask(built_mask).union([0])
    acts = captured(model, token_seqs[:2])
    for pos, layer in enumerate([0, 1]):
        assert (acts[:, pos, sorted(union.get(layer, ()))] == 0).all()
    model.train()
    ids = torch.tensor([token_seqs[0]])
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    assert all(float(g.abs().sum()) > 0 for n, g in grads.items() if "lora_A" in n)
    for layer, neurons in union.items():
        b_grad = grads[f"base_model.model.model.layers.{layer}.mlp.down_proj.lora_B.default.weight"]
        assert (b_grad[sorted(neurons)] == 0).all() and b_grad.abs().sum() > 0
    handle.remove()
    assert all(not block.mlp._forward_hooks for block in model.base_model.model.model.layers)


def _train_steps(model, handle, token_seqs, steps=3):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    callback = handle.trainer_callbacks()[0]
    model.train()
    for step in range(steps):
        ids = torch.tensor([token_seqs[step]])
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        callback.on_optimizer_step(None, None, None)
        optimizer.zero_grad()


@pytest.mark.parametrize("mode", ["lesion", "preserve"])
def test_freeze_rows_full_finetuning_keeps_frozen_rows_bitwise(tiny_llama_dir, built_mask, token_seqs, mode):
    model = fresh_model(tiny_llama_dir)
    handle = attach_training_masks(model, _section(built_mask, components=[0, 1], mode=mode))
    weights = {layer: model.model.layers[layer].mlp.down_proj.weight for layer in (0, 1)}
    before = {layer: w.detach().clone() for layer, w in weights.items()}
    _train_steps(model, handle, token_seqs)
    for layer, vector in handle.masks.vectors.items():
        frozen = (vector == 0).nonzero().flatten()
        live = (vector == 1).nonzero().flatten()
        assert torch.equal(weights[layer][frozen], before[layer][frozen])
        assert not torch.equal(weights[layer][live], before[layer][live])
    assert handle.provenance["frozen_parameters"] == ["layers.0.down_proj.weight", "layers.1.down_proj.weight"]
    handle.remove()


def test_freeze_rows_lora_keeps_lora_b_rows_and_checkpoint_keys_standard(tiny_llama_dir, built_mask, token_seqs):
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    model = get_peft_model(fresh_model(tiny_llama_dir), LoraConfig(r=4, target_modules=["down_proj", "up_proj"]))
    handle = attach_training_masks(model, _section(built_mask, components=[0, 1, 2]))
    keys = set(get_peft_model_state_dict(model))
    b = {layer: model.base_model.model.model.layers[layer].mlp.down_proj.lora_B["default"].weight for layer in (0, 1)}
    _train_steps(model, handle, token_seqs)
    for layer, vector in handle.masks.vectors.items():
        frozen = (vector == 0).nonzero().flatten()
        assert (b[layer][frozen] == 0).all()  # lora_B starts at zero and frozen rows stay exactly zero
        assert (b[layer][(vector == 1).nonzero().flatten()] != 0).any()
    assert set(get_peft_model_state_dict(model)) == keys
    assert not any("parametrizations" in key for key in model.state_dict())
    assert len(handle.provenance["frozen_parameters"]) == 2 and handle.provenance["mode"] == "lesion"
    handle.remove()


def test_training_mask_bad_input(tiny_llama, built_mask):
    model, _tok = tiny_llama
    with pytest.raises(MaskError, match="component 9 is not in the mask file"):
        attach_training_masks(model, _section(built_mask, components=[9]))
    with pytest.raises(MaskError, match="layer spec"):
        attach_training_masks(model, _section(built_mask, layers="0-5"))
    with pytest.raises(MaskError, match="weights"):
        attach_training_masks(model, _section(built_mask), {"source": "gguf", "sha256": "f" * 64})
    assert not any(block.mlp._forward_hooks for block in model.model.layers)


def test_section_aliases_and_layer_scope(tiny_llama, built_mask):
    model, _tok = tiny_llama
    section = MaskSection.model_validate({"file": str(built_mask), "mode": "complement", "components": "all", "layers": "1"})
    handle = attach_training_masks(model, section.model_copy(update={"freeze_masked_rows": False}))
    try:
        assert handle.provenance["mode"] == "preserve" and handle.provenance["layers"] == [1]
        assert handle.provenance["components"] == [0, 1, 2, 3]
        assert not model.model.layers[0].mlp._forward_hooks and model.model.layers[1].mlp._forward_hooks
    finally:
        handle.remove()


def test_mask_built_on_the_fly_from_training_data_is_saved_in_the_run_dir(tiny_llama_dir, text_jsonl, tmp_path):
    from fnsft.mask.apply import BuildOnTheFly
    from fnsft.models import load_tokenizer, resolve_model
    from fnsft.recipe.schema import DataSection, ModelSection

    section = ModelSection(name_or_path=str(tiny_llama_dir))
    source = resolve_model(section)
    model = fresh_model(tiny_llama_dir)
    build = BuildOnTheFly(load_tokenizer(source, section), DataSection(path=str(text_jsonl)), 7, tmp_path / "run" / "mask.json", "tiny")
    with pytest.raises(MaskError, match="mask.path is not set"):
        attach_training_masks(model, MaskSection(components=[0]), source.identity)
    handle = attach_training_masks(model, MaskSection(components=[0], layers=[-1]), source.identity, build=build)
    try:
        saved = load_mask(tmp_path / "run" / "mask.json")
        assert handle.provenance["path"] == str((tmp_path / "run" / "mask.json").resolve())
        assert saved.layers == [1] and saved.method.seed == 7 and saved.data.format == "text"
        assert handle.provenance["layers"] == [1]
    finally:
        handle.remove()


def test_freeze_rows_qlora_keeps_lora_b_rows(tiny_llama_dir, built_mask, token_seqs):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantized = AutoModelForCausalLM.from_pretrained(
        tiny_llama_dir, quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_compute_dtype=torch.float32),
    )
    model = get_peft_model(quantized, LoraConfig(r=4, target_modules=["down_proj", "up_proj"]))
    handle = attach_training_masks(model, _section(built_mask, components=[0, 1]))
    assert all("lora_B" in name for name in handle.provenance["frozen_parameters"])  # 4-bit base weights: untouched
    b = {layer: model.base_model.model.model.layers[layer].mlp.down_proj.lora_B["default"].weight for layer in (0, 1)}
    _train_steps(model, handle, token_seqs)
    for layer, vector in handle.masks.vectors.items():
        assert (b[layer][(vector == 0).nonzero().flatten()] == 0).all()
        assert (b[layer][(vector == 1).nonzero().flatten()] != 0).any()
    handle.remove()
