"""Recipe or --model/--data → a loaded model, its tokenizer and the token sequences to analyse or evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fnsft.errors import MaskError
from fnsft.recipe.schema import DataSection, ModelSection


@dataclass
class Sources:
    model: ModelSection
    data: DataSection
    seed: int


def sources_from(recipe: Path | None, model: str | None, data: str | None, seed: int | None) -> Sources:
    """The model and data sections from a recipe file, overridden by --model/--data; both are required."""
    if recipe is not None:
        from fnsft.recipe.load import load_recipe

        loaded = load_recipe(recipe).resolved()
        model_section = loaded.model if model is None else ModelSection(name_or_path=model)
        data_section = loaded.data if data is None else loaded.data.model_copy(update={"path": data})
        return Sources(model_section, data_section, loaded.training.seed if seed is None else seed)
    if model is None or data is None:
        raise MaskError("give a recipe file, or both --model and --data")
    return Sources(ModelSection(name_or_path=model), DataSection(path=data), 42 if seed is None else seed)


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    identity: dict[str, Any]
    name: str


def load_model(section: ModelSection) -> Loaded:
    """Base model (fp32 on CPU; bf16 on a bf16-capable GPU when the recipe says auto) and tokenizer."""
    import torch

    from fnsft.models import load_causal_lm, load_tokenizer, resolve_model
    from fnsft.quiet import quiet_libraries

    quiet_libraries()  # transformers' "Loading weights" bars would break through the status line
    source = resolve_model(section)
    on_gpu = torch.cuda.is_available()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    dtype = dtypes.get(section.dtype) or (torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32)
    model = load_causal_lm(source, section, dtype=dtype)
    if on_gpu:
        model = model.to("cuda")
    return Loaded(model, load_tokenizer(source, section), source.identity, section.name_or_path)


@dataclass
class TokenData:
    sequences: list[list[int]]
    source: str
    format: str


def token_sequences(section: DataSection, tokenizer, seed: int, split: Literal["train", "eval"]) -> TokenData:
    """Token ids of the recipe's data, templated exactly as training sees them (fnsft.data.prepare).

    ``split="eval"`` takes the held-out split (the file's eval split or the seeded validation fraction), so a
    mask built on ``train`` is evaluated on text it has not seen; it falls back to ``train`` when there is none.
    """
    from fnsft.data.prepare import prepare_datasets

    prepared = prepare_datasets(section, tokenizer, seed)
    dataset = prepared.eval if split == "eval" and prepared.eval is not None else prepared.train
    limit = section.max_length
    sequences = [list(ids[:limit]) for ids in dataset["input_ids"]]
    return TokenData([s for s in sequences if s], section.describe(), prepared.format)
