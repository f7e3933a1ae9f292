"""Per-GPU (or per-process on CPU) memory of a fine-tuning step, computed from the model shape alone.

What is exact and what is not
=============================
**Exact to the byte** (checked in tests/estimate/test_exact_parts.py against real tensors after a real optimizer
step on tiny llama/qwen2/gemma models): base weights (including bitsandbytes NF4 packing and every quantization
constant: absmax, nested absmax, the two code books, the offset), LoRA adapter weights, gradients, and optimizer
states for torch AdamW (two moments + a 4-byte step tensor per parameter tensor) and bitsandbytes AdamW8bit
(uint8 moments + one fp32 absmax per 256 values; tensors under 4096 values keep 32-bit moments).

**Modelled from the real saved tensors** (tests/estimate/test_activations.py counts them with
``torch.autograd.graph.saved_tensors_hooks``): activations. The formula lists what PyTorch + transformers 5 save
per decoder layer for the llama-like families (llama, mistral, qwen2/3, gemma 1/2/3, phi3, stablelm): the fp32
norm inputs and rsqrt, the q/k/v/out and logsumexp kept by SDPA/flash attention (or the s×s probabilities of
eager attention), the gated MLP's four intermediates (three for LoRA), and per LoRA target the dropout mask,
dropout output and A output. With gradient checkpointing only each layer's input is kept, plus one layer's
activations while it is recomputed in backward. The LM head follows TRL's SFTTrainer (``loss="chunked"``: its fused
head saves the shifted hidden states and per-token statistics, never b·s·V logits) or the model's own loss
(``loss="full_logits"``: fp32 log-softmax over b·s·V). Validated (within 2 % on every point, tests + bench) for
SDPA attention in fp32 and bf16, LoRA and full, checkpointing on and off, on llama/qwen2/gemma and SmolLM2-135M.
*Not* validated: eager/flash attention (eager's s×s probabilities are read from the code), the ``*-mixed``
precisions (autocast weight copies are modelled), qk-norm families (qwen3, gemma3), GPT-2, BLOOM, Falcon and
Phi-2 (same accounting with a plain MLP), MoE routing (experts_per_token × the MLP). Encoder-decoder models (T5)
have exact parameter counts but no activation estimate (NotYetSupported).

**Approximate** (constants, not measured on a GPU in this project):

* ``overhead`` on CUDA = 0.5 GiB (CUDA context, cuBLAS/cuDNN workspaces; nvidia-smi shows it, torch's
  ``max_memory_allocated`` does not) + 8 % of the tensor total for allocator fragmentation (the gap between
  ``max_memory_reserved`` and ``max_memory_allocated``, reported between 0 and 25 %).
* ``overhead`` on CPU = the resident size of a Python process that has imported torch, transformers, TRL, PEFT
  and datasets and loaded a tokenizer and a small dataset (:data:`CPU_PROCESS_BASELINE`, measured here), plus
  a weights-sized term that is **empirical and mis-named**: it is not a second copy of the weights. Measured
  (smaps_rollup + glibc ``mallinfo2`` sampled every 2 ms through a real SFTTrainer run, SmolLM2-135M fp32 LoRA
  b4×128): the safetensors weights are file-backed mmap pages, in RSS once (RssFile +508 MiB); step 1's anonymous
  peak is the tensors (+1566 MiB vs 1519 predicted); the excess (+530 MiB from step 2 on) is glibc heap retention:
  once a freed mmapped chunk raises malloc's dynamic mmap threshold (up to 32 MiB), activations come from the brk
  heap, which keeps ~1.5 GiB free-but-resident between steps and fragments (heap free at the peak 508–559 MiB).
  With ``MALLOC_MMAP_THRESHOLD_=131072`` the same run peaks 525 MiB lower and every step's peak equals step 1's.
  How large the retention is depends on the allocation order, not on the weights; it is not derived yet, so the
  weights-sized stand-in stays (its error is the published band).
* The LM-head/loss buffers of TRL's chunked log-prob head count its tile temporaries: one fp32 tile on CUDA
  (Triton kernel), four in forward and six in backward on CPU (torch fallback), read from the code, not measured.
* The peak is the largest of the moments of a step (loss computed, end of backward, optimizer step, evaluation); kernels'
  temporary workspaces beyond the logits buffers are not modelled.
* Sharding (ZeRO/FSDP) divides the model states by the number of GPUs and adds all-gather buffers of two layers;
  DDP adds a gradient-bucket copy. These follow DeepSpeed's own estimators, not measurements.
* Packed/padding-free batches are costed as full ``batch × seq_len`` rectangles (the worst case).
* Paged optimizers (``paged_adamw_*``): bitsandbytes allocates the moment buffers of every tensor with at least
  1e5 values (``Optimizer8bit.get_state_buffer``) with ``cudaMallocManaged``, outside torch's caching allocator.
  They are reported as ``outside_allocator``: in the device-used meter (what nvidia-smi shows while they are
  resident), not in the allocated/reserved meters; under memory pressure the driver pages them to host memory.

Memory savers and LoRA details
==============================
Each term follows how the framework allocates; the tested ones are checked on real tensors on CPU.

* ``optimizer_in_backward`` (torchtune ``optimizer_in_bwd``): one optimizer per parameter, stepped by a
  post-accumulate-grad hook that frees the gradient, so only the largest gradient is alive at once, plus one
  parameter's update temporaries; there is no optimizer-step phase. **Exact** (tests/estimate/test_exact_parts.py:
  peak of live gradients and the states, full and LoRA, fp32 and bf16).
* ``lora_modules_to_save`` (PEFT ``ModulesToSaveWrapper``): a trainable copy of each named module in the weights'
  dtype, with its gradient and optimizer states; the frozen original stays. A tied ``lm_head`` is copied untied.
  **Exact** (same test file, tied and untied models).
* LoRA fp32 adapters, their gradients and AdamW states, and the dropout masks: **exact**/**modelled** as above.
* ``activation_offload`` (torchtune ``OffloadActivations``): saved tensors go to pinned host memory; the current
  layer and one prefetched layer stay on the GPU. The moved bytes are ``activations_offloaded`` (host memory).
  Documented formula (the mechanism needs a GPU).
* ``loss``: ``liger`` (liger_kernel ``fused_linear_cross_entropy``: token chunks of
  next_pow2(b·s / ceil(V/h)) × V in the compute dtype plus an fp32 copy; the hidden-state gradient b·s·h is made in
  forward and saved) and ``cce`` (Cut Cross-Entropy: logits only in on-chip blocks; saves the head input and the
  fp32 log-sum-exp; the hidden-state gradient in backward). Read from their code, not measured (both need Triton
  on a GPU). ``plain`` is ``full_logits``.
* ``compile``: the min-cut partitioner recomputes pointwise ops in backward; the gated MLP keeps the gate and up
  outputs (2 × b·s·I) instead of 3–4 intermediates. Approximate; other fusions are not modelled.
* ``eval_batch_size``: an evaluation forward under no_grad after the gradients are freed (set_to_none): one
  layer's intermediates and the LM-head buffers of the evaluation batch, as its own phase. Approximate.
* The dequantized weight of the layer being recomputed (QLoRA) is ``workspace``: one linear at a time.
* MoE LoRA targets follow PEFT 0.21 on transformers 5 (**exact** trainable counts, tests/estimate/test_moe_lora.py
  against get_peft_model on tiny Mixtral/Qwen2-MoE/Qwen3-MoE): ``all-linear`` adds the router and the stacked
  experts of Mixtral and Qwen3-MoE as target_parameters (the fused gate_up_proj at twice the rank, one rank block
  per expert), none of Qwen2-MoE's. LoRA on those weights acts on the weight, not per token: its activations
  (the merged delta weight) are not modelled.

Three meters
============
Users compare an estimate with one of three numbers, so the breakdown reports all three (per GPU):

* ``allocated`` = ``torch.cuda.max_memory_allocated()``: the tensors alive at the peak phase.
* ``reserved`` = ``torch.cuda.max_memory_reserved()``: allocated + the caching allocator's fragmentation
  (:data:`CUDA_FRAGMENTATION`).
* ``device_used`` = what ``nvidia-smi`` shows: reserved + the CUDA context and library workspaces
  (:data:`CUDA_CONTEXT_BYTES`) + memory outside torch's allocator (paged optimizer states).

The fit verdict and ``total`` use ``device_used``: a run fails when the device runs out, whichever allocator
asked. On CPU the three are the tensors (allocated = reserved, malloc has no cache) and the process RSS.
* QLoRA follows TRL: unquantized weights stay in the compute dtype and adapters are cast to bf16; set
  ``qlora_fp32_non_quantized`` for PEFT's ``prepare_model_for_kbit_training`` (fp32 embeddings/norms/head).

Whole-process check on CPU: ``device="cpu"`` totals are within 15 % of the peak RSS of real TRL SFTTrainer runs
on SmolLM2-135M (LoRA/full, checkpointing on/off; tests/estimate/test_rss.py and bench/estimate_accuracy.py).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fnsft.errors import EstimateError
from fnsft.estimate.arch import LLAMA_LIKE, LinearLayer, ModelShape
from fnsft.names import EstimateOptimizer, EstimatePrecision, MethodName

GiB = 1 << 30
#: CUDA context + library workspaces, as nvidia-smi reports them beyond torch's allocator (typical 0.3–1.3 GB).
CUDA_CONTEXT_BYTES = GiB // 2
#: Allocator fragmentation: max_memory_reserved over max_memory_allocated.
CUDA_FRAGMENTATION = 0.08
#: RSS of a process after importing torch/transformers/trl/peft/datasets and loading a tokenizer and a small
#: dataset (measured here: 599–606 MB with torch 2.13 CPU, transformers 5.24, TRL 1.16).
CPU_PROCESS_BASELINE = 575 * (1 << 20)
#: TRL's chunked log-prob head: tokens × vocabulary per tile (trl/kernels/chunked_logprob.py).
TOKEN_TILE, VOCAB_TILE = 4096, 32768
#: fp32 tile-sized temporaries alive at once in that head: (forward, backward) on CUDA (Triton) and on CPU (torch).
TILE_TEMPORARIES = {"cuda": (1, 1), "cpu": (4, 6)}
#: bitsandbytes: 4-bit block size, nested (double-quant) block size, 8-bit optimizer block size / threshold.
NF4_BLOCK, NF4_NESTED_BLOCK, OPT8_BLOCK, OPT8_MIN_SIZE = 64, 256, 256, 4096
#: bitsandbytes paged optimizers page only the state buffers of tensors with at least this many values.
PAGED_MIN_SIZE = 100_000
#: The meter the fit verdict (and ``Breakdown.total``) uses.
FIT_METER = "device_used"

Sharding = Literal["none", "ddp", "zero1", "zero2", "zero3", "fsdp"]


class EstimateInput(BaseModel):
    """Everything that decides the memory of one training step."""

    model_config = ConfigDict(extra="forbid")

    model: ModelShape
    method: MethodName = "lora"
    precision: EstimatePrecision = "bf16"
    optimizer: EstimateOptimizer = "adamw_torch"
    batch_size: int = Field(4, gt=0, description="Micro-batch per device.")
    gradient_accumulation_steps: int = Field(1, gt=0)
    seq_len: int = Field(1024, gt=0)
    gradient_checkpointing: bool = True
    lora_r: int = Field(16, gt=0)
    lora_targets: list[str] | Literal["all-linear"] = "all-linear"
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    quant_bits: Literal[4, 8] = Field(4, description="QLoRA base weights: 4-bit NF4/FP4 or 8-bit LLM.int8.")
    quant_double: bool = Field(True, description="QLoRA nested quantization of the absmax constants.")
    qlora_fp32_non_quantized: bool = Field(
        False, description="PEFT prepare_model_for_kbit_training casts every unquantized weight to fp32 (TRL does not)."
    )
    attention: Literal["sdpa", "flash", "eager"] = "sdpa"
    loss: Literal["chunked", "full_logits", "liger", "cce"] = Field(
        "chunked", description="chunked: TRL's fused LM head (SFTTrainer default) computes log-probs in tiles of "
        "4096 tokens × 32768 vocab without the b·s·V logits; full_logits (alias plain): the model's own loss "
        "(logits + fp32 log-softmax); liger: Liger's fused linear cross-entropy (token chunks, gradients computed "
        "in forward); cce: Cut Cross-Entropy (logits only in on-chip blocks)."
    )
    optimizer_in_backward: bool = Field(
        False, description="Step each parameter as soon as its gradient is accumulated and free the gradient "
        "(torchtune optimizer_in_bwd): one gradient alive at a time. Needs gradient_accumulation_steps 1."
    )
    activation_offload: bool = Field(
        False, description="Move saved activations (checkpoints) to pinned CPU memory, prefetching one layer ahead."
    )
    compile: bool = Field(False, description="torch.compile: the partitioner recomputes cheap pointwise ops in backward.")
    lora_modules_to_save: list[str] = Field(
        default_factory=list, description="PEFT modules_to_save (e.g. embed_tokens, lm_head): fully trained copies."
    )
    eval_batch_size: int | None = Field(None, gt=0, description="Evaluation micro-batch (None: no evaluation).")
    num_gpus: int = Field(1, gt=0)
    sharding: Sharding = "none"
    offload: Literal["none", "optimizer", "params"] = "none"
    device: Literal["cuda", "cpu"] = "cuda"

    @field_validator("loss", mode="before")
    @classmethod
    def _plain_is_full_logits(cls, value: object) -> object:
        return "full_logits" if value == "plain" else value

    @model_validator(mode="after")
    def _check(self) -> EstimateInput:
        if self.optimizer_in_backward and self.gradient_accumulation_steps > 1:
            raise ValueError("optimizer_in_backward frees each gradient after its update: it needs "
                             "gradient_accumulation_steps 1")
        if self.optimizer_in_backward and self.sharding != "none":
            raise ValueError("optimizer_in_backward is estimated for one process (sharding none)")
        if self.lora_modules_to_save and self.method == "full":
            raise ValueError("lora_modules_to_save is for LoRA/QLoRA (full fine-tuning trains every module)")
        if self.method == "qlora" and self.precision.startswith("fp32"):
            raise ValueError("qlora needs a 16-bit compute dtype (precision bf16 or fp16)")
        return self

    @property
    def compute_bytes(self) -> int:
        return 4 if self.precision == "fp32" else 2

    @property
    def weight_bytes(self) -> int:
        """Bytes per stored (unquantized) weight: fp32 for fp32 and the *-mixed precisions."""
        return 2 if self.precision in ("bf16", "fp16") else 4

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len


class Breakdown(BaseModel):
    """Predicted bytes per GPU (per process on CPU). ``total`` is the predicted peak."""

    weights: int = Field(description="Base model weights, incl. quantization constants (frozen ones for PEFT).")
    weights_quantized: int = Field(0, description="Of weights: 4-bit packed linear weights.")
    quantization_constants: int = Field(0, description="Of weights: absmax, nested absmax, code books, offsets.")
    weights_unquantized: int = Field(0, description="Of weights: what stays 16/32-bit (embeddings, head, norms, ...).")
    adapter: int = Field(0, description="LoRA adapter weights (trainable).")
    trainable_params: int
    total_params: int
    gradients: int
    optimizer_states: int
    activations: int = Field(description="Tensors saved for backward at the end of forward (incl. the fp32 log-probs).")
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    recompute: int = Field(0, description="One layer's activations rebuilt during backward (checkpointing).")
    logits_saved: int = Field(description="Of activations: the fp32 log-softmax kept for the loss backward.")
    logits_transient: int = Field(description="b·s·V buffers alive at the loss (logits, fp32 upcast, loss grads).")
    optimizer_transient: int = 0
    workspace: int = Field(0, description="QLoRA: one linear dequantized to the compute dtype in backward.")
    communication: int = Field(0, description="DDP buckets / ZeRO-FSDP all-gather buffers.")
    outside_allocator: int = Field(0, description="Of optimizer_states: paged (CUDA managed) buffers, not in torch's "
                                   "allocator; counted in device_used only.")
    fragmentation: int = Field(0, description="reserved − allocated (caching allocator).")
    context: int = Field(0, description="CUDA context + library workspaces (CPU: the process baseline + weights copy).")
    overhead: int = Field(description="fragmentation + context.")
    allocated: int = Field(description="Meter 1: torch.cuda.max_memory_allocated (CPU: tensor bytes).")
    reserved: int = Field(description="Meter 2: torch.cuda.max_memory_reserved (CPU: same as allocated).")
    device_used: int = Field(description="Meter 3: nvidia-smi = reserved + context + outside_allocator (CPU: RSS).")
    fit_meter: str = FIT_METER
    total: int = Field(description="The predicted peak on the fit meter (device_used).")
    peak_phase: str
    cpu_offloaded: int = Field(0, description="Bytes moved to host memory by --offload (not in total).")
    evaluation: int = Field(0, description="Evaluation forward (no grad): one layer's intermediates + LM-head buffers.")
    activations_offloaded: int = Field(0, description="Of cpu_offloaded: saved activations moved to host memory.")
    warnings: list[str] = Field(default_factory=list, description="Things to check that do not stop the estimate.")


def lora_target_layers(inp: EstimateInput) -> list[LinearLayer]:
    """The linear layers of one block that carry LoRA (raises if a named target does not exist).

    As PEFT resolves them: ``all-linear`` is every nn.Linear but the head, plus the MoE router and experts that
    PEFT's transformers-5 conversion adds as target_parameters (``LinearLayer.peft_parameter``); a list names
    modules by full or last name, or an MoE parameter by its transformers-4 name (``peft_aliases``).
    """
    layers = [layer for block in inp.model.blocks for layer in block.linears]
    linears = [layer for layer in layers if layer.is_linear_module or layer.peft_parameter]
    if inp.lora_targets == "all-linear":
        return linears
    wanted = set(inp.lora_targets)

    def names(layer: LinearLayer) -> set[str]:
        return {layer.name, layer.name.rsplit(".", 1)[-1], *(layer.peft_aliases if layer.peft_parameter else [])}

    chosen = [layer for layer in linears if names(layer) & wanted]
    found: set[str] = set().union(*(names(layer) for layer in chosen))
    missing = sorted(wanted - found)
    if missing:
        known = sorted({layer.name for layer in linears})
        raise EstimateError(f"LoRA target(s) {', '.join(missing)} not in {inp.model.name} (its linears: {', '.join(known)})")
    return chosen


def _lora_tensor_sizes(inp: EstimateInput) -> list[int]:
    targets = {id(layer) for layer in lora_target_layers(inp)}
    sizes: list[int] = []
    for block in inp.model.blocks:
        for _ in range(block.repeat):
            for layer in block.linears:
                if id(layer) in targets:  # stacked experts: one rank block per expert (PEFT ParamWrapper)
                    rank = inp.lora_r * layer.lora_rank_factor * layer.count
                    sizes += [rank * layer.d_in, layer.d_out * rank]
    return sizes


def nf4_bytes(numel: int, double_quant: bool) -> tuple[int, int]:
    """(packed bytes, constant bytes) of one bitsandbytes 4-bit weight."""
    blocks = math.ceil(numel / NF4_BLOCK)
    code = 16 * 4  # the NF4/FP4 code book, fp32, one per weight
    if not double_quant:
        return math.ceil(numel / 2), blocks * 4 + code
    nested = math.ceil(blocks / NF4_NESTED_BLOCK) * 4 + 256 * 4 + 4  # fp32 absmax, 8-bit code book, offset
    return math.ceil(numel / 2), blocks + code + nested


def _weights(inp: EstimateInput) -> tuple[int, int, int, int]:
    """(total, quantized, constants, unquantized) bytes of the base model."""
    model = inp.model
    if inp.method != "qlora":
        total = model.total_params * inp.weight_bytes
        return total, 0, 0, total
    quantized = constants = 0
    for block in model.blocks:
        for layer in block.linears:
            if layer.is_linear_module:
                if inp.quant_bits == 8:  # LLM.int8: int8 weights + one fp32 scale per output row (not validated)
                    packed, const = layer.d_in * layer.d_out, 4 * layer.d_out
                else:
                    packed, const = nf4_bytes(layer.d_in * layer.d_out, inp.quant_double)
                quantized += packed * layer.count * block.repeat
                constants += const * layer.count * block.repeat
    unquantized_params = model.total_params - sum(
        layer.d_in * layer.d_out * layer.count * block.repeat
        for block in model.blocks for layer in block.linears if layer.is_linear_module
    )
    unquantized = unquantized_params * (4 if inp.qlora_fp32_non_quantized else inp.compute_bytes)
    return quantized + constants + unquantized, quantized, constants, unquantized


def _trainable(inp: EstimateInput) -> tuple[list[int], int]:
    """(trainable tensor sizes, bytes per trainable value)."""
    if inp.method == "full":
        return inp.model.tensor_sizes(), inp.weight_bytes
    # PEFT keeps LoRA weights in fp32 (autocast_adapter_dtype); TRL casts them to bf16 for quantized bases.
    return _lora_tensor_sizes(inp), 2 if inp.method == "qlora" else 4


#: modules_to_save names → the ModelShape's outside-the-blocks tensor.
_SAVED_MODULES = {"embed_tokens": "embed_tokens", "embed_in": "embed_tokens", "wte": "embed_tokens",
                  "lm_head": "lm_head", "embed_out": "lm_head"}


def modules_to_save_sizes(inp: EstimateInput) -> list[int]:
    """Sizes of the trainable copies PEFT's ModulesToSaveWrapper makes (the original stays, frozen)."""
    sizes = []
    for name in inp.lora_modules_to_save:
        key = _SAVED_MODULES.get(name)
        if key is None:
            raise EstimateError(f"lora_modules_to_save: '{name}' is not costed (supported: {', '.join(_SAVED_MODULES)})")
        outside = inp.model.outside_params
        sizes.append(outside.get(key, outside["embed_tokens"]))  # a tied lm_head is copied untied
    return sizes


