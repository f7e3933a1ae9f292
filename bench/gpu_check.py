"""GPU validation plan (../shared/gpu/README.md) in one script: estimator vs measured CUDA memory, throughput of
fnsft's trainer vs plain TRL, and QLoRA on CUDA through `fnsft train`. No network; random weights.

On a task lent the H200 (see the device tool's README), after `bash bench/gpu_wheels.sh` here:

    run(carry=[".whl"], timeout_s=560, command="python3 -m pip install -q --no-index --no-deps --no-compile
        --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site
        PYTHONUNBUFFERED=1 && python3 bench/gpu_check.py --out $OUT --budget-s 470 2>&1 | tee $OUT/log")

then copy the returned files into bench/results/gpu/ and commit them. ``--smoke`` runs the same code on CPU with a
tiny model (what the slow test does), so the script cannot rot between GPU tasks.

1. Memory: models of real shapes (catalog: Llama-3.2-1B, Llama-3.1-8B, Qwen2.5-7B) built with random weights
   directly on the GPU, trained for 3 steps by TRL's SFTTrainer configured exactly as `fnsft train` configures it
   (fnsft.train.build), every example exactly seq_len tokens. Recorded: max_memory_allocated, max_memory_reserved
   and the device memory in use (context included) beside `fnsft estimate`'s breakdown for the same settings.
   QLoRA points load a saved copy through bitsandbytes (4-bit nf4), as training does.
2. Throughput: tokens/s and model FLOPs utilisation of fnsft's configuration vs TRL's defaults, then with the speed
   options (packing with padding-free batches, Liger kernels, fused AdamW).
3. QLoRA through `fnsft train` itself (recipe, data file, run directory, manifest with predicted vs measured peak).

Points run most valuable first and stop when --budget-s is spent; results are written after every point
(gpu_check.json, a CSV, and gpu_check.png at the end), so a run cut short still reports what it measured.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # fnsft from this checkout, wherever it runs

#: H200 dense bf16 peak from the data sheet (989 TFLOP/s); the workplace measured ~790 TFLOP/s on 8192³ matmuls.
PEAK_BF16_FLOPS = 989e12
MEASURED_MATMUL_FLOPS = 790e12
SMOKE_SHAPE = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, vocab_size=512, max_position_embeddings=256)


@dataclass(frozen=True)
class MemoryPoint:
    model: str  # catalog name
    method: str
    batch: int
    seq: int
    checkpointing: bool
    optimizer: str = "adamw_torch"


def memory_grid(smoke: bool) -> list[MemoryPoint]:
    """Most valuable first: the 1B grid covers every method × shape × checkpointing, then the 7-8B shapes."""
    if smoke:
        return [MemoryPoint("smoke", method, 2, 64, ckpt) for method in ("lora", "full", "qlora") for ckpt in (False, True)]
    small = "meta-llama/Llama-3.2-1B"
    points = [MemoryPoint(small, method, batch, seq, ckpt)
              for method in ("lora", "qlora", "full") for batch, seq in ((4, 512), (8, 2048)) for ckpt in (True, False)]
    for name in ("meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-7B"):
        points += [MemoryPoint(name, "lora", 4, 1024, ckpt) for ckpt in (True, False)]
        points += [MemoryPoint(name, "qlora", 4, 1024, True)]
    points.append(MemoryPoint("meta-llama/Llama-3.1-8B", "full", 2, 1024, True))
    return points


def environment(device: str) -> dict:
    import importlib.metadata as metadata

    import torch

    facts = {"python": platform.python_version(), "device": device, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "liger-kernel",
                    "pydantic", "triton"):
        try:
            facts[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            facts[package] = None
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
        try:
            facts["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                             capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            facts["driver"] = None
    return facts


def make_tokenizer(target: Path):
    """A byte-level BPE tokenizer trained here (no hub): token ids stay far below every model's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([" ".join(WORDS)] * 8, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.save_pretrained(target)
    return tokenizer


WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "seven", "wizards", "quietly",
         "hex", "jumbo", "bags", "of", "mixed", "grain"]


def text_rows(count: int, seq: int) -> list[dict]:
    """Rows long enough to be truncated to exactly ``seq`` tokens (the estimator's full batch × seq rectangle)."""
    return [{"text": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(2 * seq))} for i in range(count)]


def recipe_for(point: MemoryPoint, output_dir: Path, steps: int, **training):
    from fnsft.recipe.schema import Recipe

    return Recipe.model_validate({
        "model": {"name_or_path": point.model},
        "data": {"path": "synthetic.jsonl", "max_length": point.seq, "validation_fraction": 0},
        "method": {"name": point.method},
        "training": {"per_device_train_batch_size": point.batch, "gradient_checkpointing": point.checkpointing,
                     "max_steps": steps, "optimizer": point.optimizer, "logging_steps": 1, **training},
        "output": {"dir": str(output_dir)},
    }).resolved()


