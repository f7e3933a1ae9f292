"""Recipe schema upgrades: each old version loads through an explicit function vN → vN+1.

Every step is a table of key rules with a status, after accelerate's ``to-fsdp2`` (``ARGUMENT_KEY_MAPPING`` plus a
``ConversionStatus``): a key is MOVED (same value, new place), CONVERTED (new place, translated value) or REMOVED
(no equivalent; its value is reported, never silently dropped). Keys no rule knows are reported as UNKNOWN.

Version 0 is the predecessor project's flat flag-style YAML (``model_name_or_path: ...``, ``no_peft: true``,
``lora_r: 16``, ...; examples in tests/recipe/golden/v0/). A file without ``version:`` is read as v0 when its top
level is made of such flags, and as the current version when it holds sections (``model:``, ``data:``, ...).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from ruamel.yaml.comments import CommentedMap

from fnsft.errors import RecipeError
from fnsft.recipe import roundtrip
from fnsft.recipe.fields import FLAG_PATHS, did_you_mean, model_at
from fnsft.recipe.schema import CURRENT_VERSION, Recipe

log = logging.getLogger(__name__)


class KeyStatus(StrEnum):
    MOVED = "moved"
    CONVERTED = "converted"
    REMOVED = "removed"
    UNKNOWN = "unknown"


class KeyRule(BaseModel):
    """How one old key maps to the next version. ``convert`` returns ``{dotted path: value}`` (may be empty)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    old: str
    status: KeyStatus
    new: str | None = None
    note: str = ""
    convert: Callable[[Any, Mapping[str, Any]], dict[str, Any]] | None = None


class KeyChange(BaseModel):
    """What an upgrade did with one key of the input: the data behind the summary table and the notes."""

    old: str
    status: KeyStatus
    new: list[str]
    value: Any = None
    note: str = ""

    @property
    def lost(self) -> bool:
        """A key without an equivalent whose value said something (not unset/false)."""
        return self.status in (KeyStatus.REMOVED, KeyStatus.UNKNOWN) and _plain(self.value) not in (None, False)

    def describe(self) -> str:
        target = ", ".join(self.new) if self.new else "nothing"
        text = f"{self.old}: {self.status.value}" + (f" → {target}" if self.status != KeyStatus.REMOVED else "")
        if self.lost:
            text += f" (value {self.value!r} not carried over)"
        return text + (f"; {self.note}" if self.note else "")


class UpgradeResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    data: Any
    from_version: int
    to_version: int
    changes: list[KeyChange]

    @property
    def unmapped(self) -> list[KeyChange]:
        return [c for c in self.changes if c.status in (KeyStatus.REMOVED, KeyStatus.UNKNOWN)]

    def notes(self) -> list[str]:
        return [change.describe() for change in self.changes]


# --- v0 (predecessor flags) → v1 ------------------------------------------------------------------------------

_DTYPES = {"auto": "auto", "float16": "fp16", "fp16": "fp16", "bfloat16": "bf16", "bf16": "bf16", "float32": "fp32", "fp32": "fp32"}
_MASK_MODES = {"lesion": "lesion", "key": "lesion", "preserve": "preserve", "complement": "preserve"}


def _plain(value: Any) -> Any:
    """The predecessor read 'null' strings as None and left '2e-4' (PyYAML 1.1) as a string; undo both."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("null", "none", "~"):
            return None
        try:
            return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            return value
    return value


def _to(path: str) -> Callable[[Any, Mapping[str, Any]], dict[str, Any]]:
    return lambda value, _flat: {} if _plain(value) is None else {path: _plain(value)}


def _choice(path: str, table: Mapping[str, str]) -> Callable[[Any, Mapping[str, Any]], dict[str, Any]]:
    def convert(value: Any, _flat: Mapping[str, Any]) -> dict[str, Any]:
        value = _plain(value)
        if value is None:
            return {}
        if str(value) not in table:
            raise RecipeError(f"{path}: the old value {value!r} has no equivalent (expected one of {sorted(table)})")
        return {path: table[str(value)]}

    return convert


def _target_modules(value: Any, _flat: Mapping[str, Any]) -> dict[str, Any]:
    value = _plain(value)
    if value is None or value == "auto":
        return {}
    modules = value.replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]
    return {"method.lora.target_modules": modules}


def _method(flat: Mapping[str, Any]) -> str:
    """The predecessor's method: --no_peft = full; else 4- or 8-bit quantization (8-bit wins) = QLoRA; else LoRA."""
    if _plain(flat.get("no_peft")):
        return "full"
    if _plain(flat.get("use_8bit")) or _plain(flat.get("use_4bit")):
        return "qlora"
    return "lora"


