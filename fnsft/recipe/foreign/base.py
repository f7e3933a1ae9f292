"""What every foreign-config conversion shares: a key-by-key record, tool defaults, value translation, the output.

A :class:`Conversion` reads one source mapping. Each tool module asks it for source keys (``take``), translates
them and records where they went (``put``). Every source key ends in exactly one :class:`Status`; keys no rule
asked for are reported as not supported at the end, never dropped. A key the file leaves out takes the tool's
own documented default (the tool module states the version it was read from), so the recipe describes the run
that tool would have launched; such lines say "default of <tool>".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from fnsft.errors import RecipeError
from fnsft.recipe import roundtrip

MISSING: Any = object()
#: The recipe's sections in the order a reader expects them.
SECTION_ORDER = ("model", "data", "method", "training", "output", "distributed")
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class Status(StrEnum):
    MAPPED = "mapped"
    APPROXIMATED = "approximated"
    DEFAULT = "default"
    UNSET = "unset"
    UNSUPPORTED = "not supported"


@dataclass
class KeyReport:
    """One row of the report: a source key (dotted for nested keys), its value, where it went and how."""

    source: str
    value: Any
    target: str | None
    status: Status
    note: str = ""


@dataclass
class Conversion:
    """The state of one conversion: source, tool defaults, the recipe values built so far and the report."""

    tool: str
    source: Mapping[str, Any]
    defaults: Mapping[str, Any]
    origin: str = "<config>"
    values: dict[str, Any] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    rows: list[KeyReport] = field(default_factory=list)
    handled: set[str] = field(default_factory=set)
    #: Source keys whose value could not be fully resolved (interpolations, environment), with why.
    flags: dict[str, str] = field(default_factory=dict)

    # --- reading the source ---------------------------------------------------------------------------------

    def raw(self, key: str, default: Any = None) -> Any:
        """The source value at a dotted key (``model.lora_rank``) without marking it handled."""
        node: Any = self.source
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return default if node is None else node

    def present(self, key: str) -> bool:
        return self.raw(key, MISSING) is not MISSING

    def take(self, key: str) -> tuple[Any, bool]:
        """(value, came_from_default): the source value, else the tool's default (MISSING when it has none)."""
        self.handled.add(key)
        value = self.raw(key, MISSING)
        if value is not MISSING:
            return self.resolve(key, value), False
        return self.defaults.get(key, MISSING), True

    def resolve(self, key: str, value: Any) -> Any:
        """Resolve ``${other_key}`` against the file's own scalars; flag what only the environment can answer."""
        if not isinstance(value, str) or not _INTERPOLATION.search(value):
            return value

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            target = self.raw(name)
            if isinstance(target, (str, int, float)) and not _INTERPOLATION.search(str(target)):
                return str(target)
            self.flag(key, f"{match.group(0)} depends on the environment; kept as written")
            return match.group(0)

        return _INTERPOLATION.sub(substitute, value)

    def where(self, key: str) -> str:
        """``file:line`` of a source key (just the file when the line is unknown)."""
        *parents, leaf = key.split(".")
        node: Any = self.source
        for part in parents:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, CommentedMap) and leaf in node:
            return f"{self.origin}:{node.lc.key(leaf)[0] + 1}"
        return self.origin

    def source_comment(self, key: str) -> str | None:
        """The source file's own end-of-line comment on ``key`` (kept where a key maps one-to-one)."""
        *parents, leaf = key.split(".")
        node: Any = self.source
        for part in parents:
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, CommentedMap) or leaf not in node:
            return None
        return roundtrip.eol_comment(node, leaf) or None

    def flag(self, key: str, note: str) -> None:
        self.flags.setdefault(key, note)

    # --- writing the recipe ---------------------------------------------------------------------------------

    def put(self, path: str, value: Any, *, key: str, from_default: bool = False,
            status: Status = Status.MAPPED, note: str = "", source_value: Any = MISSING) -> None:
        """Set recipe key ``path`` from source ``key`` and record the row; the comment says where it came from."""
        shown = value if source_value is MISSING else source_value
        flagged = self.flags.pop(key, None)
        if flagged:
            status, note = Status.APPROXIMATED, "; ".join(filter(None, [note, flagged]))
        if from_default:
            status = Status.DEFAULT
            comment = f"default of {self.tool}: {key}: {format_source(shown)}"
        else:
            comment = f"{self.tool} {key}: {format_source(shown)}"
        if note:
            comment += f" ({note})"
        theirs = self.source_comment(key) if status == Status.MAPPED and not from_default else None
        if theirs:
            comment += f"  # {theirs}"
        self.values[path] = value
        self.comments[path] = comment
        self.handled.add(key)
        self.rows.append(KeyReport(key, shown, path, status, note))

    def map(self, key: str, path: str, convert: Callable[[Any], Any] = lambda v: v, *, note: str = "") -> Any:
        """Take ``key`` (or its default) and put ``convert(value)`` at ``path``; returns the converted value."""
        value, from_default = self.take(key)
        if value is MISSING or value is None:
            return None
        try:
            converted = convert(value)
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(inf)
            raise RecipeError(f"{self.where(key)}: {key}: {format_source(value)!r} cannot be read ({exc})") from None
        self.put(path, converted, key=key, from_default=from_default, source_value=value, note=note)
        return converted

    def unsupported(self, key: str, note: str) -> None:
        """Record a key fnsft cannot honour, with why (it is listed at the end of the recipe too)."""
        self.handled.add(key)
        if self.present(key):
            self.rows.append(KeyReport(key, self.raw(key), None, Status.UNSUPPORTED, note))

    def approximate(self, key: str, path: str, value: Any, note: str) -> None:
        self.put(path, value, key=key, status=Status.APPROXIMATED, note=note, source_value=self.raw(key, value))

    def used(self, key: str, target: str, note: str = "") -> None:
        """Record that ``key`` shaped ``target`` together with other keys (e.g. load_in_4bit → method.name)."""
        self.handled.add(key)
        if self.present(key):
            self.rows.append(KeyReport(key, self.raw(key), target, Status.MAPPED, note))

    def finish(self, ignored: Mapping[str, str] = {}) -> None:  # noqa: B006 - read only
        """Report every source key no rule asked for: null ones as unset, the rest as not supported.

        A key a rule read without recording a row (it turned out not to matter for this config) is reported
        too, so no value in the file goes unmentioned.
        """
        if self.values.get("distributed.strategy", "none") in ("fsdp", "zero2", "zero3") \
                and "distributed.num_processes" not in self.values:
            self.values["distributed.num_processes"] = 2
            self.comments["distributed.num_processes"] = "the config does not say how many GPUs: set yours " \
                                                         "(or fnsft train --nproc N)"
            self.rows.append(KeyReport("(GPU count)", None, "distributed.num_processes", Status.APPROXIMATED,
                                       "sharding needs 2+ processes; the source leaves the count to its launcher"))
        reported = {row.source for row in self.rows}
        for key in sorted(self.handled - reported):
            if not self.present(key) and _has_key(self.source, key):
                self.rows.append(KeyReport(key, None, None, Status.UNSET, "null: the tool's default applies"))
            elif self.present(key) and not any(row.source.startswith(key + ".") for row in self.rows) \
                    and isinstance(self.raw(key), (str, int, float, bool, list)):
                self.rows.append(KeyReport(key, self.raw(key), None, Status.UNSUPPORTED,
                                           ignored.get(key, "read, but it changes nothing for this config in fnsft")))
        for key in _leaf_keys(self.source, self.handled):
            value = self.raw(key, MISSING)
            if value is MISSING:
                self.rows.append(KeyReport(key, None, None, Status.UNSET, "null: the tool's default applies"))
            else:
                note = ignored.get(key.split(".")[0], "no fnsft equivalent")
                self.rows.append(KeyReport(key, value, None, Status.UNSUPPORTED, note))

    def unsupported_rows(self) -> list[KeyReport]:
        return [row for row in self.rows if row.status == Status.UNSUPPORTED]


