"""Write GGUF files with the ``gguf`` package: nothing cloned, compiled or downloaded at run time.

The conversion follows llama.cpp's ``convert_hf_to_gguf.py`` for the architectures listed in :data:`ARCHITECTURES`:
HF tensor names go through gguf's own tensor name map, llama-family q/k projections get llama.cpp's rotary head
permutation, Gemma norms are stored as ``1 + w`` (llama.cpp multiplies by the stored weight), and the tokenizer is
written completely (tokens, token types, merges, bos/eos/unk/pad, add-bos, pre-tokenizer name, chat template).
f32/f16/bf16/q8_0 are produced by gguf's numpy quantizers, q4_0 and the 32-block fallbacks by
:mod:`fnsft.export.legacy_quants`, the K-quants (q2_k … q6_k and the _S/_M/_L mixtures) by
:mod:`fnsft.export.kquants`, with llama.cpp's per-tensor type choice (:mod:`fnsft.export.quant_types`); every
type is byte-identical to llama.cpp's ``llama_model_quantize`` (tests/export/test_llamacpp.py). llama.cpp's ``llama-quantize`` is used only when asked for (``--llama-quantize``).
Tensors are streamed: the header is written from shapes alone, then each tensor is read, converted and written.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnsft.atomic import staged_file
from fnsft.errors import ExportError, NotYetSupported
from fnsft.export.files import ensure_free_space
from fnsft.export.gguf_vocab import tokenizer_info
from fnsft.export.kquants import ENCODERS as K_ENCODERS
from fnsft.export.kquants import quantize_k
from fnsft.export.legacy_quants import TYPES as LEGACY_TYPES
from fnsft.export.legacy_quants import quantize_legacy
from fnsft.export.merge import weight_entries
from fnsft.export.quant_types import K_TYPES, QUANT_TYPES, ModelShape, file_type_name, tensor_type_name
from fnsft.export.safetensors_io import TensorEntry, read_tensor

#: File types llama-quantize can make from fnsft's f16 file, when the user asks for it.
LLAMA_QUANTIZE_TYPES = K_TYPES


@dataclass(frozen=True)
class ArchSpec:
    """How one transformers ``model_type`` maps to GGUF (after llama.cpp's converter)."""

    gguf_arch: str
    permute_qk: bool = False  # llama.cpp's rotary head permutation of q_proj/k_proj
    norm_plus_one: bool = False  # Gemma RMSNorm computes x·(1+w); llama.cpp expects the stored (1+w)
    always_tied: bool = False  # Gemma never writes an output matrix


ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama", permute_qk=True),
    "mistral": ArchSpec("llama", permute_qk=True),  # llama.cpp stores Mistral as llama
    "qwen2": ArchSpec("qwen2"),
    "gemma": ArchSpec("gemma", norm_plus_one=True, always_tied=True),
    "gemma2": ArchSpec("gemma2", norm_plus_one=True, always_tied=True),
}
#: Rope scaling kinds written as metadata; others (llama3, yarn, ...) need extra tensors not written yet.
SUPPORTED_ROPE_TYPES = ("default", "linear")

def supported_architectures() -> str:
    return ", ".join(sorted(ARCHITECTURES))


