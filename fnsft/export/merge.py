"""Merge a LoRA adapter into its base model shard by shard, without ever holding the whole model in memory.

Why not PEFT's ``merge_and_unload``: it needs the full base model materialized (twice the peak for large models,
the cause of "can't merge in system RAM" reports elsewhere). Here each base tensor is read on its own from the
safetensors files (fnsft.export.safetensors_io: no memory map, no whole-shard serialisation), the LoRA delta
``scale · B @ A`` is added in float32, the result is cast back to the tensor's stored dtype and written out at
once. Peak memory ≈ the adapter + the largest tensor (twice, in float32, when it carries a LoRA delta).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fnsft.atomic import staged_dir
from fnsft.errors import ExportError, NotYetSupported
from fnsft.export.files import OutputFile, ensure_free_space, list_files
from fnsft.export.safetensors_io import TensorEntry, read_entries, read_tensor, write_streaming

if TYPE_CHECKING:
    import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PEFT_PREFIX = "base_model.model."
DEFAULT_MAX_SHARD_BYTES = 2 * 1000**3
#: Files copied from the run's tokenizer (the trained one wins over the base model's).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)
#: Non-weight files carried over from the base model directory.
BASE_MODEL_FILES = ("config.json", "generation_config.json")


@dataclass
class LoraPair:
    """The two low-rank factors of one adapted module and how their product is added to the base weight."""

    a: torch.Tensor | None = None  # shape (r, in), or (r, num_embeddings) for embeddings
    b: torch.Tensor | None = None  # shape (out, r), or (embedding_dim, r) for embeddings
    embedding: bool = False


@dataclass
class Adapter:
    """A PEFT LoRA adapter read from disk: deltas by base weight name, and whole-tensor replacements."""

    pairs: dict[str, LoraPair] = field(default_factory=dict)
    replacements: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def scale(self, module: str, rank: int) -> float:
        """LoRA scaling for one module: alpha / r (alpha / sqrt(r) with rsLoRA), honouring alpha_pattern."""
        alpha = self.config.get("lora_alpha", 8)
        for pattern, value in (self.config.get("alpha_pattern") or {}).items():
            if re.fullmatch(rf"(.*\.)?{pattern}", module):
                alpha = value
                break
        return alpha / rank**0.5 if self.config.get("use_rslora") else alpha / rank


def read_adapter(adapter_dir: Path) -> Adapter:
    """Load a LoRA adapter; refuse adapter kinds whose merge is not implemented, with a message saying which."""
    from safetensors.torch import load_file

    config_path, weights_path = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise ExportError(f"{adapter_dir}: not a PEFT adapter (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    config = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise NotYetSupported(f"{adapter_dir}: merging {config.get('peft_type')} adapters is not supported (LoRA only)")
    if config.get("use_dora"):
        raise NotYetSupported(f"{adapter_dir}: merging DoRA adapters is not supported yet (plain LoRA/rsLoRA only)")
    adapter = Adapter(config=config)
    for key, tensor in load_file(str(weights_path)).items():
        name = key.removeprefix(PEFT_PREFIX)
        if match := re.fullmatch(r"(.+)\.lora_(A|B)\.weight", name):
            pair = adapter.pairs.setdefault(f"{match[1]}.weight", LoraPair())
            setattr(pair, match[2].lower(), tensor)
        elif match := re.fullmatch(r"(.+)\.lora_embedding_(A|B)", name):
            pair = adapter.pairs.setdefault(f"{match[1]}.weight", LoraPair(embedding=True))
            setattr(pair, match[2].lower(), tensor)
        elif "lora_" in name or "token_adapter" in name:
            raise NotYetSupported(f"{adapter_dir}: adapter tensor {key!r} is of a kind the merge does not handle yet")
        else:  # modules_to_save / trained biases: the adapter holds the whole tensor
            adapter.replacements[name] = tensor
    incomplete = [name for name, pair in adapter.pairs.items() if pair.a is None or pair.b is None]
    if incomplete:
        raise ExportError(f"{adapter_dir}: adapter has lora_A without lora_B (or the reverse) for {incomplete[0]}")
    return adapter


def weight_entries(model_dir: Path) -> list[TensorEntry]:
    """Every tensor of a safetensors model directory (sharded or not), in file order, without loading data."""
    index = model_dir / INDEX_NAME
    if index.is_file():
        files = list(dict.fromkeys(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir}: no safetensors weights found")
    return [entry for file_name in files for entry in read_entries(model_dir / file_name)]


def merged_tensor(name: str, base, adapter: Adapter):
    """The base tensor with its LoRA delta added (in float32, cast back to the stored dtype) or replaced."""
    import torch

    if name in adapter.replacements:
        replacement = adapter.replacements[name]
        if tuple(replacement.shape) != tuple(base.shape):
            raise NotYetSupported(
                f"{name}: the adapter changes its shape {tuple(base.shape)} → {tuple(replacement.shape)} "
                "(resized vocabulary); merging that is not supported yet"
            )
        return replacement.to(base.dtype)
    pair = adapter.pairs.get(name)
    if pair is None:
        return base
    assert pair.a is not None and pair.b is not None  # read_adapter refuses an incomplete pair
    rank = pair.a.shape[0]
    delta = pair.b.to(torch.float32) @ pair.a.to(torch.float32)
    if pair.embedding or adapter.config.get("fan_in_fan_out"):
        delta = delta.T
    if tuple(delta.shape) != tuple(base.shape):
        raise ExportError(f"{name}: LoRA delta shape {tuple(delta.shape)} does not match the base {tuple(base.shape)}")
    scale = adapter.scale(name.removesuffix(".weight"), rank)
    return (base.to(torch.float32) + scale * delta).to(base.dtype)


def plan_shards(entries: list[TensorEntry], max_shard_bytes: int) -> list[list[TensorEntry]]:
    """Group tensors in order into shards of at most ``max_shard_bytes`` (a bigger single tensor gets its own)."""
    shards: list[list[TensorEntry]] = [[]]
    size = 0
    for entry in entries:
        if shards[-1] and size + entry.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return shards


def shard_names(count: int) -> list[str]:
    """transformers' shard file names."""
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def _copy_side_files(base_dir: Path, tokenizer_dir: Path | None, target: Path) -> None:
    for name in BASE_MODEL_FILES:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, target / name)
    if not (target / "generation_config.json").is_file():
        from transformers import AutoConfig, GenerationConfig

        GenerationConfig.from_model_config(AutoConfig.from_pretrained(target)).save_pretrained(target)
    source = tokenizer_dir if tokenizer_dir and (tokenizer_dir / "tokenizer_config.json").is_file() else base_dir
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def check_adapter_fits(adapter: Adapter, entries: list[TensorEntry], tied_embeddings: bool) -> None:
    """Every adapted module must exist in the base, and a tied lm_head cannot be merged on its own."""
    names = {entry.name for entry in entries}
    missing = [name for name in [*adapter.pairs, *adapter.replacements] if name not in names]
    if missing:
        raise ExportError(
            f"the adapter modifies {missing[0]!r}, which the base model does not have: was it trained on another base?"
        )
    if tied_embeddings and any(name.startswith("lm_head.") for name in [*adapter.pairs, *adapter.replacements]):
        raise NotYetSupported("the adapter changes lm_head while the base ties it to the embeddings; cannot merge yet")


