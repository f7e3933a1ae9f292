"""Model cards and the Ollama Modelfile, generated from a run's resolved recipe and manifest.

The license is inherited from the base model when it can be read locally (the base GGUF's ``general.license``,
or the YAML header of the base model's README, on disk or in the Hub cache); it is never invented.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, overload

from pydantic import BaseModel

from fnsft.errors import ExportError, ModelError
from fnsft.models import ModelSource, base_hub_id, resolve_model
from fnsft.recipe.load import dump_recipe
from fnsft.recipe.schema import Recipe
from fnsft.rundir import RunDir

ArtifactKind = Literal["adapter", "full", "merged", "gguf"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class BaseModelInfo(BaseModel):
    """What the card and GGUF metadata say about the base model."""

    name: str
    hub_id: str | None = None
    license: str | None = None
    license_source: str | None = None


def _license_from_readme(readme: Path | None) -> str | None:
    if readme is None or not readme.is_file():
        return None
    from huggingface_hub import metadata_load

    value = (metadata_load(readme) or {}).get("license")
    return str(value) if value else None


def _license_from_gguf(path: Path) -> str | None:
    from fnsft.estimate.gguf_shape import config_from_gguf

    return config_from_gguf(path).get("fnsft_license")


def base_model_info(recipe: Recipe, hub_id: str | None = None) -> BaseModelInfo:
    """Name, Hub id and license of the run's base model, read from local files only (never the network).

    ``hub_id`` (``--base-model-id``, or the manifest's) wins over the id known from the recipe's model.
    """
    section = recipe.model
    try:
        source: ModelSource | None = resolve_model(section)
    except ModelError:  # the base may have moved since training: the card still gets its name
        source = None
    info = BaseModelInfo(name=section.name_or_path, hub_id=hub_id or base_hub_id(section))
    if source is None:
        return info
    if source.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(section.name_or_path, "README.md", revision=section.revision)
        info.license = _license_from_readme(Path(cached)) if isinstance(cached, str) else None
        info.license_source = "the base model's README (Hub cache)" if info.license else None
    elif source.kind == "gguf":
        info.license = _license_from_gguf(Path(source.identity["file"]))
        info.license_source = "the base GGUF's general.license" if info.license else None
    else:
        info.license = _license_from_readme(Path(source.load_path) / "README.md")
        info.license_source = "the base model's README" if info.license else None
    return info


def validate_repo_id(repo_id: str, flag: str = "--repo-id") -> None:
    """OWNER/NAME as the Hub accepts it; anything else is a clear error before any network call."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hub_validate

    try:
        hub_validate(repo_id)
    except HFValidationError as exc:
        raise ExportError(f"invalid {flag} {repo_id!r}: {str(exc).splitlines()[0]}") from None
    if repo_id.count("/") != 1:
        raise ExportError(f"invalid {flag} {repo_id!r}: use OWNER/NAME (a user or organisation name first)")


@overload
def resolve_base_model_id(run: RunDir, recipe: Recipe, manifest: dict[str, Any], given: str | None, *,
                          required: Literal[True]) -> str: ...
@overload
def resolve_base_model_id(run: RunDir, recipe: Recipe, manifest: dict[str, Any], given: str | None, *,
                          required: bool) -> str | None: ...
def resolve_base_model_id(run: RunDir, recipe: Recipe, manifest: dict[str, Any], given: str | None, *,
                          required: bool) -> str | None:
    """The Hub id exported/pushed files name as the base model: ``--base-model-id``, else the one the manifest
    recorded (a ``package://`` GGUF: the model it was converted from), else that of the recipe's model.

    Never a local path (training's adapter_config.json names the dequantized cache, ~/.cache/fnsft/gguf/<hash>):
    unknown, it is None, or with ``required`` (push: nobody else could load the adapter) an error.
    """
    if given:
        validate_repo_id(given, flag="--base-model-id")
        return given
    known = (manifest.get("base_model") or {}).get("hub_id") or base_hub_id(recipe.model)
    if not known and required:
        raise ExportError(
            f"{run.root}: the base model {recipe.model.name_or_path} has no Hub id, so nobody else could load the "
            "pushed adapter (its adapter_config.json names a path on this machine); pass --base-model-id OWNER/NAME, "
            "the Hub model it was trained from. Nothing was uploaded"
        )
    return known


DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".arrow")
METHOD_LABELS = {"lora": "LoRA", "qlora": "QLoRA", "full": "full fine-tuning"}


def _dataset_ids(recipe: Recipe) -> list[str]:
    """Only Hub dataset ids belong in the card's ``datasets`` metadata; local files are named in the text."""
    paths = [str(part.path) for _, part in recipe.data.source_sections()]
    return [path for path in paths if HUB_ID.match(path)
            and not (Path(path).exists() or path.lower().endswith(DATA_FILE_SUFFIXES))]