def optimizer_state_bytes(optimizer: str, sizes: list[int], value_bytes: int) -> int:
    """Bytes of optimizer state after the first step for trainable tensors of the given sizes."""
    if optimizer in ("adamw", "adamw_torch", "adamw_torch_fused"):
        return sum(2 * n * value_bytes + 4 for n in sizes)  # exp_avg, exp_avg_sq in the param dtype + fp32 step
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        small = sum(8 * n for n in sizes if n < OPT8_MIN_SIZE)
        big = sum(2 * n + 2 * 4 * math.ceil(n / OPT8_BLOCK) for n in sizes if n >= OPT8_MIN_SIZE)
        shared_code_books = 2 * 256 * 4 if any(n >= OPT8_MIN_SIZE for n in sizes) else 0
        return small + big + shared_code_books
    if optimizer == "paged_adamw_32bit":
        return sum(8 * n for n in sizes)
    if optimizer == "adafactor":
        return sum(n * value_bytes for n in sizes)  # upper bound: factored rows+cols are far smaller for matrices
    return 0  # sgd without momentum


def paged_state_bytes(optimizer: str, sizes: list[int]) -> int:
    """Bytes of a bitsandbytes paged optimizer's moment buffers that live in CUDA managed memory."""
    per_value = {"paged_adamw_8bit": 2, "paged_adamw_32bit": 8}.get(optimizer, 0)
    return sum(per_value * n for n in sizes if n >= PAGED_MIN_SIZE)