def _no_peft(value: Any, flat: Mapping[str, Any]) -> dict[str, Any]:
    return {"method.name": "full"} if _plain(value) else {}


def _quant_bits(bits: int) -> Callable[[Any, Mapping[str, Any]], dict[str, Any]]:
    def convert(value: Any, flat: Mapping[str, Any]) -> dict[str, Any]:
        if not _plain(value) or _method(flat) != "qlora":
            return {}
        winner = 8 if _plain(flat.get("use_8bit")) else 4  # the predecessor let 8-bit win when both were set
        return {"method.name": "qlora", "method.quantization.bits": bits} if winner == bits else {}

    return convert


def _mask_file(flat: Mapping[str, Any]) -> str | None:
    """The mask file a v0 config trains with: the template JSON wins over the legacy per-layer mask file."""
    path = _plain(flat.get("ica_template_path"))
    path = _plain(flat.get("ica_mask_path")) if path is None else path
    # The predecessor only masked when mask_mode was given.
    return None if path is None or _plain(flat.get("mask_mode")) is None else str(path)


def _mask_key(path: str) -> Callable[[Any, Mapping[str, Any]], dict[str, Any]]:
    """Converter for one v0 mask key; the mask section exists only when both a file and a mode are given."""

    def convert(value: Any, flat: Mapping[str, Any]) -> dict[str, Any]:
        value = _plain(value)
        if value is None or _mask_file(flat) is None:
            return {}
        if path == "mask.path":
            return {path: str(value)} if str(value) == _mask_file(flat) else {}
        if path == "mask.mode":
            return _choice(path, _MASK_MODES)(value, flat)
        return {path: [int(_plain(i)) for i in (value if isinstance(value, list) else [value])]}

    return convert


def _report_to(value: Any, _flat: Mapping[str, Any]) -> dict[str, Any]:
    return {"output.report_to": ["wandb"]} if _plain(value) else {}


def _validation_fraction(value: Any, _flat: Mapping[str, Any]) -> dict[str, Any]:
    fraction = _plain(value)
    return {} if fraction is None else {"data.validation_fraction": float(fraction)}


_REMOVED_NOTES: dict[str, str] = {
    "config": "a config file cannot include another",
    "use_auth_token": "fnsft uses your Hugging Face login (HF_TOKEN or `hf auth login`)",
    "instruction_template": "fnsft renders rows with the tokenizer's chat template; set data.chat_template to a Jinja file",
    "use_existing_splits": "set data.eval_split to the name of an existing split",
    "auto_detect_format": "data.format is 'auto' by default; set data.format to fix one",
    "template_format": "fnsft renders rows with the tokenizer's chat template; set data.chat_template to a Jinja file",
    "response_max_length": "character limits are gone; data.max_length truncates in tokens",
    "instruction_max_length": "character limits are gone; data.max_length truncates in tokens",
    "load_best_model_at_end": "fnsft keeps the final adapter/model and the last checkpoints",
    "metric_for_best_model": "fnsft keeps the final adapter/model and the last checkpoints",
    "greater_is_better": "fnsft keeps the final adapter/model and the last checkpoints",
    "pretokenize": "tokenization is cached by datasets automatically",
    "pretokenize_cache_dir": "tokenization is cached by datasets automatically",
    "resume_from_checkpoint": "use `fnsft train RECIPE --resume`",
    "wandb_project": "set the WANDB_PROJECT environment variable",
    "convert_to_gguf": "use `fnsft export RUN_DIR --gguf` after training",
    "gguf_quantization": "use `fnsft export RUN_DIR --gguf` after training",
    "push_to_hub": "use `fnsft push RUN_DIR` after training",
    "hub_private": "use `fnsft push RUN_DIR` after training",
    "hub_repo_id": "use `fnsft push RUN_DIR` after training",
    "hub_commit_message": "use `fnsft push RUN_DIR` after training",
    "hub_token": "never store tokens in a recipe; use `hf auth login` or HF_TOKEN",
    "merge_adapter_with_base": "use `fnsft export RUN_DIR --merge` after training",
    "upload_merged_model": "use `fnsft push RUN_DIR` after training",
    "ica_components": "an option of `fnsft mask build`, not of training",
    "ica_percentile": "an option of `fnsft mask build`, not of training",
    "ica_mask_layers": "an option of `fnsft mask build`, not of training",
    "ica_dtype": "an option of `fnsft mask build`, not of training",
    "anti_drift_row_param": "fnsft masks are applied without the predecessor's anti-drift parametrization",
    "anti_drift_apply_to": "fnsft masks are applied without the predecessor's anti-drift parametrization",
    "anti_drift_unwrap_on_save": "fnsft masks are applied without the predecessor's anti-drift parametrization",
}


