"""The disk a run will write, predicted from what it will serialize, and the free-space check before training.

A checkpoint (transformers ``Trainer._save_checkpoint``) holds what ``save_pretrained`` writes (for PEFT
``get_peft_model_state_dict(save_embedding_layers="auto")``: the adapter, plus the embedding layers when the
vocabulary was resized or an embedding is targeted; for full fine-tuning every tensor but tied copies), the
optimizer's ``state_dict()`` (torch.save), the tokenizer (``processing_class.save_pretrained``, repeated in every
checkpoint), and small state files. The trainer deletes checkpoints beyond ``save_total_limit`` only after
writing the next one, so the disk briefly holds limit + 1 of them; the final adapter/model is written after the
last rotation. Each part is sized by the mechanism that writes it (:func:`measure_saves`), not by a factor.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fnsft.errors import TrainError
from fnsft.recipe.schema import Recipe
from fnsft.rundir import CHECKPOINTS

#: Filesystems allocate whole blocks: every file is counted rounded up to one.
BLOCK = 4096
#: Small files of one checkpoint besides weights, optimizer and tokenizer, each under 8 KiB measured on the tiny
#: llama (scheduler.pt 1.5 KB, training_args.bin 5.8 KB, PEFT's README.md model card 5.2 KB, adapter_config.json
#: or config.json + generation_config.json ≤ 1.6 KB, fnsft-complete.json 1.4 KB, trainer_state.json without its
#: log ≤ 1 KB, a sharded model's index): 8 files of 8 KiB.
CHECKPOINT_STATE_BYTES = 8 * 8192
#: rng_state.pth (rng_state_RANK.pth with several processes): 14.5 KB measured on CPU; CUDA adds 16 B per device.
RNG_STATE_BYTES = 32 * 1024
#: One log_history entry (trainer_state.json in every checkpoint, metrics.json once): 221-278 B measured.
LOG_ENTRY_BYTES = 512
#: The final adapter/model's README.md and configs; the run's recipe.yaml, manifest.json, metrics.json without its
#: log, checkpoints/README.md (TRL's model card): each under 8 KiB measured (manifest 3.7 KB).
FINAL_SIDE_BYTES = 4 * 8192
RUN_FILE_BYTES = 6 * 8192
#: torch.save writes each optimizer state tensor into optimizer.pt's zip archive as its own record (local and
#: central headers, 64-byte alignment, the pickle's reference): 280 B per tensor measured, counted as 512.
OPTIMIZER_RECORD_BYTES = 512
#: State tensors per parameter: torch AdamW exp_avg, exp_avg_sq, step; bitsandbytes 8-bit two states, two absmax,
#: two code books; Adafactor row and column factors, step, RMS.
OPTIMIZER_RECORDS = {"adamw_8bit": 6, "paged_adamw_8bit": 6, "adafactor": 4, "sgd": 1}
OPTIMIZER_FIXED_BYTES = 4096  # param_groups (hyperparameters, parameter indices), the archive's own records
#: transformers' save_pretrained max_shard_size: bigger models are split, each shard with its own header.
SHARD_BYTES = 50 * 10**9


def _blocks(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


@dataclass(frozen=True)
class SaveSizes:
    """Bytes one save writes, measured from the model, optimizer choice and tokenizer this run will save."""

    weights: int  # the .safetensors file(s): adapter (PEFT) or whole model (full)
    optimizer: int  # optimizer.pt
    tokenizer: int  # the tokenizer files (tokenizer.json, its config, chat_template.jinja, ...)


@dataclass(frozen=True)
class DiskNeed:
    """What a run writes at its peak: ``checkpoints_at_peak`` checkpoints, or one fewer and the final output."""

    weights: int
    optimizer: int
    tokenizer: int
    state_files: int  # per checkpoint: trainer_state.json with its log, rng states, scheduler, args, configs
    checkpoint: int  # one checkpoint: the four above
    saves: int  # checkpoints the run writes
    checkpoints_at_peak: int
    final: int  # adapter/ or model/, and the run's own files (manifest, metrics, recipe)
    peak: int

    def describe(self, final_name: str) -> str:
        """The prediction in a line, saying what it counted."""
        return (
            f"{self.checkpoints_at_peak} checkpoint{'s' if self.checkpoints_at_peak != 1 else ''} of "
            f"{size(self.checkpoint)} (weights {size(self.weights)}, optimizer state {size(self.optimizer)}, "
            f"tokenizer {size(self.tokenizer)}, state files {size(self.state_files)}) and {final_name} with the run's "
            f"files, {size(self.final)}"
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def size(n: int) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def safetensors_bytes(shapes: list[tuple[str, tuple[int, ...], int]]) -> int:
    """Size of a .safetensors file holding tensors (name, shape, nbytes): an 8-byte length, the JSON header
    (bounded: the longest dtype name, every offset with the digits of the largest), padded to 8, then the data."""
    total = sum(nbytes for _, _, nbytes in shapes)
    header = {"__metadata__": {"format": "pt"}} | {
        name: {"dtype": "F8_E4M3", "shape": list(shape), "data_offsets": [total, total]} for name, shape, _ in shapes}
    return 8 + _padded(len(json.dumps(header, separators=(",", ":")))) + total


def _padded(n: int) -> int:
    return -(-n // 8) * 8


def saved_weights_bytes(model: Any, is_peft: bool) -> int:
    """Bytes of the weights ``save_pretrained`` writes for this model, from the state dict it will serialize."""
    if is_peft:
        import warnings

        from peft import get_peft_model_state_dict

        with warnings.catch_warnings():  # "Setting save_embedding_layers to True ...": the save will say it
            warnings.simplefilter("ignore")
            state = get_peft_model_state_dict(model, save_embedding_layers="auto")
        # PEFT clones tensors that share storage before saving (tied embeddings are written twice)
        tensors = [(name, tuple(t.shape), t.numel() * t.element_size()) for name, t in state.items()]
    else:  # transformers drops tied copies: count each storage once
        seen: set[tuple[int, int]] = set()
        tensors = []
        for name, t in model.state_dict().items():
            key = (t.untyped_storage().data_ptr(), t.storage_offset())
            if key in seen:
                continue
            seen.add(key)
            tensors.append((name, tuple(t.shape), t.numel() * t.element_size()))
    data = sum(n for _, _, n in tensors)
    shards = max(1, math.ceil(data / SHARD_BYTES))
    index = 128 * len(tensors) if shards > 1 else 0  # model.safetensors.index.json: a line per tensor
    return safetensors_bytes(tensors) + (shards - 1) * safetensors_bytes([]) + index


def optimizer_file_bytes(optimizer: str, model: Any) -> int:
    """Bytes of optimizer.pt: the states the configured optimizer allocates per trainable tensor (in the tensor's
    dtype for torch AdamW; see fnsft.estimate.memory.optimizer_state_bytes), plus the archive's records."""
    from fnsft.estimate.memory import optimizer_state_bytes

    by_dtype: dict[int, list[int]] = {}
    for p in model.parameters():
        if p.requires_grad:
            by_dtype.setdefault(p.element_size(), []).append(p.numel())
    states = sum(optimizer_state_bytes(optimizer, sizes, value_bytes) for value_bytes, sizes in by_dtype.items())
    tensors = sum(len(sizes) for sizes in by_dtype.values())
    records = tensors * OPTIMIZER_RECORDS.get(optimizer, 3) * OPTIMIZER_RECORD_BYTES
    return states + records + 8 * tensors + OPTIMIZER_FIXED_BYTES