def _has_key(source: Mapping[str, Any], key: str) -> bool:
    *parents, leaf = key.split(".")
    node: Any = source
    for part in parents:
        node = node.get(part) if isinstance(node, Mapping) else None
    return isinstance(node, Mapping) and leaf in node


def _leaf_keys(source: Mapping[str, Any], handled: set[str]) -> Iterable[str]:
    """Source keys not handled: whole top-level keys, or the unhandled children of a partly handled mapping."""
    for key, value in source.items():
        key = str(key)
        if key in handled:
            continue
        children = [h for h in handled if h.startswith(key + ".")]
        if children and isinstance(value, Mapping):
            for child in value:
                dotted = f"{key}.{child}"
                if dotted not in handled and not any(h.startswith(dotted + ".") for h in children):
                    yield dotted
        elif not children:
            yield key


def printable(text: str) -> str:
    """Text safe for a YAML comment: control characters spelled as escapes (YAML rejects them raw)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def format_source(value: Any) -> str:
    """A source value as one short line for a comment or the report."""
    if isinstance(value, str):
        text = printable(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_source(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_source(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


# --- translations shared by several tools -------------------------------------------------------------------

#: Optimizer names (transformers' OptimizerNames and the tools' own aliases) → fnsft's optimizer choices.
OPTIMIZERS = {
    "adamw_torch": "adamw_torch", "adamw_hf": "adamw_torch", "adamw": "adamw_torch",
    "adamw_torch_fused": "adamw_torch_fused",
    "adamw_8bit": "adamw_8bit", "adamw_bnb_8bit": "adamw_8bit", "bnb_8bit": "adamw_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit", "paged_adamw_32bit": "paged_adamw_32bit",
    "adafactor": "adafactor", "sgd": "sgd",
}
#: Scheduler names → fnsft's choices; the ones without an exact equivalent map to the closest and say so.
SCHEDULERS = {name: name for name in ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                                      "constant_with_warmup")}
SCHEDULER_APPROXIMATIONS = {
    "cosine_with_min_lr": ("cosine", "fnsft's cosine decays to 0, not to a minimum learning rate"),
    "warmup_stable_decay": ("cosine", "no stable phase in fnsft: cosine decay after warmup"),
    "inverse_sqrt": ("cosine", "no inverse-sqrt schedule in fnsft: cosine decay after warmup"),
    "reduce_lr_on_plateau": ("constant", "no plateau detection in fnsft: constant learning rate"),
    "one_cycle": ("cosine", "one-cycle approximated by warmup + cosine decay"),
    "rex": ("cosine", "REX approximated by cosine decay"),
}
LINEAR_TARGET_SPELLINGS = ("all-linear", "all_linear", "all")


def optimizer(conv: Conversion, key: str) -> None:
    value, from_default = conv.take(key)
    if value is MISSING or value is None:
        return
    name = str(value).lower()
    if name in OPTIMIZERS:
        conv.put("training.optimizer", OPTIMIZERS[name], key=key, from_default=from_default, source_value=value)
    else:
        conv.put("training.optimizer", "adamw_torch", key=key, status=Status.APPROXIMATED, source_value=value,
                 note=f"{value} is not available in fnsft: plain AdamW")


def scheduler(conv: Conversion, key: str) -> None:
    value, from_default = conv.take(key)
    if value is MISSING or value is None:
        return
    name = str(value).lower()
    if name in SCHEDULERS:
        conv.put("training.lr_scheduler_type", name, key=key, from_default=from_default, source_value=value)
    else:
        nearest, why = SCHEDULER_APPROXIMATIONS.get(name, ("cosine", f"{value} is not available in fnsft"))
        conv.put("training.lr_scheduler_type", nearest, key=key, status=Status.APPROXIMATED, note=why,
                 source_value=value)


def precision(conv: Conversion, bf16_key: str = "bf16", fp16_key: str = "fp16") -> None:
    """Mixed-precision flags (``bf16: true|auto``, ``fp16: true``) → training.precision."""
    for key, name in ((bf16_key, "bf16"), (fp16_key, "fp16")):
        value, from_default = conv.take(key)
        if value is MISSING or value is None or value is False:
            continue
        chosen = "auto" if str(value).lower() == "auto" else name
        conv.put("training.precision", chosen, key=key, from_default=from_default, source_value=value)
        return


def warmup(conv: Conversion, ratio_key: str = "warmup_ratio", steps_key: str = "warmup_steps") -> None:
    """Warmup as a ratio (< 1) or as optimizer steps; transformers reads a warmup_steps value < 1 as a ratio."""
    steps, steps_default = conv.take(steps_key)
    if steps == 0 and not conv.present(ratio_key):  # the tools' default: no warmup at all
        conv.put("training.warmup_ratio", 0.0, key=steps_key, from_default=steps_default, source_value=steps)
        conv.handled.add(ratio_key)
        return
    if steps not in (MISSING, None) and not steps_default:
        if isinstance(steps, float) and 0 < steps < 1:
            conv.put("training.warmup_ratio", steps, key=steps_key,
                     note="transformers reads a warmup_steps value below 1 as a ratio")
        else:
            conv.put("training.warmup_steps", int(steps), key=steps_key)
        conv.handled.add(ratio_key)
        return
    conv.map(ratio_key, "training.warmup_ratio", float)


def batching(conv: Conversion) -> None:
    """Batch sizes, accumulation and run length under their HF TrainingArguments names."""
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "max_steps"):
        conv.map(key, f"training.{key}", int)
    conv.map("num_train_epochs", "training.num_train_epochs", float)


def optimization(conv: Conversion, *, scheduler_key: str, optimizer_key: str) -> None:
    """Learning rate, schedule, optimizer, weight decay, clipping and warmup under their HF names."""
    conv.map("learning_rate", "training.learning_rate", float)
    scheduler(conv, scheduler_key)
    optimizer(conv, optimizer_key)
    conv.map("weight_decay", "training.weight_decay", float)
    conv.map("max_grad_norm", "training.max_grad_norm", float)
    warmup(conv)


def cadence(conv: Conversion) -> None:
    """Logging/saving/evaluation steps, seed and output directory under their HF names."""
    for key in ("logging_steps", "save_steps", "eval_steps", "save_total_limit", "seed"):
        conv.map(key, f"training.{key}", int)
    conv.map("output_dir", "output.dir", str)


def trainer_extras(conv: Conversion, source_path: Path) -> None:
    """Run name, trackers and DeepSpeed/FSDP settings of an HF TrainingArguments-based config."""
    conv.map("run_name", "output.run_name", str)
    report_to(conv, "report_to")
    deepspeed_strategy(conv, "deepspeed", source_path.parent)
    fsdp_strategy(conv, "fsdp", "fsdp_config")


def report_to(conv: Conversion, key: str) -> None:
    """HF ``report_to`` (a name or a list) → output.report_to; trackers fnsft lacks are named in the note."""
    value, _ = conv.take(key)
    if value in (MISSING, None):
        return
    targets = [value] if isinstance(value, str) else list(value)
    known = [t for t in targets if t in ("none", "tensorboard", "wandb", "trackio")]
    dropped = [t for t in targets if t not in known]
    conv.put("output.report_to", known or ["none"], key=key, source_value=value,
             status=Status.APPROXIMATED if dropped else Status.MAPPED,
             note=f"{', '.join(dropped)} not supported" if dropped else "")


def target_modules(value: Any) -> Any:
    """LoRA targets: the 'every linear layer' spellings become fnsft's auto; a comma string becomes a list."""
    if isinstance(value, str):
        if value.lower() in LINEAR_TARGET_SPELLINGS:
            return "auto"
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(item) for item in value]