def _sdpa_layer(inp: EstimateInput, dtype: int) -> int:
    m, tokens, b, s = inp.model, inp.tokens, inp.batch_size, inp.seq_len
    q, kv = m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
    if inp.attention == "eager":
        # q, repeated k and v, fp32 softmax output and its cast, the contiguous output copy
        return dtype * tokens * 4 * q + (4 + dtype) * b * m.num_heads * s * s
    return dtype * tokens * (2 * q + 2 * kv) + 4 * b * m.num_heads * s  # q, k, v, out + fp32 logsumexp


def _norm(inp: EstimateInput, dtype: int, trainable: bool, output_saved: bool) -> int:
    """Saved bytes of one RMSNorm/LayerNorm over hidden states."""
    tokens, h = inp.tokens, inp.model.hidden_size
    saved = 4 * tokens * h + 4 * tokens  # fp32 input (copy), rsqrt/rstd
    if trainable:
        normed_bytes = 4 if inp.model.model_type.startswith("gemma") else dtype
        saved += normed_bytes * tokens * h + (dtype * tokens * h if output_saved else 0)
    return saved


def _lora_saved(inp: EstimateInput, layer: LinearLayer, input_requires_grad: bool) -> int:
    """Dropout mask + dropout output (the fp32 cast of the input without dropout) + A output of one LoRA layer."""
    tokens, adapter_bytes = inp.tokens, 2 if inp.method == "qlora" else 4
    saved = adapter_bytes * tokens * (layer.d_in + inp.lora_r)
    if inp.lora_dropout > 0 and input_requires_grad:
        saved += (1 if inp.device == "cuda" else adapter_bytes) * tokens * layer.d_in  # bool mask on CUDA
    return saved * layer.count