def merge_lora(
    base_dir: Path,
    adapter_dir: Path,
    target: Path,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> list[OutputFile]:
    """Merge the LoRA adapter in ``adapter_dir`` into the safetensors model in ``base_dir``, writing ``target``.

    Args:
        base_dir: base model directory (config.json + safetensors, sharded or not).
        adapter_dir: PEFT adapter directory; its tokenizer files, when present, are copied over the base's.
        target: output directory; replaced atomically when the merge has fully succeeded.
        max_shard_bytes: upper bound for each output shard (a larger single tensor gets a shard of its own).

    Returns:
        The files written, with sizes.
    """
    adapter = read_adapter(adapter_dir)
    entries = weight_entries(base_dir)
    config = json.loads((base_dir / "config.json").read_text())
    check_adapter_fits(adapter, entries, bool(config.get("tie_word_embeddings", False)))
    ensure_free_space(target.parent, sum(entry.nbytes for entry in entries), f"the merged model in {target}")
    shards = plan_shards(entries, max_shard_bytes)
    names = shard_names(len(shards))
    weight_map: dict[str, str] = {}
    with staged_dir(target) as staging:
        for shard, file_name in zip(shards, names, strict=True):
            write_streaming(staging / file_name, shard, lambda entry: merged_tensor(entry.name, read_tensor(entry), adapter))
            weight_map.update({entry.name: file_name for entry in shard})
        if len(names) > 1:
            index = {"metadata": {"total_size": sum(e.nbytes for e in entries)}, "weight_map": weight_map}
            (staging / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        _copy_side_files(base_dir, adapter_dir, staging)
    return list_files(target)

