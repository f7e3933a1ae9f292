"""`fnsft export RUN_DIR`: merged safetensors and GGUF files written by fnsft itself (nothing compiled at run time).

Thin: the work is in :mod:`fnsft.export.pipeline` (imported inside the command, so `--help` stays fast).
"""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run_dir: Path = typer.Argument(..., help="A finished run directory (written by `fnsft train`)."),
    merge: bool = typer.Option(False, "--merge", help="Write exports/merged/: the LoRA adapter merged into the base."),
    gguf: list[str] = typer.Option(
        [], "--gguf", help="GGUF type to write; repeat for several: f32, f16, bf16, q8_0, q4_0, q2_k, q3_k_s, "
        "q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k (all written by fnsft, no llama.cpp needed).",
    ),
    max_shard_size: str = typer.Option("2GB", "--max-shard-size", help="Largest merged safetensors shard "
                                       "(the merge itself holds one tensor at a time)."),
    llama_quantize: str | None = typer.Option(None, "--llama-quantize", help="Make the K-quants with llama.cpp's "
                                              "llama-quantize (a path or a name on PATH) instead of fnsft's own "
                                              "encoder (optional; never downloaded)."),
    modelfile: bool = typer.Option(True, "--modelfile/--no-modelfile", help="Write an Ollama Modelfile beside the GGUF."),
) -> None:
    """Merge a LoRA run into its base model and/or write GGUF files into RUN_DIR/exports/."""
    from rich.table import Table

    from fnsft.console import err, out
    from fnsft.export.files import human_size, parse_size
    from fnsft.export.pipeline import export_run

    result = export_run(
        run_dir, merge=merge, gguf_types=gguf, max_shard_bytes=parse_size(max_shard_size),
        llama_quantize=llama_quantize, modelfile=modelfile,
    )
    table = Table(title=f"fnsft export: {run_dir}")
    table.add_column("file (in RUN_DIR)")
    table.add_column("size", justify="right")
    for item in result.files:
        table.add_row(item.path.relative_to(run_dir).as_posix(), human_size(item.size))
    table.add_row("[bold]total[/]", f"[bold]{human_size(sum(item.size for item in result.files))}[/]")
    out.print(table)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
