import json

import pytest

from fnsft.errors import MaskError
from fnsft.mask.build import BuildSettings, build_mask
from fnsft.mask.capture import describe_architecture
from fnsft.mask.maskfile import check_against_model, load_mask, save_mask


def test_built_file_has_provenance_and_round_trips(built_mask, tiny_llama_dir):
    mask = load_mask(built_mask)
    raw = json.loads(built_mask.read_text())
    assert raw["schema"] == "fnsft.mask" and raw["version"] == 1
    assert mask.model.weights.startswith("dir:files:") and mask.model.num_layers == 2 and mask.width == 64
    assert mask.data.fingerprint.startswith("sha256:") and mask.data.samples == 50 and mask.data.tokens > 0
    assert mask.method.threshold == "percentile=90" and mask.method.seed == 3 and mask.method.ica.n_iter >= 1
    assert {"torch", "transformers", "scikit-learn", "numpy"} <= set(mask.libraries)
    assert len(mask.components) == 4
    for component in mask.components:
        assert component.neurons == sum(len(n) for n in component.layers.values())
        assert 12 <= component.neurons <= 14  # top 10 % of 128 neurons
    assert mask.to_json() == built_mask.read_text()


def test_same_inputs_and_seed_give_a_bitwise_identical_file(tiny_llama, token_seqs, built_mask, tmp_path):
    model, tokenizer = tiny_llama
    original = load_mask(built_mask)
    from fnsft.models import resolve_model
    from fnsft.recipe.schema import ModelSection

    identity = resolve_model(ModelSection(name_or_path=original.model.name)).identity
    settings = BuildSettings(components=4, samples=50, threshold="percentile=90", seed=3)
    kwargs = dict(model_name=original.model.name, source_identity=identity, pad_token_id=tokenizer.pad_token_id, data_source="inline")
    again = save_mask(build_mask(model, token_seqs, settings, **kwargs), tmp_path / "again.json")
    assert again.read_bytes() == built_mask.read_bytes()
    spilled = BuildSettings(components=4, samples=50, threshold="percentile=90", seed=3, memory_budget=0)  # all on disk
    assert build_mask(model, token_seqs, spilled, **kwargs).to_json() == built_mask.read_text()
    other_seed = build_mask(model, token_seqs, BuildSettings(components=4, samples=50, threshold="percentile=90", seed=4), **kwargs)
    assert other_seed.data.fingerprint != original.data.fingerprint  # a different seeded sample


def test_mask_for_another_model_is_refused(built_mask, tiny_model_factory, tiny_llama):
    from transformers import AutoModelForCausalLM

    mask = load_mask(built_mask)
    qwen = AutoModelForCausalLM.from_pretrained(tiny_model_factory("qwen2"))
    with pytest.raises(MaskError, match="model type llama vs qwen2"):
        check_against_model(mask, describe_architecture(qwen))
    arch = describe_architecture(tiny_llama[0])
    other_weights = {"source": "gguf", "sha256": "0" * 64}
    with pytest.raises(MaskError, match="weights"):
        check_against_model(mask, arch, other_weights)
    check_against_model(mask, arch, other_weights, same_weights=False)  # allowed on request
    wide = mask.model_copy(update={"capture": "mlp-intermediate"})
    with pytest.raises(MaskError, match="mlp-intermediate width 64 vs the model's 128"):
        check_against_model(wide, arch)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a JSON mask file"),
        ('{"name": "global_templates_v1", "templates": {}}', "old predecessor template file"),
        ('{"schema": "fnsft.mask", "version": 7}', "version 7 is not supported"),
        ('{"schema": "fnsft.mask", "version": 1, "model": {}}', "invalid mask file"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(MaskError, match=message):
        load_mask(path)


def test_missing_file_and_out_of_range_neurons(tmp_path, built_mask):
    with pytest.raises(MaskError, match="not found"):
        load_mask(tmp_path / "nope.json")
    raw = json.loads(built_mask.read_text())
    raw["components"][0]["layers"] = {"0": [3, 64]}
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(raw))
    with pytest.raises(MaskError, match="outside 0..63"):
        load_mask(broken)
    raw["components"][0]["layers"] = {"5": [3]}
    broken.write_text(json.dumps(raw))
    with pytest.raises(MaskError, match="layer 5, which was not captured"):
        load_mask(broken)