def deepspeed_strategy(conv: Conversion, key: str, base_dir: Path) -> None:
    """A DeepSpeed JSON (path or inline mapping) → distributed.strategy zero2/zero3 (+ offload)."""
    value, _ = conv.take(key)
    if value in (MISSING, None):
        return
    config: Any = value
    if isinstance(value, str):
        config = read_json([Path(value), base_dir / value])
        if config is None:  # not readable here: the stage is in every shipped config's file name
            match = re.search(r"(?:zero|z|stage)[_-]?([0-3])", Path(value).name.lower())
            if not match:
                conv.unsupported(key, "DeepSpeed config not found here and its ZeRO stage is not in its name")
                return
            config = {"zero_optimization": {"stage": int(match.group(1))}}
            if "offload" in value.lower():  # zero3_bf16_cpuoffload_params.json, ds_z3_offload_config.json
                part = "offload_param" if "param" in value.lower() else "offload_optimizer"
                config["zero_optimization"][part] = {"device": "cpu"}
    zero = config.get("zero_optimization", {}) if isinstance(config, Mapping) else {}
    stage = int(zero.get("stage", 0) or 0)
    strategy = {0: "ddp", 1: "ddp", 2: "zero2", 3: "zero3"}[min(stage, 3)]
    note = f"ZeRO stage {stage}" + (" (stage 1 runs as DDP)" if stage == 1 else "")
    conv.put("distributed.strategy", strategy, key=key, note=note, source_value=value,
             status=Status.MAPPED if stage in (0, 2, 3) else Status.APPROXIMATED)
    if _offloaded(zero.get("offload_param")):
        conv.values["distributed.offload"] = "params"
        conv.comments["distributed.offload"] = f"{conv.tool} {key}: zero_optimization.offload_param"
    elif _offloaded(zero.get("offload_optimizer")):
        conv.values["distributed.offload"] = "optimizer"
        conv.comments["distributed.offload"] = f"{conv.tool} {key}: zero_optimization.offload_optimizer"