def layer_activation_bytes(inp: EstimateInput, first_layer: bool = False) -> int:
    """Bytes saved for backward by one decoder layer without checkpointing."""
    m, tokens, dtype = inp.model, inp.tokens, inp.compute_bytes
    full = inp.method == "full"
    # With a frozen embedding the first layer's input needs no gradient (unless checkpointing/PEFT prep asks for it).
    input_grad = full or not first_layer or inp.gradient_checkpointing or inp.method == "qlora"
    pre_norms = 2 if m.norms_per_layer >= 2 else 1
    post_norms = max(m.norms_per_layer - 2, 0)
    saved = 0
    if input_grad:
        saved += _norm(inp, dtype, full, output_saved=True)
    saved += (pre_norms - 1) * _norm(inp, dtype, full, output_saved=True) + post_norms * _norm(inp, dtype, full, False)
    saved += _sdpa_layer(inp, dtype)
    if m.qk_norm:
        heads = m.num_heads + m.num_kv_heads
        saved += 4 * tokens * heads * (m.head_dim + 1) + (dtype * tokens * heads * m.head_dim if full else 0)
    if m.gated_mlp:
        kept = 2 if inp.compile else (4 if full else 3)  # compiled: gate and up outputs; SiLU/product recomputed
        saved += kept * dtype * tokens * m.intermediate_size * max(m.experts_per_token, 1)
    else:
        saved += 2 * dtype * tokens * m.intermediate_size
    if full and inp.precision.endswith("mixed"):
        saved += 2 * sum(layer.d_in * layer.d_out * layer.count for layer in m.blocks[0].linears)  # autocast copies
    if not full:
        attention_inputs = {"q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value"}
        for layer in lora_target_layers(inp):
            if layer.peft_parameter:
                continue  # LoRA on the weight itself (ParamWrapper), nothing per token: not modelled
            grad_in = input_grad or layer.name not in attention_inputs
            saved += _lora_saved(inp, layer, grad_in)
    return saved


