"""Model shape and chat template from a GGUF file's metadata (gguf's GGUFReader; no torch, no dequantization).

GGUFReader parses every tokenizer string, which takes ~13-45 s for a 49k-token vocabulary on a small CPU, so the
derived config (with the chat template and special tokens, which `fnsft train` checks before loading weights, and
the license and pre-tokenizer name `fnsft export` copies into its card and GGUF files) is cached in ``<FNSFT_CACHE>/estimate/gguf-v3-<size>-<mtime>-<name>.json`` and later calls are instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fnsft.atomic import atomic_write_json
from fnsft.errors import EstimateError
from fnsft.estimate.arch import ModelShape, shape_from_config

#: GGUF ``general.architecture`` → transformers ``model_type`` (Mistral GGUFs say "llama").
GGUF_ARCHITECTURES = {
    "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma": "gemma", "gemma2": "gemma2",
    "gemma3": "gemma3_text", "phi3": "phi3",
}


def _field(reader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def config_from_gguf(path: Path) -> dict[str, Any]:
    """Read the architecture keys of a GGUF file into a config.json-like dictionary."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise EstimateError(f"{path}: not a readable GGUF file ({exc})") from None
    arch = _field(reader, "general.architecture", "?")
    if arch not in GGUF_ARCHITECTURES:
        raise EstimateError(f"{path}: GGUF architecture '{arch}' is not supported (supported: {', '.join(GGUF_ARCHITECTURES)})")
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    hidden = _field(reader, f"{arch}.embedding_length")
    heads = _field(reader, f"{arch}.attention.head_count")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = _field(reader, f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None)
    special_tokens = {}
    for name in ("bos", "eos", "unk"):
        index = _field(reader, f"tokenizer.ggml.{name}_token_id")
        if index is not None and tokens is not None:
            special_tokens[f"{name}_token"] = tokens.contents(int(index))
    return {
        "fnsft_chat_template": _field(reader, "tokenizer.chat_template"),
        "fnsft_special_tokens": special_tokens,
        "fnsft_license": _field(reader, "general.license"),
        "fnsft_tokenizer_pre": _field(reader, "tokenizer.ggml.pre"),
        "model_type": GGUF_ARCHITECTURES[arch],
        "hidden_size": hidden,
        "num_hidden_layers": _field(reader, f"{arch}.block_count"),
        "intermediate_size": _field(reader, f"{arch}.feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": _field(reader, f"{arch}.attention.head_count_kv", heads),
        "head_dim": _field(reader, f"{arch}.attention.key_length", hidden // heads),
        "max_position_embeddings": _field(reader, f"{arch}.context_length"),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors and arch != "qwen2",
    }


def gguf_metadata(path: Path) -> dict[str, Any]:
    """:func:`config_from_gguf`, cached by file size and modification time (the first read says it is slow)."""
    from fnsft.console import err
    from fnsft.paths import cache_root

    stat = path.stat()
    cached = cache_root() / "estimate" / f"gguf-v3-{stat.st_size}-{int(stat.st_mtime)}-{path.stem}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    err.print(f"reading {path.name}'s metadata: once, it takes up to a minute (tokenizer strings); cached in "
              f"{cached.parent}", highlight=False)
    config = config_from_gguf(path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cached, config)
    return config


def shape_from_gguf(path: Path) -> ModelShape:
    """The ModelShape of a GGUF model."""
    return shape_from_config(gguf_metadata(path), str(path), "gguf")
