"""Real SmolLM2-135M: build networks on one text sample, lesion-test them on another (slow: minutes on CPU)."""

import json

import pytest

pytestmark = pytest.mark.slow


PROSE = [
    "The river flows slowly through the old town, past the market and the church.",
    "In the morning, the children walk to school while their parents go to work.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She opened the window and listened to the birds singing in the garden.",
    "The capital of France is Paris, a city famous for its museums and cafes.",
    "He bought bread, cheese and apples at the shop on the corner.",
    "Computers store information as long sequences of zeros and ones.",
    "After the rain stopped, the sun came out and the streets began to dry.",
]


def test_smollm2_build_and_lesion(smollm2_dir, make_sentences, tmp_path):
    sentences = make_sentences
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fnsft.mask.build import BuildSettings, build_mask
    from fnsft.mask.evaluate import lesion_test, save_report

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    build_texts = [f"Question {i}: what is {i} plus {i + 3}? Answer: {2 * i + 3}. " + s for i, s in enumerate(sentences(60, seed=7))]
    eval_texts = PROSE
    mask = build_mask(
        model, [tokenizer(t)["input_ids"] for t in build_texts],
        BuildSettings(components=6, samples=60, max_tokens=2000, threshold="percentile=98", seed=0),
        model_name="SmolLM2-135M-Instruct", source_identity=None, pad_token_id=tokenizer.pad_token_id, data_source="synthetic",
    )
    assert mask.model.num_layers == 30 and mask.width == 576 and len(mask.components) == 6
    assert all(c.neurons >= 345 for c in mask.components)  # top 2 % of 17 280 neurons each
    report = lesion_test(
        model, mask, [tokenizer(t)["input_ids"] for t in eval_texts], pad_token_id=tokenizer.pad_token_id,
        mask_file="smollm2", model_name="smollm2", top=6, draws=5, seed=0, exclude_top_rms=10,
    )
    json_path, _png = save_report(report, tmp_path)
    data = json.loads(json_path.read_text())
    by_kind = {c["kind"]: c for c in data["conditions"]}
    assert 0 < by_kind["baseline"]["loss"] < 5  # a pretrained model on plain English prose (uniform: ln 49152 = 10.8)
    assert by_kind["union"]["delta_loss"] > 0
    assert len(by_kind["random-uniform"]["draws"]) == 5 and by_kind["random-uniform"]["loss_std"] >= 0
    print(json.dumps({c["name"]: round(c["delta_loss"], 3) for c in data["conditions"]}, indent=1))
