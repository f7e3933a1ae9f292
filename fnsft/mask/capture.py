"""Find the decoder blocks' MLPs and capture their activations, token by token, with forward hooks.

Two capture points:

- ``mlp-output``: the output of each block's MLP module (hidden-size wide, before the residual add) — the
  choice of Liu et al. (ICML 2025), who treat these per-token vectors like fMRI voxels over time.
- ``mlp-intermediate``: the input of the MLP's down projection (intermediate-size wide), i.e. the FFN neurons
  after the activation/gating — the predecessor's older "FFN" mode.

Blocks are found by structure (a ModuleList whose items all have an MLP), not by a fixed attribute path, so
PEFT wrappers (``PeftModel`` → ``LoraModel`` → model) and unusual nesting work. Pad tokens never reach the
design matrix: only rows whose attention-mask entry is 1 are kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fnsft.errors import MaskError

CapturePoint = Literal["mlp-output", "mlp-intermediate"]
CAPTURE_POINTS: tuple[str, ...] = ("mlp-output", "mlp-intermediate")

#: Attribute names of a block's feed-forward module, and of the projection back to hidden size inside it.
MLP_NAMES = ("mlp", "feed_forward", "ffn")
DOWN_PROJ_NAMES = ("down_proj", "c_proj", "fc2", "w2", "dense_4h_to_h", "fc_out")


def unwrap_peft(model):
    """The plain transformers model under any PEFT wrapper (``PeftModel.get_base_model()``), else the model."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _first_attribute(obj, names: tuple[str, ...]):
    return next((module for name in names if (module := getattr(obj, name, None)) is not None), None)


def block_mlp(block):
    """The feed-forward submodule of a decoder block, or None."""
    return _first_attribute(block, MLP_NAMES)


def mlp_down_proj(mlp):
    """The down projection (intermediate → hidden) inside an MLP, or None."""
    return _first_attribute(mlp, DOWN_PROJ_NAMES)


def find_decoder_blocks(model) -> list:
    """The decoder blocks, in order. Raises MaskError for a model without recognizable MLP blocks.

    Among all ModuleLists whose every item has an MLP, prefer the one whose length equals
    ``config.num_hidden_layers``, then the longest (multimodal models also hold vision blocks).
    """
    import torch.nn as nn

    base = unwrap_peft(model)
    expected = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in base.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and all(block_mlp(b) is not None for b in module)
    ]
    if not candidates:
        raise MaskError(
            f"{type(base).__name__}: no decoder blocks with an MLP found (looked for a list of blocks with one of "
            f"{', '.join(MLP_NAMES)}); ICA masks need a transformer with per-block MLPs"
        )
    candidates.sort(key=lambda item: (len(item[1]) != expected, -len(item[1]), item[0]))
    return list(candidates[0][1])


@dataclass(frozen=True)
class Architecture:
    """What a mask file must agree with: block count and the width of each capture point."""

    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int | None

    def width(self, capture: CapturePoint) -> int:
        if capture == "mlp-output":
            return self.hidden_size
        if self.intermediate_size is None:
            raise MaskError(f"{self.architecture}: no MLP down projection found, so 'mlp-intermediate' cannot be used")
        return self.intermediate_size


def describe_architecture(model) -> Architecture:
    """Block count and widths read from the modules themselves (config values can lie for exotic models)."""
    base = unwrap_peft(model)
    blocks = find_decoder_blocks(base)
    config = getattr(base, "config", None)
    down = mlp_down_proj(block_mlp(blocks[0]))
    hidden = getattr(config, "hidden_size", None) or getattr(down, "out_features", None)
    if hidden is None:
        raise MaskError(f"{type(base).__name__}: cannot tell the hidden size (no config.hidden_size)")
    intermediate = getattr(down, "in_features", None) if down is not None else None
    architectures = getattr(config, "architectures", None) or [type(base).__name__]
    return Architecture(
        architecture=architectures[0],
        model_type=getattr(config, "model_type", "unknown"),
        num_layers=len(blocks),
        hidden_size=int(hidden),
        intermediate_size=int(intermediate) if intermediate is not None else None,
    )