class ActivationParts(BaseModel):
    """Saved-for-backward bytes of a forward pass, split like the measurement (tests/bench) splits them."""

    total: int
    in_layers: int = Field(description="Saved inside decoder layers, or held as layer inputs by checkpointing.")
    log_probs: int
    recompute: int


def activation_parts(inp: EstimateInput, checkpointing: bool) -> ActivationParts:
    """Saved-for-backward bytes for the whole model, with or without gradient checkpointing."""
    m, tokens, dtype = inp.model, inp.tokens, inp.compute_bytes
    if m.is_encoder_decoder:
        from fnsft.errors import NotYetSupported

        raise NotYetSupported(f"{m.name}: activation estimates for encoder-decoder models (T5) are not implemented")
    variant = inp.model_copy(update={"gradient_checkpointing": checkpointing})
    full = inp.method == "full"
    per_layer = layer_activation_bytes(variant)
    if checkpointing:
        layers = m.num_layers * dtype * tokens * m.hidden_size  # each layer's input, kept for the recompute
        recompute = per_layer
    else:
        layers = layer_activation_bytes(variant, first_layer=True) + (m.num_layers - 1) * per_layer
        recompute = 0
    # cos/sin of the rotary embedding, saved once by the first layer's q/k multiply (inside the recompute with checkpointing)
    rotary = 2 * dtype * inp.seq_len * m.head_dim if m.model_type in LLAMA_LIKE and not checkpointing else 0
    embedding = 8 * tokens if full else 0  # token ids kept for the embedding gradient
    if inp.loss in ("liger", "cce"):
        # liger: the hidden-state gradient computed in forward (b·s·h) + int64 targets; cce: the head input,
        # targets and the fp32 log-sum-exp per token (backward recomputes logits block by block)
        final_norm = _norm(inp, dtype, full, output_saved=True)
        log_probs, head = 0, tokens * (dtype * m.hidden_size + 8 + (4 if inp.loss == "cce" else 0))
    elif inp.loss == "chunked":
        # the shifted hidden states (a copy), int64 targets, fp32 log-normaliser and entropy
        scored = inp.batch_size * (inp.seq_len - 1)
        final_norm = _norm(inp, dtype, full, output_saved=False)
        log_probs, head = 0, scored * (dtype * m.hidden_size + 8 + 4 + 4)
    else:
        # lm_head input (full), fp32 log-softmax, int64 labels and the loss's total weight
        final_norm = _norm(inp, dtype, full, output_saved=True)
        log_probs, head = 4 * tokens * m.vocab_size, 8 * tokens + 4
    in_layers = layers + rotary
    return ActivationParts(total=in_layers + final_norm + log_probs + head + embedding, in_layers=in_layers,
                           log_probs=log_probs, recompute=recompute)


