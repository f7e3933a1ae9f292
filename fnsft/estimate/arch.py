"""Model shapes without weights and without torch, from a config.json-like dictionary (where that comes from, a
file, a GGUF, the catalog or the Hub: :mod:`fnsft.estimate.resolve`).

A :class:`ModelShape` lists every weight matrix of a repeated block (with its bias) plus the parameters outside
the blocks, so parameter counts are exact (the tests check every catalog entry against a meta-device
instantiation in transformers) and LoRA/QLoRA can be costed per targeted linear layer.

Supported ``model_type`` values: llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, gemma, gemma2,
gemma3_text (gemma3 via its text_config), olmo, olmo2, phi, phi3, gpt2, gpt_neox, falcon, stablelm, bloom, t5.
Others raise :class:`EstimateError`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from fnsft.errors import EstimateError


class LinearLayer(BaseModel):
    """One weight matrix inside a repeated block (``count`` > 1 for stacked MoE experts)."""

    name: str
    d_in: int
    d_out: int
    bias: bool = False
    count: int = 1
    is_linear_module: bool = Field(True, description="An nn.Linear/Conv1D: LoRA can target it, bitsandbytes quantizes it.")
    peft_parameter: bool = Field(
        False, description="Not an nn.Linear, but PEFT's transformers-5 MoE conversion targets it (target_parameters) "
        "when LoRA targets all-linear or one of ``peft_aliases``: the Mixtral/Qwen3-MoE router and stacked experts.")
    peft_aliases: list[str] = Field(default_factory=list, description="transformers-4 module names PEFT maps to it.")
    lora_rank_factor: int = Field(1, description="PEFT multiplies the rank of a fused parameter (gate_up_proj: 2).")

    @property
    def params(self) -> int:
        return self.count * (self.d_in * self.d_out + (self.d_out if self.bias else 0))


class Block(BaseModel):
    """A repeated block (decoder layer, or an encoder/decoder layer of T5)."""

    name: str
    repeat: int
    linears: list[LinearLayer]
    other_tensors: list[int] = Field(default_factory=list, description="Sizes of the norm weights/biases of one block.")

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.linears) + sum(self.other_tensors)


class ModelShape(BaseModel):
    """Everything the estimator needs to know about a model, read from its config."""

    name: str
    model_type: str
    source: str = Field(description="catalog | config | hub | gguf")
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int | None
    tie_word_embeddings: bool
    num_experts: int = 1
    experts_per_token: int = 1
    norm: Literal["rms", "layer"] = "rms"
    norms_per_layer: int = 2
    qk_norm: bool = False
    gated_mlp: bool = True
    is_encoder_decoder: bool = False
    blocks: list[Block]
    outside_params: dict[str, int] = Field(description="Parameter tensors outside the repeated blocks: name → size.")

    @property
    def total_params(self) -> int:
        return sum(block.params * block.repeat for block in self.blocks) + sum(self.outside_params.values())

    def tensor_sizes(self) -> list[int]:
        """The element count of every parameter tensor (tied weights once), as model.parameters() yields them."""
        sizes = list(self.outside_params.values())
        for block in self.blocks:
            one = [layer.d_in * layer.d_out * layer.count for layer in block.linears]
            one += [layer.d_out * layer.count for layer in block.linears if layer.bias]
            sizes += (one + block.other_tensors) * block.repeat
        return sizes


def _get(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def _attention(h: int, heads: int, kv: int, hd: int, qkv_bias: bool, o_bias: bool) -> list[LinearLayer]:
    return [
        LinearLayer(name="q_proj", d_in=h, d_out=heads * hd, bias=qkv_bias),
        LinearLayer(name="k_proj", d_in=h, d_out=kv * hd, bias=qkv_bias),
        LinearLayer(name="v_proj", d_in=h, d_out=kv * hd, bias=qkv_bias),
        LinearLayer(name="o_proj", d_in=heads * hd, d_out=h, bias=o_bias),
    ]


def _gated_mlp(h: int, inter: int, bias: bool = False) -> list[LinearLayer]:
    return [
        LinearLayer(name="gate_proj", d_in=h, d_out=inter, bias=bias),
        LinearLayer(name="up_proj", d_in=h, d_out=inter, bias=bias),
        LinearLayer(name="down_proj", d_in=inter, d_out=h, bias=bias),
    ]


def _llama_like(mt: str, c: dict[str, Any]) -> dict[str, Any]:
    """llama, mistral, mixtral, qwen2, qwen3, gemma*, phi3, stablelm: pre-norm decoder with a gated MLP."""
    h, layers = c["hidden_size"], c["num_hidden_layers"]
    heads = c["num_attention_heads"]
    kv = _get(c, "num_key_value_heads", default=heads)
    hd = _get(c, "head_dim", default=h // heads)
    inter = c["intermediate_size"]
    norm, norms, qk_norm = "rms", 2, False
    qkv_bias = o_bias = mlp_bias = bool(c.get("attention_bias", False))
    if mt == "llama":
        mlp_bias = bool(c.get("mlp_bias", False))
    if mt == "qwen2":
        qkv_bias, o_bias = True, False
    if mt in ("qwen3", "gemma3_text", "qwen3_moe", "olmo2"):
        qk_norm = True
    if mt == "qwen2_moe":
        qkv_bias, o_bias = bool(c.get("qkv_bias", True)), False
    if mt in ("qwen2_moe", "qwen3_moe") and (c.get("mlp_only_layers") or c.get("decoder_sparse_step", 1) != 1):
        raise EstimateError(f"{mt} with dense layers between the MoE layers (mlp_only_layers/decoder_sparse_step) "
                            "is not supported by the estimator")
    if mt in ("gemma2", "gemma3_text"):
        norms = 4
    if mt == "stablelm":
        if c.get("qk_layernorm") or c.get("use_parallel_residual"):
            raise EstimateError("stablelm with qk_layernorm/use_parallel_residual is not supported by the estimator")
        qkv_bias, o_bias, norm = bool(c.get("use_qkv_bias", False)), False, "layer"
    norm_tensors = [h, h] if norm == "layer" else [h]
    other = norm_tensors * norms + ([hd, hd] if qk_norm else [])
    if mt == "olmo":  # OLMo's LayerNorm has no weight or bias
        norm, other = "layer", []
    if mt == "olmo2":  # post-norms, and q/k norms over all heads (not per head)
        other = [h, h, heads * hd, kv * hd]
    if mt == "phi3":
        linears = [
            LinearLayer(name="qkv_proj", d_in=h, d_out=(heads + 2 * kv) * hd),
            LinearLayer(name="o_proj", d_in=heads * hd, d_out=h),
            LinearLayer(name="gate_up_proj", d_in=h, d_out=2 * inter),
            LinearLayer(name="down_proj", d_in=inter, d_out=h),
        ]
    elif mt in ("mixtral", "qwen2_moe", "qwen3_moe"):
        # transformers 5 saves qwen3_moe's expert count as num_local_experts (num_experts is an alias)
        experts = c.get("num_local_experts", 8) if mt == "mixtral" else _get(c, "num_experts", "num_local_experts")
        if experts is None:
            raise KeyError("num_experts")
        inter = inter if mt == "mixtral" else c["moe_intermediate_size"]
        # transformers 5: the router is a TopKRouter module with a bare weight and the experts are stacked 3-D
        # parameters, none an nn.Linear (so bitsandbytes leaves them unquantized). PEFT 0.21 converts its
        # transformers-4 names for mixtral and the models patterned on qwen2_moe (qwen3_moe, ...) but not for
        # qwen2_moe itself (peft/utils/transformers_weight_conversion.py): all-linear then adds the router and the
        # experts as target_parameters, the fused gate_up_proj with twice the rank.
        converted = mt != "qwen2_moe"
        aliases = {"mixtral": (["gate"], ["w1", "w3"], ["w2"])}.get(mt, (["gate"], ["gate_proj", "up_proj"], ["down_proj"]))
        moe = dict(is_linear_module=False, peft_parameter=converted)
        linears = _attention(h, heads, kv, hd, qkv_bias, o_bias) + [
            LinearLayer(name="gate", d_in=h, d_out=experts, peft_aliases=aliases[0], **moe),  # the router
            LinearLayer(name="experts.gate_up_proj", d_in=h, d_out=2 * inter, count=experts, peft_aliases=aliases[1],
                        lora_rank_factor=2, **moe),
            LinearLayer(name="experts.down_proj", d_in=inter, d_out=h, count=experts, peft_aliases=aliases[2], **moe),
        ]
        if mt == "qwen2_moe":  # one always-on shared expert with a sigmoid gate
            shared = c["shared_expert_intermediate_size"]
            linears += [layer.model_copy(update={"name": f"shared_expert.{layer.name}"}) for layer in _gated_mlp(h, shared)]
            linears.append(LinearLayer(name="shared_expert_gate", d_in=h, d_out=1))
    else:
        linears = _attention(h, heads, kv, hd, qkv_bias, o_bias) + _gated_mlp(h, inter, mlp_bias)
    tie = bool(c.get("tie_word_embeddings", mt.startswith("gemma")))
    vocab = c["vocab_size"]
    outside = {"embed_tokens": vocab * h, "norm.weight": h} | ({"norm.bias": h} if norm == "layer" else {})
    if mt == "olmo":
        del outside["norm.weight"], outside["norm.bias"]
    if not tie:
        outside["lm_head"] = vocab * h
    return dict(
        vocab_size=vocab, hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=hd,
        intermediate_size=inter, tie_word_embeddings=tie, norm=norm, norms_per_layer=norms, qk_norm=qk_norm,
        num_experts=_get(c, "num_local_experts", "num_experts", default=1), experts_per_token=c.get("num_experts_per_tok", 1),
        blocks=[Block(name="layer", repeat=layers, linears=linears, other_tensors=other)], outside_params=outside,
        max_position_embeddings=c.get("max_position_embeddings"),
    )


def _phi(c: dict[str, Any]) -> dict[str, Any]:
    h, heads, inter, vocab = c["hidden_size"], c["num_attention_heads"], c["intermediate_size"], c["vocab_size"]
    kv = _get(c, "num_key_value_heads", default=heads)
    hd = h // heads
    if c.get("qk_layernorm"):
        raise EstimateError("phi with qk_layernorm is not supported by the estimator")
    linears = _attention(h, heads, kv, hd, True, True)
    linears[-1] = LinearLayer(name="dense", d_in=heads * hd, d_out=h, bias=True)
    linears += [LinearLayer(name="fc1", d_in=h, d_out=inter, bias=True), LinearLayer(name="fc2", d_in=inter, d_out=h, bias=True)]
    tie = bool(c.get("tie_word_embeddings", False))
    outside = {"embed_tokens": vocab * h, "norm.weight": h, "norm.bias": h}
    if not tie:
        outside |= {"lm_head": vocab * h, "lm_head.bias": vocab}  # phi's lm_head has a bias
    return dict(
        vocab_size=vocab, hidden_size=h, num_layers=c["num_hidden_layers"], num_heads=heads, num_kv_heads=kv,
        head_dim=hd, intermediate_size=inter, tie_word_embeddings=tie, norm="layer", norms_per_layer=1,
        gated_mlp=False, blocks=[Block(name="layer", repeat=c["num_hidden_layers"], linears=linears, other_tensors=[h, h])],
        outside_params=outside, max_position_embeddings=c.get("max_position_embeddings"),
    )


def _gpt2(c: dict[str, Any]) -> dict[str, Any]:
    h, layers, heads, vocab = _get(c, "n_embd", "hidden_size"), _get(c, "n_layer"), _get(c, "n_head"), c["vocab_size"]
    inter = _get(c, "n_inner", default=4 * h)
    positions = _get(c, "n_positions", default=1024)
    linears = [
        LinearLayer(name="c_attn", d_in=h, d_out=3 * h, bias=True),
        LinearLayer(name="attn.c_proj", d_in=h, d_out=h, bias=True),
        LinearLayer(name="c_fc", d_in=h, d_out=inter, bias=True),
        LinearLayer(name="mlp.c_proj", d_in=inter, d_out=h, bias=True),
    ]
    return dict(
        vocab_size=vocab, hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=heads, head_dim=h // heads,
        intermediate_size=inter, tie_word_embeddings=True, norm="layer", gated_mlp=False,
        blocks=[Block(name="layer", repeat=layers, linears=linears, other_tensors=[h] * 4)],
        outside_params={"embed_tokens": vocab * h, "position_embeddings": positions * h, "norm.weight": h, "norm.bias": h},
        max_position_embeddings=positions,
    )


def _gpt_neox(c: dict[str, Any]) -> dict[str, Any]:
    """GPT-NeoX / Pythia: fused qkv with bias, GeLU MLP, two LayerNorms, untied embed_out by default."""
    h, layers, heads, vocab, inter = (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                                      c["vocab_size"], c["intermediate_size"])
    bias = bool(c.get("attention_bias", True))
    linears = [
        LinearLayer(name="query_key_value", d_in=h, d_out=3 * h, bias=bias),
        LinearLayer(name="dense", d_in=h, d_out=h, bias=bias),
        LinearLayer(name="dense_h_to_4h", d_in=h, d_out=inter, bias=True),
        LinearLayer(name="dense_4h_to_h", d_in=inter, d_out=h, bias=True),
    ]
    tie = bool(c.get("tie_word_embeddings", False))
    outside = {"embed_tokens": vocab * h, "norm.weight": h, "norm.bias": h} | ({} if tie else {"lm_head": vocab * h})
    return dict(
        vocab_size=vocab, hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=heads, head_dim=h // heads,
        intermediate_size=inter, tie_word_embeddings=tie, norm="layer", gated_mlp=False,
        blocks=[Block(name="layer", repeat=layers, linears=linears, other_tensors=[h] * 4)],
        outside_params=outside, max_position_embeddings=c.get("max_position_embeddings"),
    )


def _bloom(c: dict[str, Any]) -> dict[str, Any]:
    h, layers, heads, vocab = _get(c, "hidden_size", "n_embed"), c["n_layer"], c["n_head"], c["vocab_size"]
    linears = [
        LinearLayer(name="query_key_value", d_in=h, d_out=3 * h, bias=True),
        LinearLayer(name="dense", d_in=h, d_out=h, bias=True),
        LinearLayer(name="dense_h_to_4h", d_in=h, d_out=4 * h, bias=True),
        LinearLayer(name="dense_4h_to_h", d_in=4 * h, d_out=h, bias=True),
    ]
    return dict(
        vocab_size=vocab, hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=heads, head_dim=h // heads,
        intermediate_size=4 * h, tie_word_embeddings=True, norm="layer", gated_mlp=False,
        blocks=[Block(name="layer", repeat=layers, linears=linears, other_tensors=[h] * 4)],
        outside_params={"embed_tokens": vocab * h, "embed_norm.weight": h, "embed_norm.bias": h, "norm.weight": h,
                        "norm.bias": h},
        max_position_embeddings=c.get("seq_length"),  # ALiBi: no learned limit; the training length is a guide
    )


def _falcon(c: dict[str, Any]) -> dict[str, Any]:
    h, layers, heads, vocab = _get(c, "hidden_size", "n_embed"), c["num_hidden_layers"], c["num_attention_heads"], c["vocab_size"]
    hd = h // heads
    new_arch = bool(c.get("new_decoder_architecture", False))
    kv = _get(c, "num_kv_heads", default=heads) if new_arch else (1 if c.get("multi_query", True) else heads)
    bias = bool(c.get("bias", False))
    ffn = _get(c, "ffn_hidden_size", default=4 * h)
    linears = [
        LinearLayer(name="query_key_value", d_in=h, d_out=(heads + 2 * kv) * hd, bias=bias),
        LinearLayer(name="dense", d_in=h, d_out=h, bias=bias),
        LinearLayer(name="dense_h_to_4h", d_in=h, d_out=ffn, bias=bias),
        LinearLayer(name="dense_4h_to_h", d_in=ffn, d_out=h, bias=bias),
    ]
    parallel_norms = 1 if c.get("parallel_attn", True) else 2
    norms = _get(c, "num_ln_in_parallel_attn", default=2) if new_arch else parallel_norms
    tie = bool(c.get("tie_word_embeddings", True))
    outside = {"embed_tokens": vocab * h, "norm.weight": h, "norm.bias": h}
    if not tie:
        outside["lm_head"] = vocab * h
    return dict(
        vocab_size=vocab, hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=hd,
        intermediate_size=ffn, tie_word_embeddings=tie, norm="layer", norms_per_layer=norms, gated_mlp=False,
        blocks=[Block(name="layer", repeat=layers, linears=linears, other_tensors=[h, h] * norms)],
        outside_params=outside, max_position_embeddings=c.get("max_position_embeddings"),
    )


def _t5(c: dict[str, Any]) -> dict[str, Any]:
    d, ff, heads, kv, vocab = c["d_model"], c["d_ff"], c["num_heads"], c["d_kv"], c["vocab_size"]
    enc_layers = c["num_layers"]
    dec_layers = _get(c, "num_decoder_layers", default=enc_layers)
    inner = heads * kv
    gated = str(c.get("feed_forward_proj", "relu")).startswith("gated")
    attention = [LinearLayer(name=n, d_in=d, d_out=inner) for n in ("q", "k", "v")] + [LinearLayer(name="o", d_in=inner, d_out=d)]
    mlp = ([LinearLayer(name="wi_0", d_in=d, d_out=ff), LinearLayer(name="wi_1", d_in=d, d_out=ff)] if gated
           else [LinearLayer(name="wi", d_in=d, d_out=ff)]) + [LinearLayer(name="wo", d_in=ff, d_out=d)]
    cross = [layer.model_copy(update={"name": f"EncDecAttention.{layer.name}"}) for layer in attention]
    buckets = _get(c, "relative_attention_num_buckets", default=32)
    tie = True  # transformers 5 always ties T5's lm_head to the shared embedding (T5Config forces it)
    outside = {"embed_tokens": vocab * d, "encoder.relative_attention_bias": buckets * heads,
               "decoder.relative_attention_bias": buckets * heads, "encoder.norm": d, "decoder.norm": d}
    if not tie:
        outside["lm_head"] = vocab * d
    return dict(
        vocab_size=vocab, hidden_size=d, num_layers=enc_layers + dec_layers, num_heads=heads, num_kv_heads=heads,
        head_dim=kv, intermediate_size=ff, tie_word_embeddings=tie, gated_mlp=gated, is_encoder_decoder=True,
        blocks=[
            Block(name="encoder_layer", repeat=enc_layers, linears=attention + mlp, other_tensors=[d, d]),
            Block(name="decoder_layer", repeat=dec_layers, linears=attention + cross + mlp, other_tensors=[d, d, d]),
        ],
        outside_params=outside, max_position_embeddings=None,
    )


LLAMA_LIKE = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "stablelm",
              "olmo", "olmo2", "qwen2_moe", "qwen3_moe")
_OTHER_TYPES = {"phi": _phi, "gpt2": _gpt2, "gpt_neox": _gpt_neox, "falcon": _falcon, "bloom": _bloom, "t5": _t5}
SUPPORTED_TYPES = LLAMA_LIKE + tuple(_OTHER_TYPES)


#: Config keys that size a model, with bounds far beyond any real model: a 0 divides by zero, and 10^8 layers
#: make the estimator list 10^8 tensors (killed for memory) instead of answering.
SHAPE_LIMITS: dict[str, int] = {
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers"), 10_000),
    **dict.fromkeys(("num_attention_heads", "num_key_value_heads", "n_head", "num_heads", "multi_query_group_num"), 100_000),
    **dict.fromkeys(("hidden_size", "n_embd", "d_model", "head_dim", "d_kv"), 1_000_000),
    **dict.fromkeys(("intermediate_size", "n_inner", "d_ff", "ffn_hidden_size", "vocab_size"), 100_000_000),
    **dict.fromkeys(("num_local_experts", "num_experts", "num_experts_per_tok"), 100_000),
}


def check_shape_ranges(config: dict[str, Any], name: str) -> None:
    """Every size the config gives is a whole number within SHAPE_LIMITS (an EstimateError names the key)."""
    for key, limit in SHAPE_LIMITS.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            shown = repr(value)[:40]
            raise EstimateError(f"{name}: config {key} = {shown} is not a whole number from 1 to {limit:,}")


def shape_from_config(config: dict[str, Any], name: str, source: str) -> ModelShape:
    """Build a ModelShape from a config.json dictionary.

    Args:
        config: the parsed config.json (multimodal configs with a ``text_config`` use that).
        name: a display name for the model.
        source: where the config came from (catalog, config, hub, gguf).

    Raises:
        EstimateError: unsupported model_type or missing keys.
    """
    if not isinstance(config, dict):
        raise EstimateError(f"{name}: a model config is a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type", "")
    if isinstance(config.get("text_config"), dict) and model_type not in SUPPORTED_TYPES:
        config = config["text_config"]
        model_type = config.get("model_type", "")
    if model_type == "gemma3":
        model_type = "gemma3_text"
    config = {key: value for key, value in config.items() if value is not None}  # null = not given
    check_shape_ranges(config, name)
    try:
        if model_type in LLAMA_LIKE:
            fields = _llama_like(model_type, config)
        elif model_type in _OTHER_TYPES:
            fields = _OTHER_TYPES[model_type](config)
        else:
            raise EstimateError(
                f"{name}: model_type '{model_type or '?'}' is not supported by the estimator "
                f"(supported: {', '.join(SUPPORTED_TYPES)})"
            )
    except KeyError as missing:
        raise EstimateError(f"{name}: config has no {missing} (needed for the memory estimate)") from None
    except (TypeError, ValueError, ArithmeticError) as exc:  # e.g. a size given as text or a list
        raise EstimateError(f"{name}: config values the estimator cannot use ({exc})") from None
    return ModelShape(name=name, model_type=model_type, source=source, **fields)