def _how_to_load(kind: ArtifactKind, repo_id: str, base: BaseModelInfo, gguf_files: list[str]) -> str:
    base_ref = base.hub_id or base.name
    if kind == "adapter":
        return (
            "```python\nfrom peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
            f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")  # loads the base model {base_ref} too\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n```\n'
        )
    if kind == "gguf":
        first = gguf_files[0] if gguf_files else "MODEL.gguf"
        return (
            f"```bash\nllama-cli -hf {repo_id}:{first.rsplit('-', 1)[-1].removesuffix('.gguf').upper()}\n"
            f"# or, with the Modelfile in this repository:\nollama create my-model -f Modelfile\n```\n\n"
            f"transformers can also read it: `AutoModelForCausalLM.from_pretrained(\"{repo_id}\", gguf_file=\"{first}\")`.\n"
        )
    return (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n```\n'
    )


def _manifest_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("method", str(manifest.get("method", "?"))), ("seed", str(manifest.get("seed", "?"))),
            ("recipe sha256", f"`{manifest.get('recipe_sha256', '?')}`")]
    dataset = manifest.get("dataset") or {}
    rows.append(("dataset", f"`{dataset.get('path', '?')}` (fingerprint `{dataset.get('fingerprint')}`)"))
    packages = manifest.get("packages") or {}
    if packages:
        rows.append(("packages", ", ".join(f"{name} {version}" for name, version in sorted(packages.items()))))
    for key, value in sorted((manifest.get("metrics") or {}).items()):
        rows.append((f"metric: {key}", f"{value:.4g}" if isinstance(value, float) else str(value)))
    memory = manifest.get("memory")
    if memory:
        rows.append(("memory (predicted vs measured)", ", ".join(f"{k} {v}" for k, v in memory.items())))
    return rows


def model_card(
    run: RunDir,
    kind: ArtifactKind,
    repo_id: str,
    *,
    gguf_files: list[str] | None = None,
    base_model_id: str | None = None,
) -> str:
    """The README.md (YAML metadata + text) for one artifact of a finished run.

    Args:
        run: the run directory (its recipe.yaml and manifest.json are read).
        kind: adapter, full (fully fine-tuned model), merged (LoRA merged into the base) or gguf.
        repo_id: where it will live on the Hub, for the loading snippets.
        gguf_files: GGUF file names, for the gguf snippets.
        base_model_id: the base model's Hub id, when the recipe's model is not one (a local directory or GGUF).

    Returns:
        The card text.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from fnsft.manifest import read_manifest
    from fnsft.recipe.load import load_recipe

    recipe = load_recipe(run.recipe)
    manifest = read_manifest(run) if run.manifest.is_file() else {}
    base = base_model_info(recipe, base_model_id or (manifest.get("base_model") or {}).get("hub_id"))
    method = recipe.method.name
    data = ModelCardData(
        base_model=base.hub_id,
        library_name="peft" if kind == "adapter" else ("gguf" if kind == "gguf" else "transformers"),
        license=base.license,
        datasets=_dataset_ids(recipe) or None,
        tags=["fnsft", method, *(["lora"] if recipe.method.is_peft and method != "lora" else []),
              *(["gguf"] if kind == "gguf" else []), *(["merged"] if kind == "merged" else [])],
        pipeline_tag="text-generation",
    )
    label = METHOD_LABELS[method]
    artifact = {"adapter": f"A {label} adapter", "full": "A fully fine-tuned model",
                "merged": f"The {label} adapter merged into its base model", "gguf": "GGUF files"}[kind]
    lines = [
        f"# {repo_id.split('/')[-1]}", "",
        f"{artifact} of **{base.name}**, fine-tuned with fnsft ({label}).", "",
        "## How to load", "", _how_to_load(kind, repo_id, base, gguf_files or []),
        "## Training", "",
        f"- base model: `{base.name}`" + (f" (license {base.license}, from {base.license_source})" if base.license
                                            else " (license unknown: check the base model's terms)"),
        *([f"- trained on `{base.name}`; `{base.hub_id}` is the Hub model it was made from (same shapes), which "
           "the loading code above uses as the base"] if base.hub_id and base.hub_id != base.name else []),
        f"- data: `{recipe.data.describe()}` ({recipe.data.format}, loss on {recipe.data.loss_on})", "",
        "| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in _manifest_rows(manifest)), "",
    ]
    mask = manifest.get("mask")
    if mask:
        lines += ["## Functional-network mask", "", "Trained with an ICA functional-network mask:", "",
                  "```json", json.dumps(mask, indent=2), "```", ""]
    if kind == "merged" and method == "qlora":
        lines += ["Note: the adapter was trained against the 4-bit base and merged into the full-precision base.", ""]
    lines += ["## Recipe", "", "The resolved recipe that produced this run (`fnsft train RECIPE` reproduces it):", "",
              "```yaml", dump_recipe(recipe).rstrip(), "```", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def ollama_modelfile(gguf_name: str, tokenizer_dir: Path) -> str:
    """An Ollama Modelfile for a GGUF written beside it.

    The chat template itself is inside the GGUF (``tokenizer.chat_template``), from which Ollama derives the prompt
    template; the Modelfile adds the end-of-turn stop token(s) so generation ends where the template says.
    """
    stops: list[str] = []
    config_path = tokenizer_dir / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        for key in ("eos_token", "eot_token"):
            token = config.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            if isinstance(token, str) and token not in stops:
                stops.append(token)
    for token in _generation_eos_tokens(tokenizer_dir):  # Llama 3 ends turns with <|eot_id|>, not its EOS
        if token not in stops:
            stops.append(token)
    lines = [f"FROM ./{gguf_name}", "# The chat template is embedded in the GGUF (tokenizer.chat_template)."]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


def _generation_eos_tokens(model_dir: Path) -> list[str]:
    """The texts of every ``generation_config.eos_token_id`` (looked up in tokenizer.json's added tokens)."""
    config, vocab = model_dir / "generation_config.json", model_dir / "tokenizer.json"
    if not config.is_file() or not vocab.is_file():
        return []
    ids = json.loads(config.read_text()).get("eos_token_id")
    ids = ids if isinstance(ids, list) else [ids]
    added = {token["id"]: token["content"] for token in json.loads(vocab.read_text()).get("added_tokens", [])}
    return [added[i] for i in ids if i in added]
