"""What the checkpoint content digests cost: writing the completion marker (SHA-256 of every checkpoint file) and
verifying it on resume, against the time to write the checkpoint's bytes in the first place.

One command: ``python bench/checkpoint_digest.py [--out bench/results] [--sizes-mb 16,64,256,1024]``.
Each size is one checkpoint directory holding an "optimizer.pt" of that many random bytes (fsynced, as the
Trainer's save is followed by fnsft's atomic marker). Writes checkpoint_digest.json and checkpoint_digest.png.
Reading back just-written files comes from the page cache; a cold resume reads at disk speed, which is the
lower bound of any resume anyway (torch.load reads the same bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from fnsft.train.outdir import checkpoint_problem, write_completion_marker


def measure(size_mb: int, root: Path) -> dict[str, float]:
    checkpoint = root / f"checkpoint-{size_mb}"
    checkpoint.mkdir()
    block = os.urandom(1 << 20)
    started = time.perf_counter()
    with (checkpoint / "optimizer.pt").open("wb") as handle:
        for _ in range(size_mb):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    write_completion_marker(checkpoint)
    marker_s = time.perf_counter() - started
    started = time.perf_counter()
    checkpoint_problem(checkpoint, verify_contents=True)
    verify_s = time.perf_counter() - started
    return {"size_mb": size_mb, "write_s": write_s, "marker_s": marker_s, "verify_s": verify_s,
            "hash_gb_per_s": size_mb / 1024 / marker_s, "marker_over_write": marker_s / write_s}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size_mb"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("write_s", "write + fsync"), ("marker_s", "marker (SHA-256 of every file)"),
                       ("verify_s", "verify on resume")):
        ax.plot(sizes, [r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("checkpoint size (MB)")
    ax.set_ylabel("seconds")
    ax.set_title("checkpoint content digests: cost vs writing the checkpoint")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--sizes-mb", default="16,64,256,1024")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes_mb.split(",")]
    with tempfile.TemporaryDirectory(prefix="fnsft-digest-", dir=args.out.parent if args.out.parent.is_dir() else None) as tmp:
        rows = [measure(size, Path(tmp)) for size in sizes]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checkpoint_digest.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    plot(rows, args.out / "checkpoint_digest.png")
    for row in rows:
        print(f"{row['size_mb']:>6} MB  write {row['write_s']:.2f}s  marker {row['marker_s']:.2f}s "
              f"({row['hash_gb_per_s']:.2f} GB/s)  verify {row['verify_s']:.2f}s  marker/write {row['marker_over_write']:.2f}")


if __name__ == "__main__":
    main()