def check_exportable(config: Any, quant_types: list[str], llama_quantize: str | None = None) -> None:
    """Fail fast, before any merge work, on an architecture, rope scaling or quant type GGUF export cannot do."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ExportError(
            f"GGUF export does not support the '{model_type}' architecture; supported: {supported_architectures()}"
        )
    rope = _rope_parameters(config)
    if rope.get("rope_type", "default") not in SUPPORTED_ROPE_TYPES:
        raise NotYetSupported(
            f"GGUF export of rope scaling '{rope.get('rope_type')}' is not supported yet "
            f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
        )
    for qtype in quant_types:
        if qtype not in QUANT_TYPES:
            raise ExportError(f"unknown GGUF type '{qtype}'; choose from {', '.join(QUANT_TYPES)}")
        if qtype in LLAMA_QUANTIZE_TYPES and llama_quantize:
            find_llama_quantize(llama_quantize)


def find_llama_quantize(explicit: str) -> Path:
    """The ``llama-quantize`` binary the user asked for: a path, or a name looked up on PATH. Never downloaded."""
    found = explicit if Path(explicit).is_file() else shutil.which(explicit)
    if not found:
        raise ExportError(
            f"--llama-quantize {explicit}: no such executable (give a path, or a name on PATH). It is optional: "
            "without --llama-quantize fnsft writes the K-quants itself."
        )
    return Path(found)


def _rope_parameters(config: Any) -> dict[str, Any]:
    """transformers 5 keeps rope settings in ``rope_parameters``; older configs in rope_theta/rope_scaling."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    if not params:
        params = dict(getattr(config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params["type"]
    return params


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def permute_qk(weights, n_head: int, n_head_kv: int | None):
    """llama.cpp's rotary permutation (``LlamaModel.permute``): HF's half-split rope → interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def model_shape(config: Any, has_output: bool) -> ModelShape:
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    arch = ARCHITECTURES[config.model_type].gguf_arch
    # llama.cpp's LLM_TYPE_70B, as its loader infers it (models/llama.cpp, models/qwen2.cpp)
    seventy_b = config.num_hidden_layers == 80 and (arch == "qwen2" or (arch == "llama" and kv_heads != heads))
    return ModelShape(config.num_hidden_layers, heads // kv_heads, tied_output=not has_output, seventy_b=seventy_b)


def _file_type(qtype: str) -> int:
    from gguf import LlamaFileType

    return LlamaFileType[file_type_name(qtype)]


def unpermute_qk(weights, n_head: int, n_head_kv: int | None):
    """The inverse of :func:`permute_qk` (interleaved rotary pairs back to HF's half-split layout)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


@dataclass(frozen=True)
class PlannedTensor:
    entry: TensorEntry
    gguf_name: str
    shape: tuple[int, ...]
    ggml_type: Any


def plan_tensors(model_dir: Path, config: Any, qtype: str) -> list[PlannedTensor]:
    """Map every HF tensor to its GGUF name and type; tensors llama.cpp does not use are dropped."""
    import gguf

    spec = ARCHITECTURES[config.model_type]
    arch = next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == spec.gguf_arch)
    name_map = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = spec.always_tied or bool(getattr(config, "tie_word_embeddings", False))
    named = []
    for entry in weight_entries(model_dir):
        if entry.name.endswith("rotary_emb.inv_freq") or (tied and entry.name == "lm_head.weight"):
            continue
        gguf_name = name_map.get_name(entry.name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"{entry.name}: no GGUF name for this tensor of a {config.model_type} model")
        named.append((entry, gguf_name))
    shape = model_shape(config, has_output=any(name == "output.weight" for _, name in named))
    return [PlannedTensor(entry, name, entry.shape, gguf.GGMLQuantizationType[tensor_type_name(
        name, entry.shape, qtype, shape)]) for entry, name in named]


def _converted(planned: PlannedTensor, config: Any):
    """Read one tensor and apply the architecture's transforms and the target quantization."""
    import numpy as np
    import torch

    spec = ARCHITECTURES[config.model_type]
    data = read_tensor(planned.entry).to(torch.float32).numpy()
    if spec.permute_qk and planned.entry.name.endswith("q_proj.weight"):
        data = permute_qk(data, config.num_attention_heads, config.num_attention_heads)
    elif spec.permute_qk and planned.entry.name.endswith("k_proj.weight"):
        data = permute_qk(data, config.num_attention_heads, config.num_key_value_heads)
    if spec.norm_plus_one and planned.entry.name.endswith("norm.weight"):
        data = data + 1
    return encode(np.ascontiguousarray(data, dtype=np.float32), planned.ggml_type.name)


def encode(data, type_name: str):
    """float32 rows in the GGML type ``type_name`` ("Q4_K", "F16", ...), laid out as GGUF stores them."""
    from gguf import GGMLQuantizationType, quants

    if type_name in K_ENCODERS:
        return quantize_k(data, type_name)
    if type_name in LEGACY_TYPES:
        return quantize_legacy(data, type_name)
    return quants.quantize(data, GGMLQuantizationType[type_name])


def _byte_size(planned: PlannedTensor) -> int:
    from gguf import quants

    count = 1
    for dim in quants.quant_shape_to_byte_shape(planned.shape, planned.ggml_type):
        count *= dim
    return count


def _write_hparams(writer: Any, config: Any) -> None:
    spec = ARCHITECTURES[config.model_type]
    rope = _rope_parameters(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_vocab_size(config.vocab_size)
    head_dim = _head_dim(config)
    if spec.gguf_arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    if spec.gguf_arch.startswith("gemma") or head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if rope.get("rope_type") == "linear":
        from gguf import RopeScalingType

        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    if spec.gguf_arch == "gemma2":
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
        writer.add_sliding_window(config.sliding_window)


@dataclass
class GgufMetadata:
    """Descriptive ``general.*`` fields."""

    name: str
    base_model: str | None = None
    license: str | None = None
    tags: tuple[str, ...] = ()
    tokenizer_pre: str | None = None  # from the base GGUF when the run started from one


def estimate_gguf_bytes(model_dir: Path, config: Any, qtype: str) -> int:
    """Tensor bytes of the GGUF file for ``qtype``."""
    planned = plan_tensors(model_dir, config, qtype)
    return sum(_byte_size(p) for p in planned)


def write_gguf(model_dir: Path, target: Path, qtype: str, metadata: GgufMetadata) -> list[str]:
    """Write ``model_dir`` (HF safetensors model + tokenizer) as a GGUF file of type ``qtype`` at ``target``.

    Args:
        model_dir: merged or fully fine-tuned model directory.
        target: the .gguf file to write (replaced atomically).
        qtype: one of :data:`QUANT_TYPES`.
        metadata: general.* metadata.

    Returns:
        Notes for the user (e.g. an unrecognised pre-tokenizer), empty when nothing needs saying.
    """
    import gguf
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    check_exportable(config, [qtype])
    planned = plan_tensors(model_dir, config, qtype)
    tokenizer = tokenizer_info(model_dir, config.vocab_size, metadata.tokenizer_pre)
    ensure_free_space(target.parent, sum(_byte_size(p) for p in planned), f"the GGUF file {target.name}")
    with staged_file(target) as staging:
        writer = gguf.GGUFWriter(str(staging), ARCHITECTURES[config.model_type].gguf_arch)
        try:
            writer.add_type(gguf.GGUFType.MODEL)
            writer.add_name(metadata.name)
            if metadata.license:
                writer.add_license(metadata.license)
            if metadata.base_model:
                writer.add_base_model_count(1)
                writer.add_base_model_name(0, metadata.base_model)
            if metadata.tags:
                writer.add_tags(list(metadata.tags))
            _write_hparams(writer, config)
            writer.add_file_type(_file_type(qtype))
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            writer.add_tokenizer_model(tokenizer.model)
            writer.add_tokenizer_pre(tokenizer.pre)
            writer.add_token_list(tokenizer.tokens)
            writer.add_token_types(tokenizer.token_types)
            if tokenizer.scores is not None:
                writer.add_token_scores(tokenizer.scores)
            if tokenizer.add_space_prefix is not None:
                writer.add_add_space_prefix(tokenizer.add_space_prefix)
            gguf.SpecialVocab(model_dir, load_merges=tokenizer.model == "gpt2", n_vocab=len(tokenizer.tokens)).add_to_gguf(writer, quiet=True)
            for item in planned:
                writer.add_tensor_info(item.gguf_name, _byte_shape(item), _np_uint8(), _byte_size(item),
                                       raw_dtype=item.ggml_type)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for item in planned:
                writer.write_tensor_data(_converted(item, config).view(_np_uint8()))
        finally:
            writer.close()
    return tokenizer.notes


def _byte_shape(planned: PlannedTensor) -> tuple[int, ...]:
    from gguf import quants

    return tuple(quants.quant_shape_to_byte_shape(planned.shape, planned.ggml_type))


def _np_uint8():
    import numpy as np

    return np.dtype(np.uint8)


def quantize_with_llama_cpp(binary: Path, source: Path, target: Path, qtype: str) -> None:
    """Run ``llama-quantize source target QTYPE`` (atomically onto ``target``); its stderr becomes the error."""
    with staged_file(target) as staging:
        result = subprocess.run(
            [str(binary), str(source), str(staging), qtype.upper()], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ExportError(f"llama-quantize failed for {qtype} (exit {result.returncode}): {' | '.join(tail)}")