def logits_transient_bytes(inp: EstimateInput) -> int:
    """Buffers of the LM head and loss that live only around the loss (forward end / backward start)."""
    m, dtype = inp.model, inp.compute_bytes
    if inp.loss == "full_logits":
        # forward: logits (+ fp32 upcast); backward: two fp32 b·s·V gradients next to the saved log-probs
        values = inp.tokens * m.vocab_size
        return max(dtype * values + (4 * values if dtype != 4 else 0), 8 * values)
    head_trainable = inp.method == "full" or "lm_head" in inp.lora_modules_to_save
    head_grad = 4 * m.vocab_size * m.hidden_size if head_trainable else 0
    if inp.loss == "liger":
        # liger_kernel fused_linear_cross_entropy: token chunks of next_pow2(b·s / ceil(V / h)); per chunk the
        # logits (compute dtype) are turned into their gradient in place, with an fp32 copy for the loss
        chunk = 1 << max(math.ceil(inp.tokens / math.ceil(m.vocab_size / m.hidden_size)) - 1, 0).bit_length()
        return min(chunk, inp.tokens) * m.vocab_size * (dtype + 4) + head_grad
    if inp.loss == "cce":
        return dtype * inp.tokens * m.hidden_size + head_grad  # the hidden-state gradient; logits stay on chip
    scored = inp.batch_size * (inp.seq_len - 1)
    tile = min(scored, TOKEN_TILE) * min(m.vocab_size, VOCAB_TILE)
    forward_temps, backward_temps = TILE_TEMPORARIES[inp.device]
    backward = dtype * tile + 4 * tile * backward_temps + 4 * scored * m.hidden_size + head_grad
    return max(dtype * tile + 4 * tile * forward_temps, backward)


