"""Ground-truth measurements the estimator is checked against (tests, bench, and the calibration loop).

torch is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass


@dataclass
class SavedTensorBytes:
    """Bytes of the tensors kept for backward during one forward pass."""

    total: int
    in_layers: int  # saved inside decoder layers (or held by checkpointing as layer inputs)
    log_probs: int  # the fp32 (tokens × vocab) log-softmax saved by the loss


def _decoder_layers(model):
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and "DecoderLayer" in type(module[0]).__name__:
            return list(module)
    raise ValueError("no decoder layers found")


def saved_tensor_bytes(model, input_ids, labels=None) -> SavedTensorBytes:
    """Run one forward (with loss) and count what it keeps for backward.

    Unique storages (``untyped_storage().data_ptr()``) seen by ``torch.autograd.graph.saved_tensors_hooks``,
    parameter storages excluded. With non-reentrant gradient checkpointing the saved tensors inside a layer are
    packed by checkpoint's own hooks (so not seen here); what the checkpoint holds instead is each layer's input
    hidden states, which a forward pre-hook adds.
    """
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}
    layer_ptrs: set[int] = set()
    depth = [0]
    vocab = model.config.get_text_config().vocab_size

    def remember(tensor, inside_layer: bool) -> None:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            seen[ptr] = storage.nbytes()
            if inside_layer:
                layer_ptrs.add(ptr)

    def pack(tensor):
        remember(tensor, depth[0] > 0)
        return tensor

    def enter(module, args, kwargs):
        depth[0] += 1
        hidden = args[0] if args else kwargs.get("hidden_states")
        if getattr(module, "gradient_checkpointing", False) and module.training and hidden is not None:
            remember(hidden, True)  # held by the checkpoint for the recompute

    def leave(module, args, kwargs, output):
        depth[0] -= 1

    layers = _decoder_layers(model)
    handles = [layer.register_forward_pre_hook(enter, with_kwargs=True) for layer in layers]
    handles += [layer.register_forward_hook(leave, with_kwargs=True) for layer in layers]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            output = model(input_ids=input_ids, labels=input_ids if labels is None else labels)
    finally:
        for handle in handles:
            handle.remove()
    tokens = input_ids.numel()
    log_probs = sum(n for ptr, n in seen.items() if n == 4 * tokens * vocab and ptr not in layer_ptrs)
    del output
    return SavedTensorBytes(
        total=sum(seen.values()), in_layers=sum(seen[ptr] for ptr in layer_ptrs), log_probs=log_probs
    )


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def tensor_bytes(tensors) -> int:
    """Bytes of the unique storages behind some tensors."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())
