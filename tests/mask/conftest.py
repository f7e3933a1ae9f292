"""Fixtures for the mask tests: a loaded tiny Llama, token sequences, a text dataset file, a built mask."""

from __future__ import annotations

import json

import pytest

WORDS = ["cat", "dog", "river", "mountain", "seven", "blue", "quickly", "sings", "under", "bright", "number", "apple", "code", "window", "old", "green"]


def sentences(count: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))) + "." for _ in range(count)]


@pytest.fixture(scope="session")
def make_sentences():
    return sentences


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    return model, AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="session")
def token_seqs(tiny_llama) -> list[list[int]]:
    _model, tokenizer = tiny_llama
    return [tokenizer(text)["input_ids"] for text in sentences(60)]


@pytest.fixture(scope="session")
def text_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("mask-data") / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in sentences(80, seed=1)))
    return path


@pytest.fixture(scope="session")
def built_mask(tiny_llama, token_seqs, tiny_llama_dir, tmp_path_factory):
    """A 4-component mask of the tiny Llama (percentile=90 so every component has neurons), saved to disk."""
    from fnsft.mask.build import BuildSettings, build_mask
    from fnsft.mask.maskfile import save_mask
    from fnsft.models import resolve_model
    from fnsft.recipe.schema import ModelSection

    model, tokenizer = tiny_llama
    identity = resolve_model(ModelSection(name_or_path=str(tiny_llama_dir))).identity
    mask = build_mask(
        model, token_seqs, BuildSettings(components=4, samples=50, threshold="percentile=90", seed=3),
        model_name=str(tiny_llama_dir), source_identity=identity, pad_token_id=tokenizer.pad_token_id,
        data_source="inline",
    )
    return save_mask(mask, tmp_path_factory.mktemp("masks") / "tiny.json")
