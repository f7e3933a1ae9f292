"""Fixtures for the export/push tests; the run-directory builder itself is in export_runs.py."""

from __future__ import annotations

import pytest
from export_runs import KQUANT_SIZES, RunDir, build_sentencepiece_model, build_small_vocab_model, make_run_dir


@pytest.fixture(scope="session")
def lora_run_factory(tiny_model_factory, tmp_path_factory):
    """Call with an architecture name to get a LoRA run directory on that tiny model (built once per session)."""
    cache: dict[str, RunDir] = {}

    def make(arch: str = "llama") -> RunDir:
        if arch not in cache:
            cache[arch] = make_run_dir(tmp_path_factory.mktemp(f"run-{arch}"), tiny_model_factory(arch))
        return cache[arch]

    return make


def _run_factory(tmp_path_factory, build, label: str):
    cache: dict[str, tuple[RunDir, object]] = {}

    def make(arch: str = "llama"):
        if arch not in cache:
            base = build(arch, tmp_path_factory.mktemp(f"{label}-{arch}") / "base")
            cache[arch] = (make_run_dir(tmp_path_factory.mktemp(f"{label}-run-{arch}") / "run", base), base)
        return cache[arch]

    return make


@pytest.fixture(scope="session")
def small_run_factory(tmp_path_factory):
    """Call with 'llama' | 'qwen2' | 'gemma' | 'gemma2' → (LoRA run, base dir) on a small-vocabulary tiny model."""
    return _run_factory(tmp_path_factory, build_small_vocab_model, "small")


@pytest.fixture(scope="session")
def kquant_run(tmp_path_factory):
    """(LoRA run, base dir) on a small-vocabulary Mistral (untied output) with 256/512-value rows: K-quant sizes."""
    base = build_small_vocab_model("mistral", tmp_path_factory.mktemp("kquant") / "base", **KQUANT_SIZES)
    return make_run_dir(tmp_path_factory.mktemp("kquant-run") / "run", base), base


@pytest.fixture(scope="session")
def sentencepiece_run_factory(tmp_path_factory):
    """Call with 'llama' | 'mistral' | 'gemma2' → (LoRA run, base dir) on a tiny model with a real sentencepiece
    tokenizer (Llama 2 / Mistral v0.1 / Gemma style)."""
    return _run_factory(tmp_path_factory, build_sentencepiece_model, "spm")
