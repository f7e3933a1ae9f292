"""Built-in offline catalog: the shape-relevant keys of popular models' config.json files.

Each entry is what the Hub's ``config.json`` says for that repository (only the keys that change the parameter
count or the activation shapes; everything else takes transformers' defaults). Multimodal checkpoints (Gemma 3
4B/12B/27B) are listed by their text tower (``gemma3_text``): fnsft fine-tunes the language model, and the
vision tower's weights are not counted. Qwen (1.0) ships remote code; its entries are written as the equivalent
``qwen2`` shape (fused c_attn with bias = q/k/v with bias; its ``intermediate_size`` is halved in the remote code).

Sources: the values are those of each repository's ``config.json`` on the Hub (written from the published files;
where public code quoted a config, e.g. Pythia's module printouts, OLMo 2's and Qwen3-MoE's configs, the values
were cross-checked against it). Every entry's parameter count is checked against transformers' own modules on the
meta device (tests/estimate/test_arch.py), so a wrong width shows up as a wrong published count.

Names as users write them: :func:`catalog_lookup` ignores the organisation (``unsloth/``, ``NousResearch/``,
``TheBloke/`` mirrors), case, a ``Meta-`` prefix and packaging/variant words anywhere in the name (``-Instruct``,
``-chat``, ``-it``, ``-hf``, ``-bnb-4bit``, ``-GPTQ``, ...), and :data:`ALIASES` maps other names of the same
shapes (Llama 3.3 70B = Llama 3.1 70B, DeepSeek-R1 distills = their Llama/Qwen bases, Qwen2.5-Coder = Qwen2.5).
"""

from __future__ import annotations

from typing import Any


def _llama(h, inter, layers, heads, kv, vocab, max_pos, tie=False, **extra) -> dict[str, Any]:
    return dict(model_type="llama", hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                max_position_embeddings=max_pos, tie_word_embeddings=tie, **extra)


def _qwen2(h, inter, layers, heads, kv, vocab, max_pos, tie=False) -> dict[str, Any]:
    return dict(model_type="qwen2", hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                max_position_embeddings=max_pos, tie_word_embeddings=tie)


def _qwen3(h, inter, layers, heads, kv, tie, max_pos=40960) -> dict[str, Any]:
    return dict(model_type="qwen3", hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, head_dim=128, vocab_size=151936,
                max_position_embeddings=max_pos, tie_word_embeddings=tie)


def _gemma(model_type, h, inter, layers, heads, kv, head_dim, vocab, max_pos) -> dict[str, Any]:
    return dict(model_type=model_type, hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim, vocab_size=vocab,
                max_position_embeddings=max_pos, tie_word_embeddings=True)


def _neox(h, layers, heads, vocab, inter=None) -> dict[str, Any]:
    return dict(model_type="gpt_neox", hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=inter or 4 * h, vocab_size=vocab, max_position_embeddings=2048)


def _phi3(h, inter, layers, heads, kv, vocab, max_pos, tie=False) -> dict[str, Any]:
    return dict(model_type="phi3", hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab, max_position_embeddings=max_pos,
                tie_word_embeddings=tie)


def _moe(model_type, h, layers, heads, kv, experts, top_k, moe_inter, vocab, max_pos, **extra) -> dict[str, Any]:
    return dict(model_type=model_type, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=moe_inter,
                vocab_size=vocab, max_position_embeddings=max_pos, tie_word_embeddings=False, **extra)


def _gpt2(h, layers, heads) -> dict[str, Any]:
    return dict(model_type="gpt2", n_embd=h, n_layer=layers, n_head=heads, vocab_size=50257, n_positions=1024)


def _bloom(h, layers, heads) -> dict[str, Any]:
    return dict(model_type="bloom", hidden_size=h, n_layer=layers, n_head=heads, vocab_size=250880, seq_length=2048)


def _t5(d, ff, layers, heads, gated, vocab=32128, kv=64, decoder_layers=None) -> dict[str, Any]:
    return dict(model_type="t5", d_model=d, d_ff=ff, num_layers=layers, num_decoder_layers=decoder_layers or layers,
                num_heads=heads, d_kv=kv, vocab_size=vocab, feed_forward_proj="gated-gelu" if gated else "relu",
                tie_word_embeddings=not gated)