@functools.cache
def v0_rules() -> dict[str, KeyRule]:
    """The v0 → v1 key table. Flags the guide documents come from ``fields.FLAG_PATHS`` (one source of truth)."""
    rules = [KeyRule(old=flag, status=KeyStatus.MOVED, new=path, convert=_to(path)) for flag, path in FLAG_PATHS.items()]
    rules += [
        KeyRule(old="lora_target_modules", status=KeyStatus.CONVERTED, new="method.lora.target_modules",
                note="a space-separated string becomes a list; none = auto", convert=_target_modules),
        KeyRule(old="torch_dtype", status=KeyStatus.CONVERTED, new="model.dtype", convert=_choice("model.dtype", _DTYPES)),
        KeyRule(old="attn_implementation", status=KeyStatus.CONVERTED, new="model.attn_implementation",
                note="auto becomes the default (sdpa)",
                convert=lambda v, f: {} if _plain(v) in (None, "auto") else {"model.attn_implementation": _plain(v)}),
        KeyRule(old="dataset_config_name", status=KeyStatus.MOVED, new="data.config_name", convert=_to("data.config_name")),
        KeyRule(old="validation_split", status=KeyStatus.MOVED, new="data.validation_fraction", convert=_validation_fraction),
        KeyRule(old="no_peft", status=KeyStatus.CONVERTED, new="method.name", note="true = full", convert=_no_peft),
        KeyRule(old="use_4bit", status=KeyStatus.CONVERTED, new="method.name", note="true = qlora, 4-bit",
                convert=_quant_bits(4)),
        KeyRule(old="use_8bit", status=KeyStatus.CONVERTED, new="method.name",
                note="true = qlora, 8-bit (the predecessor skipped quantization without CUDA; fnsft does not)",
                convert=_quant_bits(8)),
        KeyRule(old="bnb_4bit_compute_dtype", status=KeyStatus.CONVERTED, new="method.quantization.compute_dtype",
                convert=_choice("method.quantization.compute_dtype", _DTYPES)),
        KeyRule(old="bnb_4bit_quant_type", status=KeyStatus.MOVED, new="method.quantization.quant_type",
                convert=_to("method.quantization.quant_type")),
        KeyRule(old="bnb_4bit_use_double_quant", status=KeyStatus.MOVED, new="method.quantization.double_quant",
                convert=_to("method.quantization.double_quant")),
        KeyRule(old="lora_bias", status=KeyStatus.MOVED, new="method.lora.bias", convert=_to("method.lora.bias")),
        KeyRule(old="per_device_eval_batch_size", status=KeyStatus.MOVED, new="training.per_device_eval_batch_size",
                convert=_to("training.per_device_eval_batch_size")),
        KeyRule(old="save_total_limit", status=KeyStatus.MOVED, new="training.save_total_limit",
                convert=_to("training.save_total_limit")),
        KeyRule(old="max_grad_norm", status=KeyStatus.MOVED, new="training.max_grad_norm", convert=_to("training.max_grad_norm")),
        KeyRule(old="use_wandb", status=KeyStatus.CONVERTED, new="output.report_to", note="true = [wandb]", convert=_report_to),
        KeyRule(old="wandb_run_name", status=KeyStatus.MOVED, new="output.run_name", convert=_to("output.run_name")),
        KeyRule(old="mask_mode", status=KeyStatus.CONVERTED, new="mask.mode", note="key = lesion, complement = preserve",
                convert=_mask_key("mask.mode")),
        KeyRule(old="ica_mask_path", status=KeyStatus.MOVED, new="mask.path",
                note="must be a mask file of `fnsft mask build`; a predecessor JSON is checked when training starts",
                convert=_mask_key("mask.path")),
        KeyRule(old="ica_template_path", status=KeyStatus.MOVED, new="mask.path",
                note="must be a mask file of `fnsft mask build`; a predecessor JSON is checked when training starts",
                convert=_mask_key("mask.path")),
        KeyRule(old="ica_component_ids", status=KeyStatus.MOVED, new="mask.components",
                convert=_mask_key("mask.components")),
    ]
    rules += [KeyRule(old=key, status=KeyStatus.REMOVED, note=note) for key, note in _REMOVED_NOTES.items()]
    return {rule.old: rule for rule in rules}  # later rules override earlier ones for the same key


