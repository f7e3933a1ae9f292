"""`fnsft export` as a library call: run directory in, files under RUN_DIR/exports/ out.

Order matters for the user's time: every check that can fail (finished run, architecture, rope scaling, quant
types, an asked-for llama-quantize, disk space) runs before the first byte of merge work.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from fnsft.atomic import atomic_write_text, remove_leftovers
from fnsft.errors import ExportError
from fnsft.export.card import base_model_info, model_card, ollama_modelfile, resolve_base_model_id
from fnsft.export.files import OutputFile, ensure_free_space, list_files
from fnsft.export.gguf import (
    LLAMA_QUANTIZE_TYPES,
    GgufMetadata,
    check_exportable,
    estimate_gguf_bytes,
    find_llama_quantize,
    quantize_with_llama_cpp,
    write_gguf,
)
from fnsft.export.gguf_vocab import read_tokenizer_json, tokenizer_family
from fnsft.export.merge import DEFAULT_MAX_SHARD_BYTES, merge_lora, weight_entries
from fnsft.export.verify import VERIFY_JSON, VerifyReport, verify_exports
from fnsft.quiet import quiet_libraries
from fnsft.recipe.schema import Recipe
from fnsft.rundir import RunDir

MERGED = "merged"
MODELFILE = "Modelfile"


class ExportResult(BaseModel):
    """What an export wrote, and anything the user should know about it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    files: list[OutputFile] = []
    notes: list[str] = []
    verification: VerifyReport | None = None


def open_run(path: str | Path) -> tuple[RunDir, Recipe, dict[str, Any]]:
    """A finished run directory with its resolved recipe and manifest, or an ExportError saying what is missing."""
    from fnsft.manifest import read_manifest
    from fnsft.recipe.load import load_recipe

    run = RunDir.at(path)
    if not run.root.is_dir():
        raise ExportError(f"{run.root}: no such run directory")
    if not run.recipe.is_file():
        raise ExportError(f"{run.root}: no {run.recipe.name}; is this a run directory written by `fnsft train`?")
    if not run.is_finished():
        raise ExportError(f"{run.root}: the run is not finished (needs manifest.json and adapter/ or model/)")
    recipe = load_recipe(run.recipe)
    manifest = read_manifest(run)
    if recipe.method.is_peft and not run.adapter.is_dir():
        raise ExportError(f"{run.root}: a {recipe.method.name} run without adapter/")
    if not recipe.method.is_peft and not run.model.is_dir():
        raise ExportError(f"{run.root}: a full fine-tuning run without model/")
    return run, recipe, manifest


def base_model_dir(recipe: Recipe) -> Path:
    """A local directory with the base model's safetensors (a GGUF base is dequantized into the cache once)."""
    from fnsft.models import pretrained_path, resolve_model

    source = resolve_model(recipe.model)
    if source.kind != "hub":
        return Path(pretrained_path(source))
    from huggingface_hub import snapshot_download

    try:  # offline (HF_HUB_OFFLINE=1) this only looks in the Hub cache
        return Path(snapshot_download(
            recipe.model.name_or_path, revision=recipe.model.revision,
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"],
        ))
    except Exception as exc:  # noqa: BLE001 - any hub/network failure becomes one readable line
        raise ExportError(f"{recipe.model.name_or_path}: cannot get the base model weights: {exc}") from None


def _base_gguf_pre(recipe: Recipe) -> str | None:
    """A GGUF base already names its pre-tokenizer; the dequantized tokenizer.json may no longer show it."""
    from fnsft.models import resolve_model

    source = resolve_model(recipe.model)
    if source.kind != "gguf":
        return None
    from fnsft.estimate.gguf_shape import config_from_gguf

    return config_from_gguf(Path(source.identity["file"])).get("fnsft_tokenizer_pre")


def _model_config(run: RunDir, recipe: Recipe):
    """The config of the model being exported, read without loading weights (GGUF bases: from metadata)."""
    if not recipe.method.is_peft:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(run.model)
    from fnsft.models import load_config, resolve_model

    return load_config(resolve_model(recipe.model), recipe.model)


def artifact_stem(run: RunDir, recipe: Recipe) -> str:
    """File-name stem for GGUF files: the run name, made safe for every file system and Hub path."""
    name = recipe.output.run_name or run.root.resolve().name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


#: Temporary names an export killed mid-write leaves in RUN_DIR/exports (fnsft.atomic staging, K-quant input).
EXPORT_STAGING = (".*.tmp-*", ".*.tmp", ".*.old-*", ".*.f16.gguf")


def remove_export_staging(run: RunDir) -> None:
    """Delete what a killed export left half-written (a 250 MB merged staging dir is typical)."""
    from fnsft.console import warn

    for name in remove_leftovers(run.exports, EXPORT_STAGING):
        warn(f"removed {name}, left by an interrupted export")