def _offloaded(section: Any) -> bool:
    return isinstance(section, Mapping) and str(section.get("device", "none")).lower() in ("cpu", "nvme")


def read_json(candidates: Iterable[Path]) -> Any:
    """The first of ``candidates`` that is a readable JSON file, parsed; None when none is."""
    import json

    for candidate in candidates:
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
    return None


def fsdp_strategy(conv: Conversion, key: str, config_key: str) -> None:
    """HF/axolotl FSDP settings (``fsdp: full_shard auto_wrap`` or a list, ``fsdp_config``) → strategy fsdp."""
    value, _ = conv.take(key)
    config = conv.raw(config_key) or {}
    if value in (MISSING, None, False, "", []) and not (isinstance(config, Mapping) and config.get("fsdp_version")):
        conv.handled.add(config_key)
        return
    words = value.split() if isinstance(value, str) else list(value) if isinstance(value, list) else []
    conv.put("distributed.strategy", "fsdp", key=key if conv.present(key) else config_key,
             note="fnsft's FSDP preset shards parameters, gradients and optimizer states")
    conv.handled.add(config_key)
    offload = "offload" in words or any(
        str(config.get(name, "")).lower() == "true" or config.get(name) is True
        for name in ("fsdp_offload_params", "offload_params", "cpu_offload")) if isinstance(config, Mapping) else False
    if offload:
        conv.values["distributed.offload"] = "params"
        conv.comments["distributed.offload"] = f"{conv.tool} {config_key}: parameters offloaded to CPU"
    if conv.present(config_key):
        conv.rows.append(KeyReport(config_key, conv.raw(config_key), "distributed", Status.APPROXIMATED,
                                   "sharding" + (" and CPU offload" if offload else "") + " carried over; wrapping, "
                                   "prefetch and state-dict settings follow fnsft's FSDP preset"))