def tokenizer_bytes(tokenizer: Any) -> int:
    """The tokenizer files every save writes, measured by saving the tokenizer once into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="fnsft-tokenizer-") as scratch:
        tokenizer.save_pretrained(scratch)
        return sum(_blocks(f.stat().st_size) for f in Path(scratch).rglob("*") if f.is_file())


def measure_saves(model: Any, tokenizer: Any, optimizer: str, is_peft: bool) -> SaveSizes:
    return SaveSizes(weights=_blocks(saved_weights_bytes(model, is_peft)),
                     optimizer=_blocks(optimizer_file_bytes(optimizer, model)),
                     tokenizer=tokenizer_bytes(tokenizer))


def planned_steps(recipe: Recipe, train_rows: int, world_size: int) -> tuple[int, int]:
    """(optimizer steps, optimizer steps per epoch) of a run, as the trainer counts them."""
    training = recipe.training
    batches = math.ceil(train_rows / (training.per_device_train_batch_size * world_size))
    per_epoch = max(1, math.ceil(batches / training.gradient_accumulation_steps))
    steps = training.max_steps if training.max_steps > 0 else math.ceil(per_epoch * training.num_train_epochs)
    return steps, per_epoch


def predict_disk(recipe: Recipe, sizes: SaveSizes, *, train_rows: int, world_size: int = 1, eval_sets: int = 0
                 ) -> DiskNeed:
    """The disk this run needs at its peak. ``eval_sets``: held-out sets evaluated each time (0 = no eval)."""
    training = recipe.training
    steps, per_epoch = planned_steps(recipe, train_rows, world_size)
    saves = max(1, math.ceil(steps / training.save_steps))  # every save_steps, and always at the end
    evaluations = 0
    if eval_sets:  # before training, every eval_steps (or epoch), after training
        during = steps // training.eval_steps if training.eval_steps else math.ceil(steps / per_epoch)
        evaluations = eval_sets * (during + 2)
    log_entries = steps // training.logging_steps + 2 + evaluations  # + the first step and the final summary
    log = log_entries * LOG_ENTRY_BYTES
    state_files = CHECKPOINT_STATE_BYTES + world_size * RNG_STATE_BYTES + log
    checkpoint = sizes.weights + sizes.optimizer + sizes.tokenizer + state_files
    examples = 10 * 8 * (recipe.data.max_length + recipe.evaluation.max_new_tokens)  # metrics.json's answers
    final = sizes.weights + sizes.tokenizer + FINAL_SIDE_BYTES + RUN_FILE_BYTES + log + examples
    limit = training.save_total_limit
    if limit is None or saves <= limit:
        at_peak, peak = saves, saves * checkpoint + final
    else:  # limit + 1 during a rotation, or limit and the final output after the last one
        at_peak = limit + 1
        peak = max(at_peak * checkpoint, limit * checkpoint + final)
    return DiskNeed(weights=sizes.weights, optimizer=sizes.optimizer, tokenizer=sizes.tokenizer,
                    state_files=state_files, checkpoint=checkpoint, saves=saves, checkpoints_at_peak=at_peak,
                    final=final, peak=peak)


def check_free_disk(root: Path, need: DiskNeed, final_name: str) -> None:
    """Refuse to start a run whose checkpoints would fill the disk (a full disk mid-save tears checkpoints).

    Checkpoints already in the directory (a resumed run) count as part of the need: they are on disk already.
    """
    existing = root / CHECKPOINTS
    already = sum(f.stat().st_size for f in existing.rglob("*") if f.is_file()) if existing.is_dir() else 0
    needed = max(0, need.peak - already)
    free = shutil.disk_usage(root).free
    if free < needed:
        on_disk = f"; {size(already)} of it is already on disk" if already else ""
        raise TrainError(
            f"{root}: {size(free)} free, but this run writes about {size(needed)} at its peak: "
            f"{need.describe(final_name)}{on_disk}. Free some space, lower training.save_total_limit, or choose "
            "another output.dir."
        )