def model_config(name: str):
    from transformers import AutoConfig

    from fnsft.estimate.catalog import CATALOG

    shape = dict(SMOKE_SHAPE if name == "smoke" else CATALOG[name])
    return AutoConfig.for_model(shape.pop("model_type"), **shape)


def estimator_shape(name: str):
    """What `fnsft estimate` knows about the model: the catalog entry, or the smoke shape."""
    from fnsft.estimate.arch import shape_from_config

    return name if name != "smoke" else shape_from_config(dict(SMOKE_SHAPE), "smoke", "gpu_check")


def build_model(point: MemoryPoint, recipe, device: str, saved: dict[str, Path], scratch: Path):
    """Random weights of the point's shape, in the dtype training would load (QLoRA: via a saved copy, 4-bit)."""
    import torch
    from transformers import AutoModelForCausalLM

    from fnsft.train.build import quantization_config, resolve_precision, torch_dtype

    precision = resolve_precision(recipe.training.precision)
    config = model_config(point.model)
    if point.method != "qlora":
        with torch.device(device):
            return AutoModelForCausalLM.from_config(config, dtype=torch_dtype(precision), attn_implementation="sdpa")
    if point.model not in saved:  # bitsandbytes quantizes while loading, so the weights go to disk once
        path = scratch / point.model.replace("/", "--")
        with torch.device(device):
            AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(path)
        empty_device_cache(device)
        saved[point.model] = path
    return AutoModelForCausalLM.from_pretrained(
        saved[point.model], dtype=torch_dtype(precision), attn_implementation="sdpa",
        quantization_config=quantization_config(recipe, precision), device_map={"": 0} if device == "cuda" else None)


def empty_device_cache(device: str) -> None:
    """Collect what the last point dropped, hand its cached blocks back and restart the peak counters."""
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def step_timer(device: str):
    """A trainer callback recording the wall-clock time of each optimizer step (synchronised), for tokens/s."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize(device)
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(device)
            self.times.append(time.perf_counter() - self.started)

    return StepTimer()


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def train_steps(model, recipe, tokenizer, rows: list[dict], output_dir: Path, device: str, *,
                fnsft_config: bool = True, extra_args: dict | None = None):
    """SFTTrainer with fnsft's SFTConfig/LoRA config (or TRL's defaults for the comparison); returns the timer."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from fnsft.train.build import lora_config, resolve_precision, sft_config

    precision = resolve_precision(recipe.training.precision)
    if fnsft_config:
        args = sft_config(recipe, output_dir, precision, has_eval=False, callbacks_report=[])
        args.save_strategy = "no"
    else:
        args = SFTConfig(output_dir=str(output_dir), per_device_train_batch_size=recipe.training.per_device_train_batch_size,
                         max_steps=recipe.training.max_steps, max_length=recipe.data.max_length, bf16=precision == "bf16",
                         use_cpu=device == "cpu", report_to="none", save_strategy="no",
                         activation_checkpointing=recipe.training.gradient_checkpointing)
    for key, value in (extra_args or {}).items():
        setattr(args, key, value)
    timer = step_timer(device)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora_config(recipe), callbacks=[timer])
    trainer.remove_callback(PrinterCallback)  # raw log dicts; the results are printed once per point instead
    trainer.train()
    del trainer
    return timer


def measure_memory(point: MemoryPoint, device: str, tokenizer, saved: dict, scratch: Path) -> dict:
    import torch

    from fnsft.estimate import estimate, inputs_from_recipe
    from fnsft.train.callbacks import measured_peak_memory

    recipe = recipe_for(point, scratch / "run", steps=3)
    empty_device_cache(device)
    before = torch.cuda.memory_allocated() if device == "cuda" else 0
    model = build_model(point, recipe, device, saved, scratch)
    train_steps(model, recipe, tokenizer, text_rows(3 * point.batch, point.seq), scratch / "run", device)
    measured = measured_peak_memory()
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        measured["device_used"] = total - free  # context + reserved (+ anything else on the card)
    del model
    empty_device_cache(device)
    breakdown = estimate(inputs_from_recipe(recipe, model=estimator_shape(point.model), device=device))
    predicted_allocated = breakdown.total - breakdown.overhead
    row = {"kind": "memory", **point.__dict__, "allocated_before": before, **measured,
           "predicted_total": breakdown.total, "predicted_allocated": predicted_allocated,
           "breakdown": breakdown.model_dump(mode="json")}
    if device == "cuda":
        row["allocated_error"] = measured["max_memory_allocated"] / predicted_allocated - 1
        row["total_error"] = measured["device_used"] / breakdown.total - 1
        row["fragmentation"] = measured["max_memory_reserved"] / measured["max_memory_allocated"] - 1
    return row