CATALOG: dict[str, dict[str, Any]] = {
    # Llama 2 / 3 / 3.1 / 3.2
    "meta-llama/Llama-2-7b-hf": _llama(4096, 11008, 32, 32, 32, 32000, 4096),
    "meta-llama/Llama-2-13b-hf": _llama(5120, 13824, 40, 40, 40, 32000, 4096),
    "meta-llama/Llama-2-70b-hf": _llama(8192, 28672, 80, 64, 8, 32000, 4096),
    "meta-llama/Meta-Llama-3-8B": _llama(4096, 14336, 32, 32, 8, 128256, 8192),
    "meta-llama/Meta-Llama-3-70B": _llama(8192, 28672, 80, 64, 8, 128256, 8192),
    "meta-llama/Llama-3.1-8B": _llama(4096, 14336, 32, 32, 8, 128256, 131072),
    "meta-llama/Llama-3.1-70B": _llama(8192, 28672, 80, 64, 8, 128256, 131072),
    "meta-llama/Llama-3.1-405B": _llama(16384, 53248, 126, 128, 8, 128256, 131072),
    "meta-llama/Llama-3.2-1B": _llama(2048, 8192, 16, 32, 8, 128256, 131072, tie=True, head_dim=64),
    "meta-llama/Llama-3.2-3B": _llama(3072, 8192, 28, 24, 8, 128256, 131072, tie=True, head_dim=128),
    "meta-llama/CodeLlama-7b-hf": _llama(4096, 11008, 32, 32, 32, 32016, 16384),
    "meta-llama/CodeLlama-13b-hf": _llama(5120, 13824, 40, 40, 40, 32016, 16384),
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": _llama(2048, 5632, 22, 32, 4, 32000, 2048),
    # DeepSeek (LLM/Coder are llama-shaped; the R1 distills are aliases of their bases, one has its own head)
    "deepseek-ai/deepseek-llm-7b-base": _llama(4096, 11008, 30, 32, 32, 102400, 4096),
    "deepseek-ai/deepseek-llm-67b-base": _llama(8192, 22016, 95, 64, 8, 102400, 4096),
    "deepseek-ai/deepseek-coder-6.7b-base": _llama(4096, 11008, 32, 32, 32, 32256, 16384),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": _qwen2(1536, 8960, 28, 12, 2, 151936, 131072),
    # Mistral / Mixtral
    "mistralai/Mistral-7B-v0.1": dict(_llama(4096, 14336, 32, 32, 8, 32000, 32768), model_type="mistral"),
    "mistralai/Mistral-7B-v0.3": dict(_llama(4096, 14336, 32, 32, 8, 32768, 32768), model_type="mistral"),
    "mistralai/Mixtral-8x7B-v0.1": dict(_llama(4096, 14336, 32, 32, 8, 32000, 32768), model_type="mixtral",
                                        num_local_experts=8, num_experts_per_tok=2),
    "mistralai/Mixtral-8x22B-v0.1": dict(_llama(6144, 16384, 56, 48, 8, 32768, 65536), model_type="mixtral",
                                         num_local_experts=8, num_experts_per_tok=2),
    "mistralai/Mistral-Nemo-Base-2407": dict(_llama(5120, 14336, 40, 32, 8, 131072, 1024000, head_dim=128),
                                             model_type="mistral"),
    "mistralai/Mistral-Small-24B-Base-2501": dict(_llama(5120, 32768, 40, 32, 8, 131072, 32768, head_dim=128),
                                                  model_type="mistral"),
    # Qwen 1 (as the equivalent qwen2 shape), 1.5, 2, 2.5, 3
    "Qwen/Qwen-1_8B": _qwen2(2048, 5504, 24, 16, 16, 151936, 8192),
    "Qwen/Qwen-7B": _qwen2(4096, 11008, 32, 32, 32, 151936, 8192),
    "Qwen/Qwen-14B": _qwen2(5120, 13696, 40, 40, 40, 152064, 2048),
    "Qwen/Qwen1.5-0.5B": _qwen2(1024, 2816, 24, 16, 16, 151936, 32768, tie=True),
    "Qwen/Qwen1.5-1.8B": _qwen2(2048, 5504, 24, 16, 16, 151936, 32768),
    "Qwen/Qwen1.5-4B": _qwen2(2560, 6912, 40, 20, 20, 151936, 32768),
    "Qwen/Qwen1.5-7B": _qwen2(4096, 11008, 32, 32, 32, 151936, 32768),
    "Qwen/Qwen1.5-14B": _qwen2(5120, 13696, 40, 40, 40, 152064, 32768),
    "Qwen/Qwen1.5-32B": _qwen2(5120, 27392, 64, 40, 8, 152064, 32768),
    "Qwen/Qwen1.5-72B": _qwen2(8192, 24576, 80, 64, 64, 152064, 32768),
    "Qwen/Qwen2-0.5B": _qwen2(896, 4864, 24, 14, 2, 151936, 131072, tie=True),
    "Qwen/Qwen2-1.5B": _qwen2(1536, 8960, 28, 12, 2, 151936, 131072, tie=True),
    "Qwen/Qwen2-7B": _qwen2(3584, 18944, 28, 28, 4, 152064, 131072),
    "Qwen/Qwen2-72B": _qwen2(8192, 29568, 80, 64, 8, 152064, 131072),
    "Qwen/Qwen2.5-0.5B": _qwen2(896, 4864, 24, 14, 2, 151936, 32768, tie=True),
    "Qwen/Qwen2.5-1.5B": _qwen2(1536, 8960, 28, 12, 2, 151936, 131072, tie=True),
    "Qwen/Qwen2.5-3B": _qwen2(2048, 11008, 36, 16, 2, 151936, 32768, tie=True),
    "Qwen/Qwen2.5-7B": _qwen2(3584, 18944, 28, 28, 4, 152064, 131072),
    "Qwen/Qwen2.5-14B": _qwen2(5120, 13824, 48, 40, 8, 152064, 131072),
    "Qwen/Qwen2.5-32B": _qwen2(5120, 27648, 64, 40, 8, 152064, 131072),
    "Qwen/Qwen2.5-72B": _qwen2(8192, 29568, 80, 64, 8, 152064, 131072),
    "Qwen/Qwen3-0.6B": _qwen3(1024, 3072, 28, 16, 8, tie=True),
    "Qwen/Qwen3-1.7B": _qwen3(2048, 6144, 28, 16, 8, tie=True),
    "Qwen/Qwen3-4B": _qwen3(2560, 9728, 36, 32, 8, tie=True),
    "Qwen/Qwen3-8B": _qwen3(4096, 12288, 36, 32, 8, tie=False),
    "Qwen/Qwen3-14B": _qwen3(5120, 17408, 40, 40, 8, tie=False),
    "Qwen/Qwen3-32B": _qwen3(5120, 25600, 64, 64, 8, tie=False),
    "Qwen/Qwen1.5-MoE-A2.7B": _moe("qwen2_moe", 2048, 24, 16, 16, 60, 4, 1408, 151936, 8192,
                                   intermediate_size=5632, shared_expert_intermediate_size=5632),
    "Qwen/Qwen2-57B-A14B": _moe("qwen2_moe", 3584, 28, 28, 4, 64, 8, 2560, 151936, 131072,
                                intermediate_size=18944, shared_expert_intermediate_size=20480),
    "Qwen/Qwen3-30B-A3B": _moe("qwen3_moe", 2048, 48, 32, 4, 128, 8, 768, 151936, 40960, head_dim=128,
                               intermediate_size=6144),
    "Qwen/Qwen3-235B-A22B": _moe("qwen3_moe", 4096, 94, 64, 4, 128, 8, 1536, 151936, 40960, head_dim=128,
                                 intermediate_size=12288),
    # Gemma 1 / 2 / 3 (3: text tower)
    "google/gemma-3-270m": _gemma("gemma3_text", 640, 2048, 18, 4, 1, 256, 262144, 32768),
    "google/gemma-2b": _gemma("gemma", 2048, 16384, 18, 8, 1, 256, 256000, 8192),
    "google/gemma-7b": _gemma("gemma", 3072, 24576, 28, 16, 16, 256, 256000, 8192),
    "google/gemma-2-2b": _gemma("gemma2", 2304, 9216, 26, 8, 4, 256, 256000, 8192),
    "google/gemma-2-9b": _gemma("gemma2", 3584, 14336, 42, 16, 8, 256, 256000, 8192),
    "google/gemma-2-27b": _gemma("gemma2", 4608, 36864, 46, 32, 16, 128, 256000, 8192),
    "google/gemma-3-1b-pt": _gemma("gemma3_text", 1152, 6912, 26, 4, 1, 256, 262144, 32768),
    "google/gemma-3-4b-pt": _gemma("gemma3_text", 2560, 10240, 34, 8, 4, 256, 262208, 131072),
    "google/gemma-3-12b-pt": _gemma("gemma3_text", 3840, 15360, 48, 16, 8, 256, 262208, 131072),
    "google/gemma-3-27b-pt": _gemma("gemma3_text", 5376, 21504, 62, 32, 16, 128, 262208, 131072),
    # Phi
    "microsoft/phi-2": dict(model_type="phi", hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                            num_attention_heads=32, vocab_size=51200, max_position_embeddings=2048),
    "microsoft/phi-1": dict(model_type="phi", hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                            num_attention_heads=32, vocab_size=51200, max_position_embeddings=2048),
    "microsoft/phi-1_5": dict(model_type="phi", hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                              num_attention_heads=32, vocab_size=51200, max_position_embeddings=2048),
    "microsoft/Phi-3-mini-4k-instruct": _phi3(3072, 8192, 32, 32, 32, 32064, 4096),
    "microsoft/Phi-3-mini-128k-instruct": _phi3(3072, 8192, 32, 32, 32, 32064, 131072),
    "microsoft/Phi-3.5-mini-instruct": _phi3(3072, 8192, 32, 32, 32, 32064, 131072),
    "microsoft/Phi-3-medium-4k-instruct": _phi3(5120, 17920, 40, 40, 10, 32064, 4096),
    "microsoft/Phi-3-medium-128k-instruct": _phi3(5120, 17920, 40, 40, 10, 32064, 131072),
    "microsoft/phi-4": _phi3(5120, 17920, 40, 40, 10, 100352, 16384),
    "microsoft/Phi-4-mini-instruct": dict(_phi3(3072, 8192, 32, 24, 8, 200064, 131072, tie=True),
                                          partial_rotary_factor=0.75),
    # GPT-NeoX / Pythia
    "EleutherAI/pythia-70m": _neox(512, 6, 8, 50304),
    "EleutherAI/pythia-160m": _neox(768, 12, 12, 50304),
    "EleutherAI/pythia-410m": _neox(1024, 24, 16, 50304),
    "EleutherAI/pythia-1b": _neox(2048, 16, 8, 50304),
    "EleutherAI/pythia-1.4b": _neox(2048, 24, 16, 50304),
    "EleutherAI/pythia-2.8b": _neox(2560, 32, 32, 50304),
    "EleutherAI/pythia-6.9b": _neox(4096, 32, 32, 50432),
    "EleutherAI/pythia-12b": _neox(5120, 36, 40, 50688),
    "EleutherAI/gpt-neox-20b": _neox(6144, 44, 64, 50432),
    # OLMo 1 / 2
    "allenai/OLMo-1B-hf": dict(_llama(2048, 8192, 16, 16, 16, 50304, 2048, tie=True), model_type="olmo"),
    "allenai/OLMo-7B-hf": dict(_llama(4096, 11008, 32, 32, 32, 50304, 2048), model_type="olmo"),
    "allenai/OLMo-2-0425-1B": dict(_llama(2048, 8192, 16, 16, 16, 100352, 4096), model_type="olmo2"),
    "allenai/OLMo-2-1124-7B": dict(_llama(4096, 11008, 32, 32, 32, 100352, 4096), model_type="olmo2"),
    "allenai/OLMo-2-1124-13B": dict(_llama(5120, 13824, 40, 40, 40, 100352, 4096), model_type="olmo2"),
    # GPT-2
    "openai-community/gpt2": _gpt2(768, 12, 12),
    "openai-community/gpt2-medium": _gpt2(1024, 24, 16),
    "openai-community/gpt2-large": _gpt2(1280, 36, 20),
    "openai-community/gpt2-xl": _gpt2(1600, 48, 25),
    # Falcon
    "tiiuae/falcon-7b": dict(model_type="falcon", hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
                             multi_query=True, parallel_attn=True, bias=False, new_decoder_architecture=False,
                             vocab_size=65024, max_position_embeddings=2048),
    "tiiuae/falcon-40b": dict(model_type="falcon", hidden_size=8192, num_hidden_layers=60, num_attention_heads=128,
                              num_kv_heads=8, new_decoder_architecture=True, parallel_attn=True, bias=False,
                              vocab_size=65024, max_position_embeddings=2048),
    # StableLM
    "stabilityai/stablelm-3b-4e1t": dict(model_type="stablelm", hidden_size=2560, intermediate_size=6912,
                                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                         vocab_size=50304, max_position_embeddings=4096, use_qkv_bias=False),
    "stabilityai/stablelm-2-1_6b": dict(model_type="stablelm", hidden_size=2048, intermediate_size=5632,
                                        num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                                        vocab_size=100352, max_position_embeddings=4096, use_qkv_bias=True),
    # BLOOM
    "bigscience/bloom-560m": _bloom(1024, 24, 16),
    "bigscience/bloom-1b7": _bloom(2048, 24, 16),
    "bigscience/bloom-3b": _bloom(2560, 30, 32),
    "bigscience/bloom-7b1": _bloom(4096, 30, 32),
    # T5 (encoder-decoder: shapes and parameter counts only)
    "google-t5/t5-small": _t5(512, 2048, 6, 8, gated=False),
    "google-t5/t5-base": _t5(768, 3072, 12, 12, gated=False),
    "google-t5/t5-large": _t5(1024, 4096, 24, 16, gated=False),
    "google/flan-t5-base": _t5(768, 2048, 12, 12, gated=True),
    "google/flan-t5-large": _t5(1024, 2816, 24, 16, gated=True),
    "google/flan-t5-xl": _t5(2048, 5120, 24, 32, gated=True),
    # SmolLM2 (the quickstart model)
    "HuggingFaceTB/SmolLM2-135M": _llama(576, 1536, 30, 9, 3, 49152, 8192, tie=True),
    "HuggingFaceTB/SmolLM2-360M": _llama(960, 2560, 32, 15, 5, 49152, 8192, tie=True),
    "HuggingFaceTB/SmolLM2-1.7B": _llama(2048, 8192, 24, 32, 32, 49152, 8192, tie=True),
}