def _check_sizes(inp: EstimateInput) -> None:
    if inp.sharding in ("zero1", "zero2", "zero3", "fsdp", "ddp") and inp.num_gpus == 1:
        raise EstimateError(f"sharding '{inp.sharding}' needs --num-gpus > 1")
    if inp.offload == "params" and inp.sharding not in ("zero3", "fsdp"):
        raise EstimateError("--offload params needs --sharding zero3 or fsdp (parameters are offloaded per shard)")
    if inp.device == "cpu" and (inp.sharding not in ("none", "ddp") or inp.offload != "none"):
        raise EstimateError("--device cpu estimates a single process: no ZeRO/FSDP sharding or offload")


def estimate(inp: EstimateInput) -> Breakdown:
    """Predict the peak memory of one training step per GPU (per process with ``device='cpu'``).

    Args:
        inp: the run to estimate.

    Returns:
        The breakdown; ``total`` is the predicted peak.

    Raises:
        EstimateError: inconsistent input (unknown LoRA target, sharding on one GPU, ...).
        NotYetSupported: encoder-decoder models.
    """
    _check_sizes(inp)
    model = inp.model
    warnings = []
    limit = model.max_position_embeddings
    if limit and inp.seq_len > limit:
        warnings.append(f"seq_len {inp.seq_len} is beyond {model.name}'s max_position_embeddings {limit}: the model "
                        "needs RoPE scaling (rope_scaling) to be trained that long; memory is estimated as asked")
    if inp.method != "full" and inp.lora_dropout > 0 and any(layer.peft_parameter for layer in lora_target_layers(inp)):
        warnings.append(f"LoRA on {model.name}'s MoE router/experts (PEFT target_parameters) needs lora_dropout 0: "
                        "PEFT's ParamWrapper raises otherwise")
    weights, quantized, constants, unquantized = _weights(inp)
    sizes, value_bytes = _trainable(inp)
    # modules_to_save copies are trained in the weights' dtype next to the (fp32/bf16) adapters
    saved_sizes, saved_bytes = modules_to_save_sizes(inp), 4 if inp.qlora_fp32_non_quantized else inp.weight_bytes
    trainable = sum(sizes) + sum(saved_sizes)
    adapter = 0 if inp.method == "full" else sum(sizes) * value_bytes + sum(saved_sizes) * saved_bytes
    gradients = sum(sizes) * value_bytes + sum(saved_sizes) * saved_bytes
    optimizer = (optimizer_state_bytes(inp.optimizer, sizes, value_bytes)
                 + optimizer_state_bytes(inp.optimizer, saved_sizes, saved_bytes))
    largest_gradient = max([n * value_bytes for n in sizes] + [n * saved_bytes for n in saved_sizes], default=0)
    if inp.optimizer_in_backward:
        gradients = largest_gradient  # each gradient is stepped and freed as soon as it is accumulated
    with_gc, without_gc = activation_parts(inp, True), activation_parts(inp, False)
    activations = with_gc.total if inp.gradient_checkpointing else without_gc.total
    activations_offloaded = 0
    if inp.activation_offload:
        # saved tensors go to pinned host memory layer by layer; the current and the prefetched layer stay
        in_layers = (with_gc if inp.gradient_checkpointing else without_gc).in_layers
        kept = in_layers * min(2, model.num_layers) // model.num_layers
        activations_offloaded = in_layers - kept
        activations -= activations_offloaded
    recompute = with_gc.recompute if inp.gradient_checkpointing else 0
    log_probs = without_gc.log_probs
    dtype = inp.compute_bytes
    logits_transient = logits_transient_bytes(inp)
    # foreach AdamW keeps one state-sized temporary; fused and 8-bit kernels update in place
    optimizer_transient = trainable * value_bytes if inp.optimizer in ("adamw", "adamw_torch") and inp.device == "cuda" else 0
    if inp.optimizer_in_backward:
        optimizer_transient = largest_gradient  # one parameter's update temporaries, inside backward

    workspace = 0
    if inp.method == "qlora":
        workspace = dtype * max(layer.d_in * layer.d_out for block in model.blocks for layer in block.linears)

    n, cpu_offloaded, communication = inp.num_gpus, 0, 0
    if inp.sharding in ("zero1", "zero2", "zero3", "fsdp"):
        cpu_offloaded, optimizer = (optimizer // n, 0) if inp.offload != "none" else (0, optimizer // n)
    if inp.sharding in ("zero2", "zero3", "fsdp"):
        gradients //= n
    if inp.sharding in ("zero3", "fsdp"):
        layer_bytes = model.blocks[0].params * inp.weight_bytes
        communication = 2 * layer_bytes  # current + prefetched layer, all-gathered
        if inp.offload == "params":
            cpu_offloaded += weights
            weights = 0
        else:
            weights //= n
    elif inp.sharding == "ddp":
        communication = gradients  # gradient buckets
    if inp.offload == "optimizer" and inp.sharding == "none":
        cpu_offloaded, optimizer = optimizer, 0
    cpu_offloaded += activations_offloaded

    paged = inp.device == "cuda" and inp.offload == "none"
    outside = paged_state_bytes(inp.optimizer, sizes) + paged_state_bytes(inp.optimizer, saved_sizes) if paged else 0
    if inp.sharding in ("zero1", "zero2", "zero3", "fsdp"):
        outside //= n
    static = weights + adapter + optimizer - outside
    accumulated = gradients if inp.gradient_accumulation_steps > 1 else 0
    phases = {
        "loss (end of forward)": activations + logits_transient + accumulated,
        # checkpoints are freed layer by layer while gradients grow: the larger of the two plus one recomputed layer
        "backward": recompute + workspace + max(activations - log_probs, gradients),
        "optimizer step": gradients + optimizer_transient,
    }
    if inp.optimizer_in_backward:  # no step phase: each update (and its temporaries) happens inside backward
        del phases["optimizer step"]
        phases["backward"] = recompute + workspace + activations - log_probs + gradients + optimizer_transient
    evaluation = 0
    if inp.eval_batch_size:
        # no_grad forward (gradients are freed, set_to_none, before evaluation): one layer's intermediates at a time
        # and the LM-head buffers of the evaluation batch
        at_eval = inp.model_copy(update={"batch_size": inp.eval_batch_size, "gradient_checkpointing": False})
        evaluation = layer_activation_bytes(at_eval) + logits_transient_bytes(at_eval)
        phases["evaluation"] = evaluation
    phase, dynamic = max(phases.items(), key=lambda item: item[1])
    allocated = static + dynamic + communication
    if inp.device == "cuda":
        fragmentation, context = int(CUDA_FRAGMENTATION * allocated), CUDA_CONTEXT_BYTES
    else:
        # weights: mapped safetensors pages, in RSS once. The extra weights-sized term stands in for glibc heap
        # retention (freed activations kept resident once malloc's dynamic mmap threshold has risen; measured, see
        # the module docstring); its size is not derived yet.
        fragmentation, context = 0, CPU_PROCESS_BASELINE + weights
    reserved = allocated + fragmentation
    device_used = reserved + context + outside
    return Breakdown(
        weights=weights, weights_quantized=quantized, quantization_constants=constants,
        weights_unquantized=unquantized, adapter=adapter, trainable_params=trainable, total_params=model.total_params,
        gradients=gradients, optimizer_states=optimizer, activations=activations,
        activations_without_checkpointing=without_gc.total, activations_with_checkpointing=with_gc.total,
        recompute=recompute,
        logits_saved=log_probs, logits_transient=logits_transient, optimizer_transient=optimizer_transient,
        workspace=workspace, communication=communication, outside_allocator=outside, fragmentation=fragmentation,
        context=context, overhead=fragmentation + context, allocated=allocated, reserved=reserved,
        device_used=device_used, total=device_used, peak_phase=phase, cpu_offloaded=cpu_offloaded,
        evaluation=evaluation, activations_offloaded=activations_offloaded, warnings=warnings,
    )
