"""PEFT ⇄ full fine-tuning recipe migration: the guide's "Migration Guide" as a table of rules.

"The guide" here and in the changed lines' comments is docs/PEFT_VS_FULL_GUIDE.md.

:func:`migrate` is pure (Recipe → Recipe) and returns every change as data (:class:`Change`), so the command can
comment each changed line, print a summary table or a diff without knowing the rules. :func:`apply_to_yaml`
writes the changes into the user's round-trip YAML, keeping their key order and their comments, except where a
comment would now be false:

* a comment on a line whose value changed described the old value: it moves into fnsft's note, quoted after
  that value (``learning_rate: 2.0e-5  # was 2.0e-4 — "guide: PEFT takes higher learning rates"; full …``);
* a comment on an unchanged line that names the source's method (LoRA/PEFT/adapter, QLoRA/4-bit/nf4, full) and
  not the target's gets ``# written for the source full recipe`` before it;
* each run of header lines that name the source's method or file (``fnsft train recipes/peft-7b.yaml``) gets an
  fnsft line before it: ``the next 4 lines describe the source lora recipe (peft-7b.yaml), not this full one``.

Comments of removed sections go with them. A later migration replaces fnsft's notes; a quoted comment is not put
back on a value migrated back (the source file still has it).

The rules (guide, "Migration Guide" and "Best Practices"; the shipped recipe pairs in recipes/):

* learning rate: PEFT → full divides by a factor inside the guide's 4–10× range, chosen by model size
  (:data:`LR_FACTOR_BY_SIZE`; the size comes from :func:`model_params`); full → PEFT multiplies by the same
  factor, so a round trip returns the original up to rounding to :data:`LR_SIGNIFICANT_DIGITS` significant digits.
* batch: the effective batch (per-device × accumulation × GPUs) is preserved. PEFT → full divides the per-device
  batch by its smallest prime factor and multiplies accumulation by it (4×1 → 2×2); full → PEFT does the reverse
  with the accumulation's smallest prime factor (2×2 → 4×1).
* warmup ratio: ± the difference of the schema's method defaults (0.1 − 0.03 = 0.07), so 0.03 ⇄ 0.1; never
  below 0, and PEFT → full never raises it past 0.5.
* weight decay: PEFT → full raises it to the full default (0.01, "add regularization"); full → PEFT keeps it.
* gradient checkpointing on and checkpoints twice as often for full fine-tuning; half as often back to PEFT.
* adapter and quantization sections are removed for full; PEFT gets LoRA r=16/alpha=32 (the schema defaults)
  unless the recipe sets its own, and ``--to qlora`` adds 4-bit quantization.
* the output directory is renamed (``runs/x-lora`` → ``runs/x-full``; a name without a method gets a suffix) to
  one that no other recipe in the source's folder uses and that is not an existing directory (the shipped
  ``recipes/peft-7b.yaml`` → ``runs/peft-7b-to-full``, since ``recipes/full-7b.yaml`` trains into ``runs/full-7b``).

Every method-dependent value (lr, warmup, weight decay) is written explicitly, computed from the source recipe's
resolved values: the schema fills unset ones per method, so leaving them out would silently change them.

An optional step after the rules: :func:`spread_over_gpus` (``--num-gpus``), keeping the effective batch. Sizing
for a GPU budget with the estimator is :mod:`fnsft.migrate.fit`; files (comments kept) are :mod:`fnsft.migrate.files`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from ruamel.yaml.comments import CommentedMap

from fnsft.errors import RecipeError
from fnsft.estimate.fit import divisors_descending
from fnsft.recipe import roundtrip
from fnsft.recipe.fields import model_at
from fnsft.recipe.schema import (
    CURRENT_VERSION,
    METHOD_DEFAULTS,
    LoraSection,
    QuantizationSection,
    Recipe,
)

Target = Literal["full", "peft", "qlora"]
#: ``--to`` value → ``method.name``. "peft" means plain LoRA; ``--to qlora`` is the quantized variant.
TARGET_METHOD: dict[str, str] = {"full": "full", "peft": "lora", "qlora": "qlora"}

#: The guide's learning-rate ranges ("Best Practices"); a migrated lr outside them is flagged, not clamped.
GUIDE_LR_RANGE: dict[str, tuple[float, float]] = {"peft": (1e-4, 5e-4), "full": (1e-5, 1e-4)}
#: (models with fewer parameters than this, lr factor). Full fine-tuning of bigger models wants lower rates
#: while LoRA rates barely depend on size, so the PEFT/full ratio grows with size: ÷4 below 1B (the guide's
#: quick start: 2e-4 → 5e-5 on a 355M model), ÷5 below 3B, ÷10 from 3B (every shipped 7–8B recipe pair is 10×).
LR_FACTOR_BY_SIZE: tuple[tuple[float, int], ...] = ((1e9, 4), (3e9, 5), (math.inf, 10))
#: A model whose size is unknown gets the ratio of the schema's own defaults (2e-4 / 2e-5).
UNKNOWN_SIZE_LR_FACTOR = round(METHOD_DEFAULTS["lora"]["learning_rate"] / METHOD_DEFAULTS["full"]["learning_rate"])
LR_SIGNIFICANT_DIGITS = 3
WARMUP_STEP = round(METHOD_DEFAULTS["full"]["warmup_ratio"] - METHOD_DEFAULTS["lora"]["warmup_ratio"], 6)
MAX_FULL_WARMUP = 0.5
CHECKPOINT_FREQUENCY_FACTOR = 2

_SIZE_IN_NAME = re.compile(r"(?<![a-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z0-9])", re.IGNORECASE)
_METHOD_WORDS = ("qlora", "lora", "peft", "full")


class Change(BaseModel):
    """One edit of the recipe: ``set`` a dotted path to ``new``, or ``remove`` the section at ``path``."""

    path: str
    action: Literal["set", "remove"] = "set"
    old: Any = None
    new: Any = None
    reason: str
    was_default: bool = False

    @property
    def changes_value(self) -> bool:
        return not (self.was_default and self.old == self.new)

    def comment(self, replaced: str | None = None) -> str:
        """The note written at the end of the changed line: ``was 2e-4 (default); full fine-tuning: lr ÷4 (guide)``.

        ``replaced``: the user's comment on the line, which described the old value; it is quoted after it
        (``was 2e-4 — "guide: PEFT rates"; …``) instead of staying on the line as if it described the new one.
        """
        if not self.changes_value:
            return f"default made explicit; {self.reason}"
        quoted = f' — "{replaced}"' if replaced else ""
        return f"was {format_value(self.old)}{' (default)' if self.was_default else ''}{quoted}; {self.reason}"


class Migration(BaseModel):
    """The migrated recipe, the changes that produced it and any warnings (e.g. lr outside the guide's range)."""

    source_method: str
    target_method: str
    recipe: Recipe
    changes: list[Change]
    warnings: list[str] = []


def format_value(value: Any) -> str:
    """A value as a user would write it in YAML (``2e-4``, ``true``, ``[q_proj, v_proj]``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return roundtrip.format_float(value)
    if value is None:
        return "unset"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def round_significant(value: float, digits: int = LR_SIGNIFICANT_DIGITS) -> float:
    return float(f"{value:.{digits}g}")


def params_from_name(name: str) -> int | None:
    """Parameter count written in a model name (``Llama-2-7b`` → 7e9, ``SmolLM2-135M`` → 135e6, ``8x7B`` → 56e9)."""
    found = None
    for match in _SIZE_IN_NAME.finditer(name.rsplit("/", 1)[-1] if "://" not in name else name):
        experts, number, unit = match.groups()
        found = float(number) * (1e9 if unit.lower() == "b" else 1e6) * (int(experts) if experts else 1)
    return int(found) if found else None


def lr_factor(num_params: int | None) -> tuple[int, str]:
    """The lr factor for a model size and the rule, in words, for the changed line's comment."""
    if num_params is None:
        return UNKNOWN_SIZE_LR_FACTOR, "model of unknown size"
    for bound, factor in LR_FACTOR_BY_SIZE:
        if num_params < bound:
            size = f"{num_params / 1e9:.3g}B" if num_params >= 1e9 else f"{num_params / 1e6:.3g}M"
            return factor, f"{size} model"
    raise AssertionError("LR_FACTOR_BY_SIZE ends with infinity")


def smallest_prime_factor(n: int) -> int:
    return next((p for p in range(2, math.isqrt(n) + 1) if n % p == 0), n)


def world_size(recipe: Recipe) -> int:
    """GPUs in the run: ``distributed.num_processes`` is per node (torchrun's nproc; see fnsft/train/launch.py)."""
    return recipe.distributed.num_processes * recipe.distributed.num_nodes


def effective_batch(recipe: Recipe) -> int:
    training = recipe.training
    return training.per_device_train_batch_size * training.gradient_accumulation_steps * world_size(recipe)


def batch_for_full(per_device: int, accumulation: int) -> tuple[int, int]:
    """Smaller micro-batch, more accumulation, same product (guide: "smaller batch sizes with accumulation")."""
    factor = smallest_prime_factor(per_device) if per_device > 1 else 1
    return per_device // factor, accumulation * factor


def batch_for_peft(per_device: int, accumulation: int) -> tuple[int, int]:
    """Larger micro-batch, less accumulation, same product (guide: "can increase batch size")."""
    factor = smallest_prime_factor(accumulation) if accumulation > 1 else 1
    return per_device * factor, accumulation // factor


def rename_output_dir(path: str, target_method: str, taken: Callable[[str], bool] = lambda _: False) -> str:
    """A run directory for the migrated recipe that nothing else claims (``taken``: another recipe's or an
    existing run's), first found of: the method word swapped or appended (``runs/x-lora`` → ``runs/x-full``,
    ``runs/x`` → ``runs/x-full``), then ``runs/x-lora-to-full``, then that numbered (``-2``, ``-3``, …).
    """
    head, sep, last = path.rstrip("/").rpartition("/")
    pattern = re.compile(rf"(?<![a-z])({'|'.join(_METHOD_WORDS)})(?![a-z])", re.IGNORECASE)
    renamed = pattern.sub(target_method, last, count=1) if pattern.search(last) else f"{last}-{target_method}"
    converted = f"{last}-to-{target_method}"
    names = itertools.chain([renamed, converted], (f"{converted}-{n}" for n in itertools.count(2)))
    return next(f"{head}{sep}{name}" for name in names if not taken(f"{head}{sep}{name}"))


@dataclass(frozen=True)
class Context:
    """What the rules read: the source as written and resolved, the target, and the derived lr and batch plan."""

    written: Recipe
    source: Recipe
    target_method: str
    lr_factor: int
    size_rule: str
    batch: tuple[int, int]
    output_dir_taken: Callable[[str], bool]

    @property
    def direction(self) -> str:
        return direction(self.source.method.name, self.target_method)


@dataclass(frozen=True)
class Rule:
    """One row of the migration table: where it applies, what it writes, and why (shown on the changed line).

    ``value`` returns the new value, :data:`REMOVE` to drop the section, or :data:`KEEP` to leave it alone.
    ``explicit``: write the value even if it equals the source's default (the target must not depend on it).
    """

    path: str
    directions: frozenset[str]
    value: Callable[[Context], Any]
    reason: Callable[[Context], str]
    explicit: bool = False


REMOVE = object()
KEEP = object()
TO_FULL = frozenset({"peft→full"})
TO_PEFT = frozenset({"full→peft"})
BETWEEN = frozenset({"peft→full", "full→peft"})
ANY = frozenset({"peft→full", "full→peft", "peft→peft"})
TO_ANY_PEFT = frozenset({"full→peft", "peft→peft"})


def direction(source_method: str, target_method: str) -> str:
    return f"{'full' if source_method == 'full' else 'peft'}→{'full' if target_method == 'full' else 'peft'}"


def _lr(ctx: Context) -> float:
    lr = ctx.source.training.resolved_value("learning_rate")
    return round_significant(lr / ctx.lr_factor if ctx.target_method == "full" else lr * ctx.lr_factor)


def _warmup(ctx: Context) -> float | object:
    if ctx.source.training.warmup_steps is not None:
        return KEEP  # warmup given in steps: the guide's ratio rule does not apply, the steps stay as written
    warmup = ctx.source.training.resolved_value("warmup_ratio")
    if ctx.target_method == "full":
        return round(min(warmup + WARMUP_STEP, max(warmup, MAX_FULL_WARMUP)), 6)
    return round(max(warmup - WARMUP_STEP, 0.0), 6)


def _save_steps(ctx: Context) -> int:
    steps = ctx.source.training.save_steps
    return max(1, steps // CHECKPOINT_FREQUENCY_FACTOR) if ctx.target_method == "full" else steps * CHECKPOINT_FREQUENCY_FACTOR


def _quantized(ctx: Context) -> bool:
    return ctx.target_method == "qlora"


def _written(ctx: Context, section: BaseModel, field: str, default: Any) -> Any:
    """The user's own value of a field, else the schema default (the guide's starting point)."""
    return getattr(section, field) if field in section.model_fields_set else default


#: The migration table. Order is the order of the summary table.
RULES: tuple[Rule, ...] = (
    Rule("method.name", ANY, lambda c: c.target_method,
         lambda c: {"peft→full": "full fine-tuning (guide: add --no_peft)",
                    "full→peft": "back to PEFT (guide: remove --no_peft)",
                    "peft→peft": "4-bit base model (QLoRA)" if _quantized(c) else "unquantized base model"}[c.direction]),
    Rule("method.lora", TO_FULL, lambda c: REMOVE, lambda c: "full fine-tuning trains every weight, no adapter"),
    Rule("method.quantization", ANY, lambda c: KEEP if _quantized(c) else REMOVE,
         lambda c: "no quantized base model outside QLoRA"),
    Rule("method.lora.r", TO_PEFT, lambda c: _written(c, c.written.method.lora, "r", LoraSection().r),
         lambda c: "PEFT: LoRA rank (guide: start with r=16, alpha=32)", explicit=True),
    Rule("method.lora.alpha", TO_PEFT, lambda c: _written(c, c.written.method.lora, "alpha", LoraSection().alpha),
         lambda c: "PEFT: LoRA alpha (guide: start with r=16, alpha=32)", explicit=True),
    Rule("method.quantization.bits", TO_ANY_PEFT,
         lambda c: _written(c, c.written.method.quantization, "bits", QuantizationSection().bits) if _quantized(c) else KEEP,
         lambda c: "QLoRA: quantized nf4 base model (guide: enable quantization for memory efficiency)", explicit=True),
    Rule("training.learning_rate", BETWEEN, _lr,
         lambda c: (f"full fine-tuning: lr ÷{c.lr_factor} (guide: 4-10x lower; ÷{c.lr_factor} for a {c.size_rule})"
                    if c.target_method == "full"
                    else f"PEFT: lr ×{c.lr_factor} (guide: 4-10x higher; ×{c.lr_factor} for a {c.size_rule})"),
         explicit=True),
    Rule("training.per_device_train_batch_size", BETWEEN, lambda c: c.batch[0],
         lambda c: ("full fine-tuning: smaller per-device batch (guide), same effective batch"
                    if c.target_method == "full" else "PEFT: larger per-device batch (guide), same effective batch")),
    Rule("training.gradient_accumulation_steps", BETWEEN, lambda c: c.batch[1],
         lambda c: ("full fine-tuning: more accumulation keeps the effective batch"
                    if c.target_method == "full" else "PEFT: less accumulation keeps the effective batch")),
    Rule("training.warmup_ratio", BETWEEN, _warmup,
         lambda c: (f"full fine-tuning: warmup +{WARMUP_STEP:g} (guide: increase warmup, ~0.1)"
                    if c.target_method == "full" else f"PEFT: warmup -{WARMUP_STEP:g} (guide: reduce warmup)"),
         explicit=True),
    Rule("training.weight_decay", BETWEEN,
         lambda c: (max(c.source.training.resolved_value("weight_decay"), METHOD_DEFAULTS["full"]["weight_decay"])
                    if c.target_method == "full" else c.source.training.resolved_value("weight_decay")),
         lambda c: ("full fine-tuning: weight decay at least 0.01 (guide: add regularization)"
                    if c.target_method == "full" else "kept, written out (the PEFT default would be 0)"),
         explicit=True),
    Rule("training.gradient_checkpointing", TO_FULL, lambda c: True,
         lambda c: "full fine-tuning: gradient checkpointing on (guide)"),
    Rule("training.save_steps", BETWEEN, _save_steps,
         lambda c: ("full fine-tuning: checkpoints twice as often (guide: save more frequently)"
                    if c.target_method == "full" else "PEFT: checkpoints half as often (back from full)")),
    Rule("output.dir", ANY, lambda c: rename_output_dir(c.source.output.dir, c.target_method, c.output_dir_taken),
         lambda c: "a new run directory (no other recipe beside the source uses it), so the source's run is kept"),
)


def get_path(data: Any, dotted: str) -> Any:
    """The value at a dotted path of a Recipe or mapping (None when a section is missing)."""
    node = data
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, Mapping) else getattr(node, key, None)
        if node is None:
            return None
    return node


def _set_in(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    if value is REMOVE:
        data.pop(leaf, None)
    else:
        data[leaf] = value


def migrate(recipe: Recipe, to: Target, *, num_params: int | None = None,
            output_dir_taken: Callable[[str], bool] = lambda _: False) -> Migration:
    """Apply the migration table to a recipe.

    Args:
        recipe: The recipe as written (method-dependent values may be unset; they are resolved here).
        to: ``full``, ``peft`` (LoRA) or ``qlora``.
        num_params: Model size for the lr rule; None reads it from the model name, else the unknown-size factor.
        output_dir_taken: Whether a run directory is already claimed (by another recipe, or on disk); the
            migrated recipe's ``output.dir`` is one that is not (:func:`rename_output_dir`).

    Returns:
        The migrated recipe (valid, with lr/warmup/weight decay explicit) and the changes, in table order.

    Raises:
        RecipeError: ``to`` is not a known target, or the recipe already uses that method.
    """
    if to not in TARGET_METHOD:
        raise RecipeError(f"--to {to!r}: expected one of {', '.join(TARGET_METHOD)}")
    target_method = TARGET_METHOD[to]
    source = recipe.resolved()
    if source.method.name == target_method:
        raise AlreadyMigrated(f"the recipe already uses method '{target_method}'; nothing to migrate")
    if num_params is None:
        num_params = params_from_name(recipe.model.name_or_path)
    factor, size_rule = lr_factor(num_params)
    training = source.training
    split = batch_for_full if target_method == "full" else batch_for_peft
    ctx = Context(written=recipe, source=source, target_method=target_method, lr_factor=factor, size_rule=size_rule,
                  batch=split(training.per_device_train_batch_size, training.gradient_accumulation_steps),
                  output_dir_taken=output_dir_taken)

    data = recipe.model_dump(mode="json", exclude_unset=True)
    changes: list[Change] = []
    for rule in RULES:
        if ctx.direction not in rule.directions:
            continue
        new = rule.value(ctx)
        if new is KEEP:
            continue
        old = get_path(source, rule.path)
        written = get_path(data, rule.path)
        if new is REMOVE:
            if written is not None:
                changes.append(Change(path=rule.path, action="remove", old=old, reason=rule.reason(ctx)))
        elif new != old or (rule.explicit and written != new):
            changes.append(Change(path=rule.path, old=old, new=new, reason=rule.reason(ctx), was_default=written is None))
        _set_in(data, rule.path, new)
    migrated = Recipe.model_validate(data)
    if effective_batch(migrated) != effective_batch(source):
        raise AssertionError("a migration rule changed the effective batch")  # a bug in RULES, never user input
    return Migration(source_method=source.method.name, target_method=target_method, recipe=migrated,
                     changes=changes, warnings=lr_warnings(migrated))


class AlreadyMigrated(RecipeError):
    """The recipe already uses the target method (the command says so and exits 0 without writing)."""


def lr_warnings(recipe: Recipe) -> list[str]:
    """A learning rate outside the guide's range for the recipe's method (flagged, not clamped)."""
    family = "full" if recipe.method.name == "full" else "peft"
    low, high = GUIDE_LR_RANGE[family]
    lr = recipe.resolved().training.resolved_value("learning_rate")
    if low <= lr <= high:
        return []
    return [f"training.learning_rate {format_value(lr)} is outside the guide's {family} range "
            f"{format_value(low)}..{format_value(high)}; kept, so that migrating back returns the original"]


#: Words by which a comment names a method; a comment naming the source's (and not the target's) is stale.
_METHOD_WORDS_IN_COMMENTS: dict[str, tuple[str, ...]] = {
    "full": ("full",),
    "lora": ("lora", "peft", "adapters?"),
    "qlora": ("qlora", "lora", "peft", "adapters?", "4-?bit", "nf4", r"quantiz\w*"),
}


@dataclass(frozen=True)
class StaleComments:
    """Which of the user's comments a method change makes false: those naming the source's method or file."""

    source_method: str
    target_method: str
    source_name: str  # the source file's name: a header's `fnsft train recipes/peft-7b.yaml` trains that file

    def names_source(self, comment: str) -> bool:
        words = [w for w in _METHOD_WORDS_IN_COMMENTS[self.source_method]
                 if w not in _METHOD_WORDS_IN_COMMENTS[self.target_method]]
        pattern = re.compile(rf"(?<![a-z0-9])({'|'.join(words)})(?![a-z0-9])", re.IGNORECASE) if words else None
        return bool(pattern and pattern.search(comment)) or bool(self.source_name and self.source_name in comment)

    def header_marks(self, lines: list[str]) -> dict[int, str]:
        """Before each run of header lines that name the source: a line saying what they describe."""
        marks: dict[int, str] = {}
        start = 0
        while start < len(lines):
            end = start
            while end < len(lines) and self.names_source(lines[end]):
                end += 1
            if end > start:
                count = "the next line describes" if end - start == 1 else f"the next {end - start} lines describe"
                marks[start] = (f"{count} the source {self.source_method} recipe ({self.source_name}), "
                                f"not this {self.target_method} one")
            start = end + 1
        return marks

    @property
    def note(self) -> str:
        """Put before a kept user comment on an unchanged line that names the source's method."""
        return f"{roundtrip.SOURCE_NOTE} {self.source_method} recipe"


def _maps(node: Any) -> Iterable[CommentedMap]:
    """Every mapping of the YAML tree (those inside lists too), parents first."""
    if isinstance(node, CommentedMap):
        yield node
    children = node.values() if isinstance(node, CommentedMap) else node if isinstance(node, list) else ()
    for child in children:
        yield from _maps(child)


def apply_to_yaml(root: CommentedMap, changes: Iterable[Change], header: list[str],
                  stale: StaleComments | None = None) -> CommentedMap:
    """Write changes into round-trip YAML in place: each changed line gets ``# was X; why``, removed sections are
    noted on their parent's first remaining line, missing keys are added in schema order.

    The user's comments stay, except where they would now be false: the comment on a line whose value changed
    described the old value, so it moves into fnsft's note, quoted after that value (``# was 2.0e-4 — "guide:
    PEFT takes higher learning rates"; full fine-tuning: lr ÷10``). With ``stale`` (a method change), a comment
    on an unchanged line that names the source's method gets ``written for the source lora recipe`` before it,
    and each run of header lines naming the source's method or file gets a line before it saying they describe
    the source recipe. Comments of removed sections go with them.
    """
    def order(keys: list[str]) -> list[str]:
        model = model_at(keys)
        return list(model.model_fields) if model else []

    if "version" not in root:
        roundtrip.insert_key(root, "version", CURRENT_VERSION, order([]))
        roundtrip.set_eol_comment(root, "version", "added: recipe schema version")
    comments: dict[tuple[int, str], tuple[CommentedMap, str, list[str], int]] = {}
    replaced: set[tuple[int, str]] = set()  # lines whose user comment moved into fnsft's note
    removals = []
    for change in changes:
        *parents, leaf = change.path.split(".")
        if change.action == "remove":
            removals.append(change)
            continue
        node = root
        for depth, key in enumerate(parents):
            if not isinstance(node.get(key), CommentedMap):
                roundtrip.insert_key(node, key, CommentedMap(), order(parents[:depth]))
            node = node[key]
        value = roundtrip.yaml_value(change.new)
        user = roundtrip.user_eol_comment(node, leaf) if leaf in node and change.changes_value else None
        if leaf in node:
            node[leaf] = value
        else:
            roundtrip.insert_key(node, leaf, value, order(parents))
        comments.setdefault((id(node), leaf), (node, leaf, [], 2 * len(parents)))[2].append(change.comment(user))
        if user:
            replaced.add((id(node), leaf))
    for change in removals:
        *parents, leaf = change.path.split(".")
        node = get_path(root, ".".join(parents)) if parents else root
        if not isinstance(node, CommentedMap) or leaf not in node:
            continue
        roundtrip.delete_key(node, leaf)
        if len(node):
            anchor = next(iter(node))
            entry = comments.setdefault((id(node), anchor), (node, anchor, [], 2 * len(parents)))
            entry[2].append(f"removed {leaf}: {change.reason}")
    if stale is not None:
        for node in _maps(root):
            for key in node:
                user = roundtrip.user_eol_comment(node, key)
                if user and (id(node), key) not in replaced and stale.names_source(user):
                    comments.setdefault((id(node), key), (node, key, [], 0))[2].append(stale.note)
    for node, key, notes, indent in comments.values():
        node.fa.set_block_style()  # a comment cannot end a line inside {a: 1, b: 2}
        roundtrip.set_eol_comment(node, key, "; ".join(notes), indent,
                                  keep_user=(id(node), key) not in replaced)
    roundtrip.set_header(root, header, stale.header_marks if stale is not None else None)
    return root


def spread_over_gpus(recipe: Recipe, num_gpus: int) -> tuple[Recipe, list[Change]]:
    """Run on ``num_gpus`` GPUs in total with the same effective batch (fewer micro-batches per GPU).

    Keeps the per-device batch when it divides the new per-GPU share, else takes the largest one that does.

    Raises:
        RecipeError: the GPUs cannot be spread evenly over the nodes, or the effective batch over the GPUs.
    """
    dist = recipe.distributed
    if num_gpus < 1:
        raise RecipeError(f"--num-gpus must be at least 1, got {num_gpus}")
    if num_gpus % dist.num_nodes:
        raise RecipeError(f"--num-gpus {num_gpus} cannot be spread evenly over distributed.num_nodes={dist.num_nodes}")
    total = effective_batch(recipe)
    if total % num_gpus:
        raise RecipeError(
            f"the effective batch {total} cannot be split evenly over {num_gpus} GPUs; pick a GPU count that divides "
            f"it ({', '.join(str(d) for d in reversed(divisors_descending(total)))}) or change the batch first"
        )
    share = total // num_gpus
    per_device = next(d for d in divisors_descending(share) if d <= recipe.training.per_device_train_batch_size)
    why = f"{num_gpus} GPU(s), same effective batch {total}"
    updates = {
        "distributed.num_processes": (num_gpus // dist.num_nodes, f"{num_gpus} GPU(s) in total (per node)"),
        "training.per_device_train_batch_size": (per_device, why),
        "training.gradient_accumulation_steps": (share // per_device, why),
    }
    return with_updates(recipe, updates)


def with_updates(recipe: Recipe, updates: Mapping[str, tuple[Any, str]]) -> tuple[Recipe, list[Change]]:
    """Set dotted paths on a recipe; the changes list only the values that differ."""
    data = recipe.model_dump(mode="json", exclude_unset=True)
    changes = []
    for path, (new, reason) in updates.items():
        old = get_path(recipe, path)
        if new != old:
            changes.append(Change(path=path, old=old, new=new, reason=reason, was_default=get_path(data, path) is None))
            _set_in(data, path, new)
    return Recipe.model_validate(data), changes


def merge_changes(first: list[Change], second: list[Change]) -> list[Change]:
    """Changes of two steps as one: a path changed twice keeps the first's old value and the later reason."""
    merged = {c.path: c for c in first}
    for change in second:
        earlier = merged.get(change.path)
        if earlier is None:
            merged[change.path] = change
        elif earlier.old == change.new:
            del merged[change.path]  # the second step undid the first
        else:
            merged[change.path] = earlier.model_copy(update={"new": change.new, "reason": change.reason})
    return list(merged.values())