# --- the output ---------------------------------------------------------------------------------------------

def nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{'a.b': 1}`` → ``{'a': {'b': 1}}`` in the recipe's section order."""
    out: dict[str, Any] = {}
    for path in sorted(values, key=lambda p: (SECTION_ORDER.index(p.split(".")[0])
                                              if p.split(".")[0] in SECTION_ORDER else len(SECTION_ORDER))):
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = values[path]
    return out


def to_yaml(conv: Conversion, header: list[str]) -> str:
    """The recipe as commented YAML: each line says where its value came from; unsupported keys listed last."""
    root = CommentedMap()
    _fill(root, nested(conv.values), "", conv.comments, indent=0)
    roundtrip.set_header(root, header)
    text = roundtrip.dump(root)
    leftovers = conv.unsupported_rows()
    if leftovers:
        text += f"\n# Not supported by fnsft (from the {conv.tool} config; nothing above reproduces them):\n"
        text += "".join(printable(f"#   {row.source}: {format_source(row.value)}  -- {row.note}") + "\n"
                        for row in leftovers)
    return text


def _fill(node: CommentedMap, data: Mapping[str, Any], prefix: str, comments: Mapping[str, str], indent: int) -> None:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            child = CommentedMap()
            node[key] = child
            _fill(child, value, path + ".", comments, indent + 2)
        else:
            node[key] = roundtrip.yaml_value(value)
            if path in comments:
                roundtrip.set_eol_comment(node, key, printable(comments[path]), indent)