def measure_throughput(device: str, tokenizer, scratch: Path, smoke: bool) -> list[dict]:
    """fnsft's trainer configuration vs TRL's defaults, then the speed options, on one LoRA shape."""
    import importlib.util

    from fnsft.estimate import estimate, inputs_from_recipe

    model_name = "smoke" if smoke else "meta-llama/Llama-3.2-1B"
    point = MemoryPoint(model_name, "lora", 2 if smoke else 8, 64 if smoke else 2048, True)
    steps, warmup = (3, 1) if smoke else (12, 3)
    variants = [("trl-defaults", False, {}), ("fnsft", True, {}),
                ("fnsft+packing+padding_free", True, {"packing": True, "padding_free": True}),
                ("fnsft+fused-adamw", True, {"optim": "adamw_torch_fused"})]
    if importlib.util.find_spec("liger_kernel") is not None and device == "cuda":
        variants.append(("fnsft+liger", True, {"use_liger_kernel": True}))
    rows = []
    for label, fnsft_config, extra in variants:
        recipe = recipe_for(point, scratch / "run", steps=steps)
        model = build_model(point, recipe, device, {}, scratch)
        shape = model_config(model_name)
        params = sum(p.numel() for p in model.parameters())
        timer = train_steps(model, recipe, tokenizer, text_rows(steps * point.batch, point.seq), scratch / "run",
                            device, fnsft_config=fnsft_config, extra_args=extra)
        del model
        empty_device_cache(device)
        timed = timer.times[warmup:]
        tokens_per_s = point.batch * point.seq * len(timed) / sum(timed)
        # LoRA: forward 2N + backward through activations 2N per token (frozen weights get no gradient) plus the
        # causal attention scores/values (12·L·h·s/2 per token across forward and backward).
        flops_per_token = 4 * params + 6 * shape.num_hidden_layers * shape.hidden_size * point.seq
        rows.append({"kind": "throughput", "variant": label, "model": model_name, "batch": point.batch,
                     "seq": point.seq, "steps_timed": len(timed), "step_s_median": sorted(timed)[len(timed) // 2],
                     "tokens_per_s": tokens_per_s, "model_flops_per_token": flops_per_token,
                     "mfu_vs_datasheet": tokens_per_s * flops_per_token / PEAK_BF16_FLOPS if device == "cuda" else None,
                     "mfu_vs_measured_matmul": tokens_per_s * flops_per_token / MEASURED_MATMUL_FLOPS
                     if device == "cuda" else None,
                     "predicted_total": estimate(inputs_from_recipe(recipe, model=estimator_shape(model_name),
                                                                    device=device)).total})
    return rows


def qlora_through_fnsft_train(device: str, scratch: Path, smoke: bool) -> dict:
    """A real `fnsft train` run (recipe → run directory → manifest) of QLoRA on a saved random model."""
    import torch
    from transformers import AutoModelForCausalLM

    from fnsft.recipe.schema import Recipe
    from fnsft.train.run import run_training

    name = "smoke" if smoke else "meta-llama/Llama-3.2-1B"
    base = scratch / "qlora-base"
    with torch.device(device):
        AutoModelForCausalLM.from_config(model_config(name), dtype=torch.bfloat16).save_pretrained(base)
    make_tokenizer(base)
    empty_device_cache(device)
    data = scratch / "qlora-data.jsonl"
    seq = 64 if smoke else 1024
    data.write_text("".join(json.dumps({"instruction": "Continue the list.", "output": row["text"]}) + "\n"
                            for row in text_rows(64, seq)))  # responses longer than max_length: full batches
    recipe = Recipe.model_validate({
        "model": {"name_or_path": str(base)},
        "data": {"path": str(data), "max_length": seq, "validation_fraction": 0},
        "method": {"name": "qlora"},
        "training": {"per_device_train_batch_size": 2 if smoke else 8, "max_steps": 2 if smoke else 6,
                     "logging_steps": 1, "save_steps": 1000},
        "evaluation": {"exact_match_samples": 0},
        "output": {"dir": str(scratch / "qlora-run")},
    }).resolved()
    started = time.perf_counter()
    result = run_training(recipe)
    memory = result.manifest["memory"]
    return {"kind": "qlora-fnsft-train", "model": name, "wall_s": time.perf_counter() - started,
            "train_loss": result.metrics.get("train_loss"), "measured": memory["measured"],
            "predicted_total": memory["predicted"]["total_bytes"] if memory["predicted"] else None}


def write_results(out: Path, facts: dict, rows: list[dict], skipped: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps({"environment": facts, "rows": rows, "skipped": skipped}, indent=2))
    memory = [row for row in rows if row["kind"] == "memory"]
    if memory:
        columns = ["model", "method", "batch", "seq", "checkpointing", "max_memory_allocated", "predicted_allocated",
                   "allocated_error", "max_memory_reserved", "fragmentation", "device_used", "predicted_total",
                   "total_error", "peak_rss"]
        with (out / "gpu_check_memory.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(memory)


def plot(out: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    memory = [row for row in rows if row["kind"] == "memory" and "max_memory_allocated" in row]
    throughput = [row for row in rows if row["kind"] == "throughput"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    gib = 1 << 30
    for method, marker in (("lora", "o"), ("qlora", "s"), ("full", "^")):
        chosen = [row for row in memory if row["method"] == method]
        left.plot([row["predicted_allocated"] / gib for row in chosen],
                  [row["max_memory_allocated"] / gib for row in chosen], marker, label=method)
    if memory:
        top = max(max(row["predicted_allocated"], row["max_memory_allocated"]) for row in memory) / gib
        left.plot([0, top], [0, top], ":", color="gray", label="measured = predicted")
    left.set_xlabel("fnsft estimate, allocated part (GiB)")
    left.set_ylabel("torch.cuda.max_memory_allocated (GiB)")
    left.set_title("memory: estimate vs 3 real training steps")
    left.legend()
    right.barh([row["variant"] for row in throughput], [row["tokens_per_s"] for row in throughput])
    right.set_xlabel("tokens/s")
    right.set_title("throughput, LoRA")
    figure.tight_layout()
    figure.savefig(out / "gpu_check.png", dpi=120)
    plt.close(figure)


def print_table(rows: list[dict]) -> None:
    gib = 1 << 30
    print("\nkind        point                                     measured    predicted   error")
    for row in rows:
        if row["kind"] == "memory" and "max_memory_allocated" in row:
            label = f"{row['model'].split('/')[-1]} {row['method']} b{row['batch']} s{row['seq']} ckpt={row['checkpointing']}"
            print(f"memory      {label:<41} {row['max_memory_allocated'] / gib:7.2f} GiB {row['predicted_allocated'] / gib:7.2f} GiB "
                  f"{100 * row['allocated_error']:+6.1f} %")
        elif row["kind"] == "throughput":
            print(f"throughput  {row['variant']:<41} {row['tokens_per_s']:9.0f} tok/s")
        elif row["kind"] == "qlora-fnsft-train":
            print(f"fnsft train qlora {row['model']:<35} {json.dumps(row['measured'])} predicted {row['predicted_total']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu")
    parser.add_argument("--budget-s", type=float, default=470, help="stop starting new points after this many seconds")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model: checks the script, measures nothing")
    args = parser.parse_args()
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from fnsft.quiet import quiet_libraries

    quiet_libraries()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        print("gpu_check: no CUDA device here, nothing measured (--smoke checks the script on CPU)")
        return
    facts = environment(device)
    print(json.dumps(facts), flush=True)
    rows: list[dict] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        scratch = Path(tmp)
        tokenizer = make_tokenizer(scratch / "tokenizer")
        saved: dict[str, Path] = {}
        jobs = [(f"memory {p.model} {p.method} b{p.batch} s{p.seq} ckpt={p.checkpointing}",
                 lambda p=p: [measure_memory(p, device, tokenizer, saved, scratch)]) for p in memory_grid(args.smoke)]
        jobs.insert(min(6, len(jobs)), ("throughput", lambda: measure_throughput(device, tokenizer, scratch, args.smoke)))
        jobs.insert(min(7, len(jobs)), ("qlora via fnsft train", lambda: [qlora_through_fnsft_train(device, scratch, args.smoke)]))
        for label, job in jobs:
            if time.perf_counter() - started > args.budget_s:
                skipped.append(f"{label}: time budget spent")
                continue
            try:
                for row in job():
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "breakdown"}), flush=True)
            except Exception as error:  # one failed point (e.g. out of memory) must not lose the others
                rows.append({"kind": "error", "point": label, "error": f"{type(error).__name__}: {error}"[:2000],
                             "traceback": traceback.format_exc()[-3000:]})
                print(f"FAILED {label}: {type(error).__name__}: {error}", flush=True)
                empty_device_cache(device)
            write_results(args.out, facts, rows, skipped)
    write_results(args.out, facts, rows, skipped)
    plot(args.out, rows)
    print_table(rows)
    print(f"\n{len(rows)} results, {len(skipped)} skipped, {time.perf_counter() - started:.0f} s; see {args.out}")


if __name__ == "__main__":
    main()
