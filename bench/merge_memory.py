"""Peak RSS of fnsft's streaming LoRA merge vs model size (and vs PEFT's in-memory merge_and_unload).

One command: ``python bench/merge_memory.py [--out bench/results] [--sizes 64,128,256,512] [--shard-mb 64]``.
Each measurement runs in a fresh subprocess that samples its RSS (psutil, every 2 ms) during the merge and
reports the peak above the RSS just before it (the imports' own transient peak would hide a small merge). Writes
merge_memory.json and merge_memory.png. Models are random llama shapes (fp32) with a rank-16 adapter on every
linear projection; sizes are hidden widths.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, threading, time
import psutil
mode, base, adapter, target, shard = sys.argv[1:6]
import torch, safetensors, transformers, peft  # imported before the baseline is taken
from pathlib import Path
from fnsft.export.merge import merge_lora
from peft import PeftModel
from transformers import AutoModelForCausalLM
process, samples, done = psutil.Process(), [], threading.Event()
def sample():  # the interpreter's import peak is larger than a small merge: sample RSS during the merge only
    while not done.is_set():
        samples.append(process.memory_info().rss)
        time.sleep(0.002)
start = process.memory_info().rss
sampler = threading.Thread(target=sample)
sampler.start()
if mode == "streaming":
    merge_lora(Path(base), Path(adapter), Path(target), max_shard_bytes=int(shard))
elif mode == "peft":
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    model.merge_and_unload().save_pretrained(target)
done.set()
sampler.join()
print(json.dumps({"peak_rss_bytes": max(samples + [start]) - start}))
"""


def build(root: Path, hidden: int) -> tuple[Path, Path, int]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    base, adapter = root / f"base-{hidden}", root / f"adapter-{hidden}"
    config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=8,
                         num_attention_heads=max(hidden // 64, 1), num_key_value_heads=max(hidden // 64, 1),
                         vocab_size=32000, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    peft_model.save_pretrained(adapter)
    size = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    return base, adapter, size


def measure(mode: str, base: Path, adapter: Path, target: Path, shard: int) -> int:
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(base), str(adapter), str(target), str(shard)],
                            capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--sizes", default="256,512,768,1024", help="hidden widths (8 layers, vocab 32000)")
    parser.add_argument("--shard-mb", type=int, default=64, help="max merged shard size in MB (files, not memory)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shard = args.shard_mb * 1000**2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for hidden in (int(s) for s in args.sizes.split(",")):
            base, adapter, size = build(root, hidden)
            from fnsft.export.merge import weight_entries

            row = {"hidden": hidden, "model_bytes": size,
                   "largest_tensor_bytes": max(entry.nbytes for entry in weight_entries(base)),
                   "adapter_bytes": (adapter / "adapter_model.safetensors").stat().st_size}
            for mode in ("streaming", "peft"):
                row[f"{mode}_peak_bytes"] = measure(mode, base, adapter, root / f"out-{mode}-{hidden}", shard)
            rows.append(row)
            print(json.dumps(row))
    result = {"max_shard_bytes": shard, "rows": rows}
    (out / "merge_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mib = 1024**2
    sizes = [r["model_bytes"] / mib for r in rows]
    plt.figure(figsize=(6, 4))
    plt.plot(sizes, [r["streaming_peak_bytes"] / mib for r in rows], "o-", label="fnsft tensor-at-a-time")
    plt.plot(sizes, [r["peft_peak_bytes"] / mib for r in rows], "s-", label="PEFT merge_and_unload")
    plt.plot(sizes, sizes, ":", color="gray", label="model size")
    plt.plot(sizes, [r["largest_tensor_bytes"] / mib for r in rows], "--", color="gray", label="largest tensor")
    plt.xlabel("model size (MiB, fp32 safetensors)")
    plt.ylabel("peak RSS during the merge, above its start (MiB)")
    plt.title("LoRA merge peak memory")
    plt.legend()
    plt.tight_layout()
    plt.savefig(out / "merge_memory.png", dpi=120)


if __name__ == "__main__":
    main()
