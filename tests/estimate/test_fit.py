"""Make-it-fit suggestions, GPU catalog, memory sizes and the PEFT-vs-full line."""

from __future__ import annotations

import pytest

from fnsft.errors import EstimateError
from fnsft.estimate import build_input, estimate, gpu_memory, make_it_fit, parse_memory
from fnsft.estimate.fit import recommendation

GiB = 1 << 30


def test_suggestions_fit_are_cheapest_first_and_keep_the_effective_batch():
    inp = build_input(model="meta-llama/Llama-2-7b-hf", method="full", batch_size=8, seq_len=2048,
                      gradient_checkpointing=False)
    budget = gpu_memory("A100-80GB")
    assert estimate(inp).total > budget
    suggestions = make_it_fit(inp, budget)
    assert suggestions
    for in_train in (True, False):  # what fnsft train can run, then the estimate-only savers: each cheapest first
        ranks = [s.cost_rank for s in suggestions if s.in_train is in_train]
        assert ranks == sorted(ranks)
    for suggestion in suggestions:
        assert suggestion.total <= budget
        assert suggestion.total == estimate(suggestion.input).total
    first = suggestions[0].input
    assert first.batch_size * first.gradient_accumulation_steps == 8


def test_nothing_to_suggest_when_it_fits():
    inp = build_input(model="HuggingFaceTB/SmolLM2-135M", method="lora", seq_len=512)
    assert make_it_fit(inp, 80 * GiB) == []


def test_combined_changes_when_no_single_one_fits():
    inp = build_input(model="meta-llama/Llama-3.1-70B", method="full", batch_size=4, seq_len=4096)
    suggestions = make_it_fit(inp, gpu_memory("RTX4090"))
    assert suggestions and all(s.total <= gpu_memory("RTX4090") for s in suggestions)
    assert " + " in suggestions[0].description or suggestions[0].input.method == "qlora"


def test_recommendation_follows_the_guide():
    big = build_input(model="meta-llama/Llama-2-7b-hf")
    assert recommendation(big, None).startswith("PEFT")
    small = build_input(model="HuggingFaceTB/SmolLM2-135M")
    assert "Full fine-tuning is an option" in recommendation(small, 80 * GiB)
    assert recommendation(small, 8 * GiB).startswith("PEFT recommended: limited GPU memory")


@pytest.mark.parametrize(("text", "expected"), [
    ("80GiB", 80 * GiB), ("24GB", 24 * 10**9), ("16G", 16 * GiB), ("512MiB", 512 << 20), ("1024", 1024),
    ("1.5 GiB", int(1.5 * GiB)),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "0GB", "12XB", ""])
def test_parse_memory_rejects_nonsense(text):
    with pytest.raises(EstimateError):
        parse_memory(text)


def test_gpu_lookup_is_forgiving_and_unknown_lists_known_names():
    assert gpu_memory("a100 80gb") == gpu_memory("A100-80GB") == 81920 << 20
    with pytest.raises(EstimateError, match="H100-80GB"):
        gpu_memory("X9000")


def test_estimate_only_savers_are_suggested_with_their_saving_and_marked():
    # a LoRA run on a 128k-vocabulary model with the model's own loss: the b·s·V logits dominate
    inp = build_input(model="meta-llama/Llama-3.1-8B", method="lora", batch_size=4, seq_len=4096, loss="plain")
    before = estimate(inp).total
    suggestions = make_it_fit(inp, 40 * GiB)
    estimate_only = {s.changes.get("loss", key) for s in suggestions if not s.in_train for key in s.changes}
    assert {"liger", "cce", "activation_offload"} <= estimate_only
    chunked = next(s for s in suggestions if s.changes.get("loss") == "chunked")
    assert chunked.in_train and "what fnsft train runs" in chunked.description
    for suggestion in suggestions:
        itself = {k: v for k, v in suggestion.changes.items() if k not in ("batch_size", "gradient_accumulation_steps")}
        # the saving of the change itself (a smaller micro-batch added to it is not counted in)
        assert suggestion.saving == before - estimate(inp.model_copy(update=itself or suggestion.changes)).total
        assert ("estimate only" in suggestion.description) is (not suggestion.in_train)
        assert f"saves {suggestion.saving / GiB:.2f} GiB" in suggestion.description
    # what fnsft train can run is listed first
    flags = [s.in_train for s in suggestions]
    assert flags == sorted(flags, reverse=True) and flags[0]
    liger = next(s for s in suggestions if s.changes.get("loss") == "liger")
    assert liger.saving > 0 and liger.total <= 40 * GiB and "instead of the plain loss" in liger.description


def test_optimizer_in_backward_saves_the_gradients_of_full_fine_tuning():
    inp = build_input(model="meta-llama/Llama-3.1-8B", method="full", batch_size=1, seq_len=1024)
    breakdown = estimate(inp)
    suggestions = make_it_fit(inp, breakdown.total - 5 * GiB)
    fused = next(s for s in suggestions if s.changes == {"optimizer_in_backward": True})
    assert not fused.in_train
    assert fused.saving == breakdown.total - estimate(fused.input).total > 5 * GiB


def test_cpu_runs_get_no_gpu_only_savers():
    inp = build_input(model="HuggingFaceTB/SmolLM2-135M", method="full", batch_size=8, seq_len=1024, device="cpu",
                      gradient_checkpointing=False)
    suggestions = make_it_fit(inp, estimate(inp).total - 1)
    changed = {key for s in suggestions for key in s.changes}
    assert "activation_offload" not in changed and "loss" not in changed
