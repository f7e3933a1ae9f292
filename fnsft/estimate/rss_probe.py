"""Measure the peak RSS of a real TRL SFTTrainer run on CPU (ground truth for ``--device cpu`` estimates).

Run as ``python -m fnsft.estimate.rss_probe --model DIR --method lora|full --batch-size B --seq-len S
[--gradient-checkpointing] [--steps N]``; prints one JSON line with ``baseline_rss`` (after importing the
training stack and loading the tokenizer and dataset, before the model), ``loaded_rss`` (after loading the model)
and ``peak_rss`` (ru_maxrss at the end), all peaks so far in bytes.
Every example is long enough to be truncated to exactly ``seq_len`` tokens, matching the estimator's full
``batch × seq_len`` rectangle. It runs in its own process so that nothing else inflates the peak.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fnsft.estimate.rss_probe")
    parser.add_argument("--model", required=True)
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, int]:
    """Train for a few steps and return {"baseline_rss", "peak_rss"} in bytes."""
    args = _arguments(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from fnsft.estimate.measure import peak_rss_bytes

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "seven", "wizards", "quietly", "hex", "jumbo", "bags"]
    rows = [{"text": " ".join(words[(i + j) % len(words)] for j in range(4 * args.seq_len))}
            for i in range(args.batch_size * args.steps)]
    dataset = Dataset.from_list(rows)
    baseline = peak_rss_bytes()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="sdpa")
    loaded = peak_rss_bytes()
    peft_config = None
    if args.method == "lora":
        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.05,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory() as output_dir:
        config = SFTConfig(
            output_dir=output_dir, use_cpu=True, bf16=False, fp16=False, optim="adamw_torch",
            per_device_train_batch_size=args.batch_size, max_steps=args.steps, max_length=args.seq_len,
            packing=False, gradient_checkpointing=args.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False}, report_to="none", save_strategy="no",
            logging_steps=1, dataloader_num_workers=0, disable_tqdm=True, seed=0,
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)
        trainer.train()
    return {"baseline_rss": baseline, "loaded_rss": loaded, "peak_rss": peak_rss_bytes()}


def measure_training_rss(model: str, method: str, batch_size: int, seq_len: int, gradient_checkpointing: bool,
                         steps: int = 3, lora_r: int = 16, threads: int = 1) -> dict[str, int]:
    """Run :func:`main` in a fresh subprocess and return its JSON result."""
    command = [sys.executable, "-m", "fnsft.estimate.rss_probe", "--model", str(model), "--method", method,
               "--batch-size", str(batch_size), "--seq-len", str(seq_len), "--steps", str(steps),
               "--lora-r", str(lora_r)]
    if gradient_checkpointing:
        command.append("--gradient-checkpointing")
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(main()))
