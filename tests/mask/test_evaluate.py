import json

import numpy as np
import pytest
import torch

from fnsft.mask.apply import NeuronMasks
from fnsft.mask.evaluate import eval_loss, layer_matched_sets, lesion_test, save_report, uniform_sets
from fnsft.mask.maskfile import load_mask


def test_lesioning_every_mlp_channel_equals_zeroing_the_down_projections(tiny_llama_dir, token_seqs):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    seqs = token_seqs[:6]
    baseline = eval_loss(model, seqs, pad_token_id=0)
    everything = {layer: set(range(64)) for layer in (0, 1)}
    hooks = NeuronMasks(model, everything, mode="lesion", capture="mlp-output", width=64, layers=[0, 1])
    lesioned = eval_loss(model, seqs, pad_token_id=0)
    hooks.remove()
    hooks = NeuronMasks(model, {}, mode="preserve", capture="mlp-output", width=64, layers=[0, 1])
    preserved_nothing = eval_loss(model, seqs, pad_token_id=0)
    hooks.remove()
    with torch.no_grad():
        for block in model.model.layers:
            block.mlp.down_proj.weight.zero_()
    no_mlp = eval_loss(model, seqs, pad_token_id=0)
    assert lesioned != baseline
    assert abs(lesioned - no_mlp) < 1e-5 and abs(preserved_nothing - no_mlp) < 1e-5


def test_eval_loss_matches_transformers_loss_for_one_sequence(tiny_llama, token_seqs):
    model, _tok = tiny_llama
    ids = torch.tensor([token_seqs[0]])
    with torch.no_grad():
        expected = float(model(input_ids=ids, labels=ids).loss)
    assert abs(eval_loss(model, token_seqs[:1], pad_token_id=0) - expected) < 1e-5


def test_random_sets_have_the_requested_sizes():
    rng = np.random.default_rng(0)
    excluded = {0: {1, 2}}
    uniform = uniform_sets(rng, [0, 3], 16, 10, excluded)
    assert sum(map(len, uniform.values())) == 10 and not uniform.get(0, set()) & {1, 2}
    matched = layer_matched_sets(rng, {0: {4, 5, 6}, 3: {1}}, 16, excluded)
    assert {k: len(v) for k, v in matched.items()} == {0: 3, 3: 1} and not matched[0] & {1, 2}


def test_lesion_test_report_json_and_png(tiny_llama, token_seqs, built_mask, tmp_path):
    model, _tok = tiny_llama
    mask = load_mask(built_mask)
    seqs = token_seqs[50:56]
    report = lesion_test(model, mask, seqs, pad_token_id=0, mask_file=str(built_mask), model_name="tiny",
                         top=2, draws=2, seed=1, exclude_top_rms=3)
    kinds = [c.kind for c in report.conditions]
    assert kinds == ["baseline"] + ["component"] * 4 + ["union", "random-uniform", "random-layer-matched", "preserve"]
    union = report.conditions[5]
    assert union.neurons == sum(map(len, mask.union([0, 1]).values())) - sum(
        len(set(n) & set(mask.union([0, 1]).get(int(layer), ()))) for layer, n in report.excluded_channels.items()
    )
    assert sum(map(len, report.excluded_channels.values())) == 3
    for random_kind in report.conditions[6:8]:
        assert random_kind.neurons == union.neurons and len(random_kind.draws) == 2 and random_kind.loss_std is not None
    assert report.conditions[0].loss == eval_loss(model, seqs, pad_token_id=0)  # the model is left unmasked
    json_path, png_path = save_report(report, tmp_path / "out")
    saved = json.loads(json_path.read_text())
    assert saved["conditions"][0]["delta_loss"] == 0 and png_path.stat().st_size > 1000


def _report(union: float, uniform: tuple[float, float], matched: tuple[float, float], tokens: int = 10_000, draws: int = 5):
    from fnsft.mask.evaluate import Condition, LesionReport

    conditions = [Condition("unmasked", "baseline", 0, 0.0, 3.0), Condition("union top-2", "union", 10, 0.1, union),
                  Condition("u", "random-uniform", 10, 0.1, uniform[0], uniform[1]),
                  Condition("m", "random-layer-matched", 10, 0.1, matched[0], matched[1])]
    return LesionReport("m.json", "tiny", tokens, 10, 2, draws, 0, {}, conditions)


def test_the_verdict_is_yes_only_when_the_union_beats_every_control_by_two_sigma():
    from fnsft.mask.evaluate import verdict

    clear = verdict(_report(union=10.93, uniform=(3.5, 0.5), matched=(4.0, 1.0)))
    assert clear.matters and clear.z_scores == pytest.approx({"random-uniform": 14.86, "random-layer-matched": 6.93})
    assert "networks matter more than random sets of the same size: yes" in clear.reading and not clear.warnings
    # the quickstart's numbers from the issue: +7.93 against +7.53 ± 4.01 (uniform) and +10.70 ± 2.11 (matched)
    quickstart = verdict(_report(union=3 + 7.93, uniform=(3 + 7.53, 4.01), matched=(3 + 10.70, 2.11), tokens=1200))
    assert not quickstart.matters and ": no at this sample size" in quickstart.reading
    assert quickstart.z_scores["random-uniform"] == pytest.approx(0.40 / 4.01)
    assert any("only 1200 evaluation tokens" in w for w in quickstart.warnings)
    uniform_text = verdict(_report(10.0, (3.5, 0.5), (4.0, 1.0), draws=2), distinct_token_share=0.03)
    assert any("very uniform" in w for w in uniform_text.warnings) and any("2 random draws" in w for w in uniform_text.warnings)
    assert verdict(_report(10.0, (3.5, 0.0), (4.0, 1.0))).z_scores["random-uniform"] is None  # no spread: no z, no yes