def _unmapped_reason(key: str, value: Any, flat: Mapping[str, Any]) -> str | None:
    """Why a mapped key produced nothing although it carries a value (it is then reported like a removed key)."""
    if _plain(value) in (None, False):
        return None
    if key == "mask_mode" and _mask_file(flat) is None:
        return "the predecessor computed ICA on the fly; run `fnsft mask build`, then set mask.path and mask.mode"
    if key in ("ica_mask_path", "ica_template_path", "ica_component_ids") and _plain(flat.get("mask_mode")) is None:
        return "unused: the predecessor applied no mask without mask_mode"
    if key == "ica_mask_path" and _mask_file(flat) != str(_plain(value)):
        return "ica_template_path is also set and wins"
    if key in ("use_4bit", "use_8bit") and _method(flat) == "full":
        return "full fine-tuning of a quantized base is not supported; the base is loaded unquantized"
    if key == "use_4bit" and _plain(flat.get("use_8bit")):
        return "use_8bit is also set and won in the predecessor"
    return None


def _nest(changes: Mapping[str, Any], flat: Mapping[str, Any], sources: Mapping[str, str]) -> CommentedMap:
    """Build the nested v1 map in schema order, carrying each old key's comments to the key it became."""
    root = CommentedMap()
    root["version"] = 1
    commented = flat if isinstance(flat, CommentedMap) else None  # a file keeps its comments; a dict has none
    if commented is not None and commented.ca.comment and commented.ca.comment[1]:
        root.ca.comment = [None, list(commented.ca.comment[1])]  # the file's header comment stays on top
    carried: set[str] = set()
    for dotted, value in changes.items():
        keys = dotted.split(".")
        node = root
        old = sources[dotted]
        # Validation errors then point at the line of the old key a value came from (at the new key's column).
        line = commented.lc.data[old][0] if commented is not None and old in commented.lc.data else None
        for depth, key in enumerate(keys[:-1]):
            if key not in node:
                model = model_at(keys[:depth])
                roundtrip.insert_key(node, key, CommentedMap(), model.model_fields if model else [])
                if line is not None:
                    node.lc.add_kv_line_col(key, [line, 2 * depth, line, 2 * depth + len(key) + 2])
            node = node[key]
        model = model_at(keys[:-1])
        value = roundtrip.yaml_value(value)
        roundtrip.insert_key(node, keys[-1], value, model.model_fields if model else [])
        indent = 2 * (len(keys) - 1)
        if line is not None:
            node.lc.add_kv_line_col(keys[-1], [line, indent, line, indent + len(keys[-1]) + 2])
        if commented is not None and old not in carried:  # comment lines above the old key go above its first new key
            carried.add(old)
            roundtrip.set_comments_above(node, keys[-1], roundtrip.comments_above(commented, old), 2 * (len(keys) - 1))
        own = roundtrip.eol_comment(commented, old) if commented is not None else None
        if old != keys[-1]:
            roundtrip.set_eol_comment(node, keys[-1], f"upgraded from {old}" + (f"  # {own}" if own else ""), indent)
        elif own:
            roundtrip.set_eol_comment(node, keys[-1], own, indent)
    return root