def parse_layer_spec(spec: str | Sequence[int] | None, num_layers: int) -> list[int]:
    """``None``/``"all"`` → every layer; ``"0-3,8,-1"`` → sorted unique ids. Bad or out-of-range specs raise.

    Ranges are inclusive; negative numbers count from the end (``-1`` is the last block). An empty result,
    an unparsable part or a layer outside ``0..num_layers-1`` is a MaskError — never silently dropped.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(num_layers))
    parts: list[str] = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else [str(p) for p in spec]
    chosen: set[int] = set()
    for part in parts:
        if not part:
            raise MaskError(f"layer spec {spec!r}: empty entry (use e.g. 'all', '0-3,8' or '-4--1')")
        try:
            if "-" in part.lstrip("-"):
                head = "-" if part.startswith("-") else ""
                left, right = part.lstrip("-").split("-", 1)
                lo, hi = int(head + left), int(right)
                ids = range(_absolute(lo, num_layers, spec), _absolute(hi, num_layers, spec) + 1)
                if len(ids) == 0:
                    raise MaskError(f"layer spec {spec!r}: range {part!r} is empty (start after end)")
                chosen.update(ids)
            else:
                chosen.add(_absolute(int(part), num_layers, spec))
        except ValueError:
            raise MaskError(f"layer spec {spec!r}: {part!r} is not a layer number or range like '2-5'") from None
    if not chosen:
        raise MaskError(f"layer spec {spec!r} selects no layers")
    return sorted(chosen)


def _absolute(index: int, num_layers: int, spec) -> int:
    resolved = index + num_layers if index < 0 else index
    if not 0 <= resolved < num_layers:
        raise MaskError(f"layer spec {spec!r}: layer {index} is out of range (the model has {num_layers} blocks: 0-{num_layers - 1})")
    return resolved


def batched(items: Iterable[list[int]], size: int) -> Iterator[list[list[int]]]:
    batch: list[list[int]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pad_batch(sequences: list[list[int]], pad_token_id: int):
    """Right-padded input_ids and attention_mask tensors (right padding leaves causal activations unchanged)."""
    import torch

    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
    return ids, attention


def iter_activations(
    model,
    sequences: Iterable[list[int]],
    *,
    layers: list[int],
    capture: CapturePoint,
    pad_token_id: int,
    batch_size: int = 8,
) -> Iterator[np.ndarray]:
    """Run the model over token-id sequences and yield float32 design-matrix rows, one array per batch.

    Each yielded array is (non-pad tokens in the batch) × (len(layers) · width); column ``i*width + n`` is
    neuron ``n`` of ``layers[i]``. Activations are cast to float32 on the model's device before leaving it,
    so bf16/fp16 models work (numpy has no bfloat16).
    """
    import torch

    if capture not in CAPTURE_POINTS:
        raise MaskError(f"unknown capture point {capture!r}; use one of {', '.join(CAPTURE_POINTS)}")
    blocks = find_decoder_blocks(model)
    captured: dict[int, torch.Tensor] = {}
    keep: dict[str, torch.Tensor] = {}

    def remember(layer: int, tensor: torch.Tensor) -> None:
        flat = tensor.detach().reshape(-1, tensor.shape[-1])
        captured[layer] = flat[keep["rows"].to(flat.device)].float().cpu()

    handles = []
    for layer in layers:
        mlp = block_mlp(blocks[layer])
        if capture == "mlp-output":
            handles.append(mlp.register_forward_hook(lambda _m, _a, out, layer=layer: remember(layer, first_tensor(out))))
        else:
            down = mlp_down_proj(mlp)
            if down is None:
                raise MaskError(f"block {layer}: MLP has no down projection ({', '.join(DOWN_PROJ_NAMES)})")
            handles.append(down.register_forward_pre_hook(lambda _m, args, layer=layer: remember(layer, args[0])))
    was_training = model.training
    model.eval()
    runner = _decoder_only(model)
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for batch in batched(sequences, batch_size):
                ids, attention = pad_batch(batch, pad_token_id)
                keep["rows"] = attention.reshape(-1).bool()
                captured.clear()
                runner(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False)
                yield torch.cat([captured[layer] for layer in layers], dim=1).numpy()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def first_tensor(output):
    """An MLP's output tensor (some MLPs return (output, bias) or (output, router_logits))."""
    return output[0] if isinstance(output, tuple | list) else output


def _decoder_only(model):
    """The decoder stack without the LM head when the model exposes it: capture needs no logits (~20 % of a
    small model's compute is the vocabulary projection)."""
    base = unwrap_peft(model)
    get_decoder = getattr(base, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    return decoder if decoder is not None else model