#: Words in a repository name that do not change the shapes: fine-tuned variants, packaging, quantized mirrors.
_IGNORED_WORDS = frozenset({
    "meta", "instruct", "chat", "it", "hf", "pt", "base", "bnb", "4bit", "8bit", "unsloth", "gptq", "awq", "gguf",
    "fp8", "fp16", "bf16", "dynamic", "int4", "int8", "safetensors",
})

#: Other names of catalog shapes (canonical name → catalog key).
ALIASES: dict[str, str] = {
    "llama-3.3-70b": "meta-llama/Llama-3.1-70B",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "mistral-7b-v0.2": "mistralai/Mistral-7B-v0.1",
    "mistral-nemo-2407": "mistralai/Mistral-Nemo-Base-2407",
    "mistral-nemo": "mistralai/Mistral-Nemo-Base-2407",
    "mistral-small-24b-2501": "mistralai/Mistral-Small-24B-Base-2501",
    "tinyllama": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "tinyllama-1.1b": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "deepseek-r1-distill-llama-8b": "meta-llama/Llama-3.1-8B",
    "deepseek-r1-distill-llama-70b": "meta-llama/Llama-3.1-70B",
    "deepseek-r1-distill-qwen-7b": "Qwen/Qwen2.5-7B",
    "deepseek-r1-distill-qwen-14b": "Qwen/Qwen2.5-14B",
    "deepseek-r1-distill-qwen-32b": "Qwen/Qwen2.5-32B",
    "gemma-1.1-2b": "google/gemma-2b",
    "gemma-1.1-7b": "google/gemma-7b",
    "phi-3.5-mini": "microsoft/Phi-3.5-mini-instruct",
    "stablelm-zephyr-3b": "stabilityai/stablelm-3b-4e1t",
    "zephyr-7b-beta": "mistralai/Mistral-7B-v0.1",
    "openhermes-2.5-mistral-7b": "mistralai/Mistral-7B-v0.1",
    "gpt2-small": "openai-community/gpt2",
    "olmo-2-1124-7b-sft": "allenai/OLMo-2-1124-7B",
    "olmo-2-1124-7b-dpo": "allenai/OLMo-2-1124-7B",
}
#: Families renamed by prefix (Qwen2.5-Coder-7B has Qwen2.5-7B's shapes).
_PREFIX_ALIASES = {"qwen2.5-coder-": "qwen2.5-"}


def canonical_name(name: str) -> str:
    """A repository id reduced to what decides its shapes: no organisation, lower case, no variant words."""
    short = name.strip().lower().rstrip("/").rsplit("/", 1)[-1].replace("_", "-")
    words = [word for word in short.split("-") if word and word not in _IGNORED_WORDS]
    canonical = "-".join(words)
    for prefix, target in _PREFIX_ALIASES.items():
        if canonical.startswith(prefix):
            canonical = target + canonical[len(prefix):]
    return canonical


_INDEX: dict[str, str] = {canonical_name(key): key for key in reversed(list(CATALOG))}
_INDEX |= {alias: key for alias, key in ALIASES.items() if alias not in _INDEX}


def catalog_lookup(name: str) -> str | None:
    """The catalog key for a Hub id as users write it (mirrors, -Instruct/-chat/-it variants, aliases), or None."""
    return _INDEX.get(canonical_name(name))