def export_run(
    run_path: str | Path,
    *,
    merge: bool = False,
    gguf_types: list[str] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    llama_quantize: str | None = None,
    modelfile: bool = True,
    verify: bool = False,
    verify_data: Path | None = None,
    base_model_id: str | None = None,
) -> ExportResult:
    """Merge and/or write GGUF files for a finished run into RUN_DIR/exports/.

    Args:
        run_path: the run directory.
        merge: write exports/merged/ (LoRA merged into the base; a full run is already a full model).
        gguf_types: GGUF types to write, e.g. ["f16", "q8_0"]; a PEFT run is merged first.
        max_shard_bytes: maximum size of each merged safetensors shard.
        llama_quantize: llama.cpp's llama-quantize (path or name on PATH) to make the K-quants with instead of
            fnsft's own encoder; None (the default) needs no llama.cpp at all.
        modelfile: write an Ollama Modelfile beside the first GGUF.
        verify: afterwards, compare the exports with the model they came from and check their metadata
            (:mod:`fnsft.export.verify`; the CLI does it by default); the report is ``result.verification``.
        verify_data: examples to verify on instead of the run's eval split.
        base_model_id: the base model's Hub id for the merged model's card and the GGUF metadata (default: the
            manifest's, see :func:`fnsft.export.card.resolve_base_model_id`); unknown, they name no base model rather
            than a path on this machine.

    Returns:
        The files written, notes for the user and the verification report.
    """
    started = time.perf_counter()
    quiet_libraries()  # transformers' "Loading weights" bars and deprecation warnings would cut through the tables
    gguf_types = list(dict.fromkeys(t.lower() for t in gguf_types or []))
    if not merge and not gguf_types:
        raise ExportError("nothing to export: give --merge and/or --gguf TYPE")
    run, recipe, manifest = open_run(run_path)
    base_id = resolve_base_model_id(run, recipe, manifest, base_model_id, required=False)
    remove_export_staging(run)
    result = ExportResult()
    if base_id is None:
        result.notes.append(f"the base model {recipe.model.name_or_path} has no Hub id, so the exports name no base "
                            "model; pass --base-model-id OWNER/NAME (the Hub model it was trained from) to name it")
    if gguf_types:
        check_exportable(_model_config(run, recipe), gguf_types, llama_quantize)
    peft = recipe.method.is_peft
    base_dir = base_model_dir(recipe) if peft else run.model
    if gguf_types:  # an unwritable tokenizer fails here, before any merge work (the run's tokenizer wins)
        trained_tokenizer = peft and (run.adapter / "tokenizer.json").is_file()
        tokenizer_family(read_tokenizer_json(run.adapter if trained_tokenizer else base_dir))
    estimate = sum(entry.nbytes for entry in weight_entries(base_dir)) if peft else 0
    if gguf_types:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(base_dir)
        estimate += sum(estimate_gguf_bytes(base_dir, config, qtype) for qtype in gguf_types)
    ensure_free_space(run.exports, estimate, f"the exports of {run.root}")

    model_dir = run.model
    if peft:
        model_dir = run.exports / MERGED
        merge_lora(base_dir, run.adapter, model_dir, max_shard_bytes=max_shard_bytes)
        atomic_write_text(model_dir / "README.md",
                          model_card(run, "merged", str(model_dir.resolve()), base_model_id=base_id))
        result.files += list_files(model_dir)
        if not merge:
            result.notes.append(f"GGUF export needs the merged model: it was written to {model_dir} too")
        if recipe.method.name == "qlora":
            result.notes.append("QLoRA: the adapter was trained on the 4-bit base and merged into the full base")
    elif merge:
        result.notes.append(f"full fine-tuning run: {run.model} is already the full model, nothing to merge")

    if gguf_types:
        result.files += _write_gguf_files(run, recipe, model_dir, gguf_types, llama_quantize, result.notes, base_id)
        if modelfile:
            first = f"{artifact_stem(run, recipe)}-{gguf_types[0]}.gguf"
            atomic_write_text(run.exports / MODELFILE, ollama_modelfile(first, model_dir))
            result.files += list_files(run.exports / MODELFILE)
    if verify:
        gguf_files = {qtype: run.exports / f"{artifact_stem(run, recipe)}-{qtype}.gguf" for qtype in gguf_types}
        result.verification = verify_exports(
            run, recipe, model_dir, gguf_files, adapter_base=base_dir if peft else None,
            modelfile=run.exports / MODELFILE if gguf_types and modelfile else None, verify_data=verify_data,
            export_seconds=round(time.perf_counter() - started, 2),
        )
        result.files += list_files(run.exports / VERIFY_JSON)
    return result


def _write_gguf_files(
    run: RunDir, recipe: Recipe, model_dir: Path, gguf_types: list[str], llama_quantize: str | None, notes: list[str],
    base_id: str | None,
) -> list[OutputFile]:
    base = base_model_info(recipe, base_id)
    metadata = GgufMetadata(
        name=artifact_stem(run, recipe), base_model=base_id, license=base.license,
        tags=("fnsft", recipe.method.name), tokenizer_pre=_base_gguf_pre(recipe),
    )
    stem = artifact_stem(run, recipe)
    written: list[OutputFile] = []
    for qtype in gguf_types:
        target = run.exports / f"{stem}-{qtype}.gguf"
        if qtype in LLAMA_QUANTIZE_TYPES and llama_quantize:
            binary = find_llama_quantize(llama_quantize)
            run.exports.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f".{stem}-{qtype}.", suffix=".f16.gguf", dir=run.exports)
            os.close(handle)
            intermediate = Path(name)
            try:  # llama-quantize reads an f16 GGUF that fnsft writes itself
                notes += write_gguf(model_dir, intermediate, "f16", metadata)
                quantize_with_llama_cpp(binary, intermediate, target, qtype)
            finally:
                intermediate.unlink(missing_ok=True)
        else:
            notes += write_gguf(model_dir, target, qtype, metadata)
        written += list_files(target)
    return written