def v0_to_v1(flat: Mapping[str, Any], source: str) -> tuple[CommentedMap, list[KeyChange]]:
    """Upgrade the predecessor's flat flag YAML to schema v1. Unknown and removed keys are reported, not kept."""
    rules = v0_rules()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    report: list[KeyChange] = []
    for key, value in flat.items():
        if key == "version":
            continue
        rule = rules.get(key)
        if rule is None:
            hint = did_you_mean(str(key), rules)
            report.append(KeyChange(old=str(key), status=KeyStatus.UNKNOWN, new=[], value=value,
                                    note=f"not a flag of the predecessor{hint}"))
            continue
        try:
            produced = rule.convert(value, flat) if rule.convert else {}
        except RecipeError as exc:
            raise RecipeError(f"{source}{_line(flat, key)}: {key}: {exc}") from None
        reason = _unmapped_reason(key, value, flat)
        if rule.status == KeyStatus.REMOVED or (reason and not produced):
            report.append(KeyChange(old=key, status=KeyStatus.REMOVED, new=[], value=value, note=reason or rule.note))
            continue
        for path, new_value in produced.items():
            if path in values and values[path] != new_value:
                raise RecipeError(
                    f"{source}: {key} and {sources[path]} both set {path} ({new_value!r} vs {values[path]!r}); keep one"
                )
            values[path] = new_value
            sources.setdefault(path, key)
        note = rule.note if produced else f"{rule.note + '; ' if rule.note else ''}value {value!r} is the default"
        report.append(KeyChange(old=key, status=rule.status, new=list(produced), value=value, note=note))
    return _nest(values, flat, sources), report


#: Upgrade steps by the version they read. Each returns the next version's data and the per-key report.
UPGRADES: dict[int, Callable[[Mapping[str, Any], str], tuple[Any, list[KeyChange]]]] = {0: v0_to_v1}


def detect_version(data: Mapping[str, Any], source: str) -> int:
    """The schema version of raw recipe data; see the module docstring for files without ``version:``."""
    if "version" in data:
        version = data["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise RecipeError(f"{source}{_line(data)}: version must be a whole number, got {version!r}")
        return version
    if any(key in Recipe.model_fields for key in data):
        return CURRENT_VERSION
    if any(key in v0_rules() for key in data):
        return 0
    return CURRENT_VERSION


def _line(data: Any, key: str = "version") -> str:
    try:
        return f":{data.lc.key(key)[0] + 1}"
    except (AttributeError, KeyError, TypeError):
        return ""


def plan_upgrade(
    data: Mapping[str, Any],
    source: str,
    steps: Mapping[int, Callable[[Mapping[str, Any], str], tuple[Any, list[KeyChange]]]] | None = None,
    target: int = CURRENT_VERSION,
) -> UpgradeResult:
    """Run the upgrade chain from the data's version to ``target``, collecting every step's key report."""
    steps = UPGRADES if steps is None else steps
    start = version = detect_version(data, source)
    if version > target or (version < target and version not in steps):
        known = ", ".join(str(v) for v in sorted({*steps, target}))
        raise RecipeError(
            f"{source}{_line(data)}: recipe version {version} is not supported "
            f"(this fnsft reads versions {known} and writes version {target})"
        )
    changes: list[KeyChange] = []
    while version < target:
        if version not in steps:
            raise RecipeError(f"{source}: no upgrade from recipe version {version} to {version + 1}")
        data, step_changes = steps[version](data, source)
        changes += step_changes
        version += 1
    return UpgradeResult(data=data, from_version=start, to_version=target, changes=changes)


def upgrade(data: Any, source: str) -> tuple[Any, list[str]]:
    """Return the data at the current schema version and notes on what changed.

    Keys with no equivalent are logged as warnings (logger ``fnsft.recipe.versions``) as well as returned.
    """
    result = plan_upgrade(data, source)
    if result.from_version != result.to_version:
        log.warning("%s: read as recipe version %d and upgraded to %d; save it with `fnsft migrate-config %s --upgrade`",
                    source, result.from_version, result.to_version, source)
        for change in result.unmapped:
            if change.lost:
                log.warning("%s: %s", source, change.describe())
    return result.data, result.notes()
