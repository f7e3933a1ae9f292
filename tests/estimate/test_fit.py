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
    ranks = [s.cost_rank for s in suggestions]
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
