"""`fnsft export RUN_DIR`: merged safetensors and GGUF files written by fnsft itself (nothing compiled at run time).

Thin: the work is in :mod:`fnsft.export.pipeline` (imported inside the command, so `--help` stays fast).
"""

from __future__ import annotations

from pathlib import Path

import typer

#: Exit status when the export was written but failed its verification (bad input stays 2).
VERIFY_FAILED = 1


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
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Afterwards compare every export with the model "
                                "it came from on held-out examples and check its tokenizer metadata; exit 1 on a "
                                "failed check (report in exports/verify.json)."),
    verify_data: Path | None = typer.Option(None, "--verify-data", help="Examples (any training data format) to "
                                            "verify on instead of the run's eval split."),
    base_model_id: str | None = typer.Option(
        None, "--base-model-id", help="Hub id of the base model, named in the merged model's card and the GGUF "
        "metadata (default: the one recorded at training, e.g. a packaged GGUF's original; a local base has none)."),
) -> None:
    """Merge a LoRA run into its base model and/or write GGUF files into RUN_DIR/exports/."""
    from rich.table import Table

    from fnsft.console import err, out
    from fnsft.export.files import human_size, parse_size
    from fnsft.export.pipeline import export_run

    result = export_run(
        run_dir, merge=merge, gguf_types=gguf, max_shard_bytes=parse_size(max_shard_size),
        llama_quantize=llama_quantize, modelfile=modelfile, verify=verify, verify_data=verify_data,
        base_model_id=base_model_id,
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
    if result.verification is not None:
        from fnsft.export.verify_table import verification_tables

        for renderable in verification_tables(result.verification):
            out.print(renderable)
        if not result.verification.passed:
            failed = [check for check in result.verification.checks if not check.passed]
            for check in failed:
                err.print(f"[red]FAILED[/] {check.subject} {check.name}: {check.detail}", highlight=False)
            raise typer.Exit(VERIFY_FAILED)
