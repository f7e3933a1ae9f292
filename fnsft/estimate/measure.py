"""Ground-truth measurements the estimator is checked against (tests, bench, and the calibration loop).

torch is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from typing import Any


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


def saved_tensor_bytes(model, input_ids, fused_lm_head: bool = False) -> SavedTensorBytes:
    """Run one forward (with loss) and count what it keeps for backward.

    Unique storages (``untyped_storage().data_ptr()``) seen by ``torch.autograd.graph.saved_tensors_hooks``,
    parameter storages excluded. ``fused_lm_head`` calls a model patched with TRL's ``add_fused_lm_head`` the way
    SFTTrainer does (chunked log-probs instead of logits). With non-reentrant gradient checkpointing the saved tensors inside a layer are
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
            extra = {"fused_lm_head": True} if fused_lm_head else {}
            output = model(input_ids=input_ids, labels=input_ids, **extra)
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
    """Peak resident set size of this process so far.

    Linux: ``VmHWM`` from /proc/self/status, because ``ru_maxrss`` survives fork+exec and so reports the parent's
    peak in a child started from a large process. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB otherwise).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def tensor_bytes(tensors) -> int:
    """Bytes of the unique storages behind some tensors."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _quant_state_tensors(model):
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is None:
            continue
        yield from (t for t in (state.absmax, state.code, state.offset) if t is not None)
        if state.state2 is not None:
            yield from (state.state2.absmax, state.state2.code)


def exact_parts_after_step(model_dir, method: str, precision: str, optimizer_name: str, lora_r: int = 8,
                           modules_to_save: list[str] | None = None) -> dict[str, int]:
    """Load a model as TRL's SFTTrainer would, take one real optimizer step, and sum the real tensors.

    PEFT defaults (fp32 adapters); for a 4-bit base the adapters are cast to bf16 as sft_trainer.py does.
    Returns bytes of base weights (+ quantization constants), adapters, gradients and optimizer states, and the
    parameter counts (a packed 4-bit byte counts as two parameters).
    """
    import logging

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if method != "full":
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules="all-linear",
                                                 task_type="CAUSAL_LM", modules_to_save=modules_to_save))
        if method == "qlora":
            for param in model.parameters():
                if param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer
    if optimizer_name == "adamw_8bit":
        import bitsandbytes as bnb

        optimizer = bnb.optim.AdamW8bit(trainable, lr=1e-3)
    else:
        optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    peft = method != "full"  # PEFT: the adapter is what trains (LoRA A/B and modules_to_save copies)
    base = [p for p in model.parameters() if not (peft and p.requires_grad)]
    packed = [p for p in base if p.dtype == torch.uint8]
    return {
        "weights": tensor_bytes(base) + tensor_bytes(_quant_state_tensors(model)),
        "weights_quantized": tensor_bytes(packed),
        "adapter": tensor_bytes(trainable) if peft else 0,
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in base) + sum(p.numel() for p in packed),
        "gradients": tensor_bytes(p.grad for p in trainable),
        "optimizer_states": tensor_bytes(
            v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)
        ),
    }


def activations_of(model_dir, method: str, precision: str, batch: int, seq: int, checkpointing: bool,
                   loss: str = "chunked", lora_r: int = 8, lora_dropout: float = 0.05) -> SavedTensorBytes:
    """Saved-tensor bytes of one training forward, set up as SFTTrainer does (fused LM head for ``chunked``)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    if loss == "chunked":  # as SFTTrainer does, before PEFT wraps the model
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=lora_dropout,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    return saved_tensor_bytes(model, ids, fused_lm_head=loss == "chunked")


def gradients_with_optimizer_in_backward(model_dir, method: str, precision: str, lora_r: int = 8) -> dict[str, int]:
    """One real backward with the optimizer step fused into it (torchtune's optimizer_in_bwd): every trainable
    parameter has its own AdamW, stepped by a post-accumulate-grad hook that then frees the gradient.

    Returns the peak bytes of gradients alive at once (read in every hook, before the free) and the optimizer
    states after the step.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if method != "full":
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizers = {p: torch.optim.AdamW([p], lr=1e-3) for p in trainable}
    peak = 0

    def step_and_free(param):
        nonlocal peak
        peak = max(peak, tensor_bytes(p.grad for p in trainable if p.grad is not None))
        optimizers[param].step()
        param.grad = None

    for param in trainable:
        param.register_post_accumulate_grad_hook(step_and_free)
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    states = [v for opt in optimizers.values() for state in opt.state.values() for v in state.values()]
    return {"gradients": peak, "optimizer_states": tensor_bytes(v for v in states if torch.is_tensor(v)),
            "gradients_left": sum(p.grad is not None for p in trainable)}
