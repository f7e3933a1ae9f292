"""Offline coverage: model ids as users write them on the Hub (mirrors, variants, aliases) resolve without a network."""

from __future__ import annotations

import pytest

from fnsft.errors import EstimateError
from fnsft.estimate.catalog import catalog_lookup
from fnsft.estimate.resolve import resolve_shape

#: Ids as they appear in tutorials, model cards and issue reports: bases, -Instruct/-chat/-it variants, unsloth /
#: NousResearch / TheBloke mirrors, quantized repackagings and renamed families, across the catalog's families.
USER_IDS = [
    "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf", "meta-llama/Llama-2-13b-chat-hf",
    "NousResearch/Llama-2-7b-hf", "TheBloke/Llama-2-7B-Chat-GPTQ", "meta-llama/Llama-2-70b-chat-hf",
    "meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct", "unsloth/llama-3-8b-bnb-4bit",
    "unsloth/llama-3-8b-Instruct-bnb-4bit", "meta-llama/Meta-Llama-3-70B-Instruct",
    "meta-llama/Meta-Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", "unsloth/Meta-Llama-3.1-8B-bnb-4bit",
    "meta-llama/Meta-Llama-3.1-70B-Instruct", "meta-llama/Llama-3.3-70B-Instruct", "unsloth/Llama-3.3-70B-Instruct",
    "meta-llama/Llama-3.1-405B", "meta-llama/Llama-3.2-1B-Instruct", "unsloth/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct", "unsloth/Llama-3.2-3B-Instruct-bnb-4bit", "codellama/CodeLlama-7b-hf",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "unsloth/tinyllama-bnb-4bit",
    "mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.2", "mistralai/Mistral-7B-Instruct-v0.3",
    "unsloth/mistral-7b-bnb-4bit", "unsloth/mistral-7b-instruct-v0.3-bnb-4bit", "HuggingFaceH4/zephyr-7b-beta",
    "mistralai/Mixtral-8x7B-Instruct-v0.1", "mistralai/Mixtral-8x22B-v0.1", "mistralai/Mistral-Nemo-Instruct-2407",
    "mistralai/Mistral-Small-24B-Instruct-2501",
    "Qwen/Qwen-7B-Chat", "Qwen/Qwen1.5-7B-Chat", "Qwen/Qwen1.5-0.5B-Chat", "Qwen/Qwen1.5-MoE-A2.7B-Chat",
    "Qwen/Qwen2-7B-Instruct", "Qwen/Qwen2-0.5B-Instruct", "Qwen/Qwen2-57B-A14B-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen2.5-32B-Instruct", "Qwen/Qwen2.5-72B-Instruct",
    "unsloth/Qwen2.5-7B-Instruct-bnb-4bit", "Qwen/Qwen2.5-Coder-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct-AWQ",
    "Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B", "Qwen/Qwen3-8B-Base", "unsloth/Qwen3-14B-unsloth-bnb-4bit",
    "Qwen/Qwen3-32B", "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-235B-A22B", "Qwen/Qwen3-1.7B-FP8",
    "google/gemma-2b", "google/gemma-2b-it", "google/gemma-7b-it", "google/gemma-1.1-7b-it", "unsloth/gemma-7b-bnb-4bit",
    "google/gemma-2-2b-it", "google/gemma-2-9b", "google/gemma-2-27b-it", "unsloth/gemma-2-9b-it-bnb-4bit",
    "google/gemma-3-270m", "google/gemma-3-1b-it", "google/gemma-3-4b-it", "google/gemma-3-12b-it",
    "google/gemma-3-27b-it", "unsloth/gemma-3-4b-it",
    "microsoft/phi-1", "microsoft/phi-1_5", "microsoft/phi-2", "microsoft/Phi-3-mini-4k-instruct",
    "microsoft/Phi-3-mini-128k-instruct", "microsoft/Phi-3.5-mini-instruct", "microsoft/Phi-3-medium-4k-instruct",
    "microsoft/phi-4", "unsloth/phi-4", "microsoft/Phi-4-mini-instruct", "unsloth/Phi-3-mini-4k-instruct",
    "stabilityai/stablelm-2-1_6b", "stabilityai/stablelm-2-zephyr-1_6b", "stabilityai/stablelm-3b-4e1t",
    "stabilityai/stablelm-zephyr-3b",
    "tiiuae/falcon-7b", "tiiuae/falcon-7b-instruct", "tiiuae/falcon-40b",
    "EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m", "EleutherAI/pythia-1b",
    "EleutherAI/pythia-1.4b", "EleutherAI/pythia-2.8b", "EleutherAI/pythia-6.9b", "EleutherAI/pythia-12b",
    "EleutherAI/gpt-neox-20b",
    "allenai/OLMo-1B-hf", "allenai/OLMo-7B-hf", "allenai/OLMo-2-0425-1B", "allenai/OLMo-2-1124-7B",
    "allenai/OLMo-2-1124-7B-Instruct", "allenai/OLMo-2-1124-13B",
    "deepseek-ai/deepseek-llm-7b-base", "deepseek-ai/deepseek-llm-7b-chat", "deepseek-ai/deepseek-llm-67b-chat",
    "deepseek-ai/deepseek-coder-6.7b-instruct", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
    "unsloth/DeepSeek-R1-Distill-Llama-8B",
    "openai-community/gpt2", "gpt2", "gpt2-medium", "openai-community/gpt2-large", "gpt2-xl",
    "bigscience/bloom-560m", "bigscience/bloomz-560m",
    "HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct",
]


def test_at_least_95_percent_of_user_ids_answer_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached: the catalog alone must answer
    monkeypatch.setenv("FNSFT_CACHE", str(tmp_path / "fnsft"))
    missed = []
    for model in USER_IDS:
        try:
            resolve_shape(model)
        except EstimateError:
            missed.append(model)
    assert len(USER_IDS) >= 120
    assert len(missed) / len(USER_IDS) <= 0.05, missed


@pytest.mark.parametrize(("written", "key"), [
    ("meta-llama/Meta-Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
    ("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", "meta-llama/Llama-3.1-8B"),
    ("meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.1-70B"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mistral-7B-v0.3"),
    ("Qwen/Qwen2.5-Coder-7B-Instruct", "Qwen/Qwen2.5-7B"),
    ("google/gemma-3-4b-it", "google/gemma-3-4b-pt"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "Qwen/Qwen2.5-14B"),
])
def test_mirrors_variants_and_aliases_map_to_the_same_shapes(written, key):
    assert catalog_lookup(written) == key
    shape = resolve_shape(written)
    assert f"same shapes as {key}" in shape.name and shape.total_params == resolve_shape(key).total_params


def test_different_shapes_are_not_merged():
    """Variant words are ignored, sizes and versions are not."""
    assert catalog_lookup("meta-llama/Meta-Llama-3-8B") != catalog_lookup("meta-llama/Llama-3.1-8B")
    assert catalog_lookup("Qwen/Qwen2.5-7B") != catalog_lookup("Qwen/Qwen2.5-14B")
    assert catalog_lookup("EleutherAI/pythia-1b") != catalog_lookup("EleutherAI/pythia-1.4b")
    assert catalog_lookup("google-t5/t5-small") is not None  # T5 resolves; its activations are refused later
