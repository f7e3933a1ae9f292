"""YAML → Recipe, with errors that name the file and line, did-you-mean for unknown keys, and overrides.

Precedence, lowest first: schema defaults < recipe file < guide-style flags < ``--set a.b=value``.
"""

from __future__ import annotations

import io
import reprlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError

from fnsft.errors import RecipeError
from fnsft.recipe import versions
from fnsft.recipe.fields import FLAG_PATHS, METHOD_FLAGS, did_you_mean, model_at
from fnsft.recipe.schema import Recipe


def _yaml() -> YAML:
    yaml = YAML(typ="rt")  # round-trip: keeps line numbers (and, for migrate-config, comments and order)
    yaml.allow_duplicate_keys = False
    return yaml


#: A recipe is a few hundred bytes to a few KB; anything far larger is not a recipe (and parsing it takes minutes).
MAX_RECIPE_BYTES = 1 << 20
#: Values in a recipe after YAML aliases are expanded (a ~700-byte "billion laughs" file expands to 10^9).
MAX_RECIPE_VALUES = 100_000


def parse_yaml_file(path: str | Path) -> CommentedMap:
    """Read a YAML mapping, turning syntax errors and missing files into RecipeError with file:line."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: {path.stat().st_size:,} bytes is too large for a recipe (limit {MAX_RECIPE_BYTES:,})")
    try:
        data = _yaml().load(path.read_text(encoding="utf-8"))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise RecipeError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except Exception as exc:  # ruamel raises several unrelated types (duplicate keys, bad unicode, ...)
        raise RecipeError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty")
    if not isinstance(data, CommentedMap):  # the round-trip loader reads every mapping as one
        raise RecipeError(f"{path}:1: a recipe must be a mapping of sections (model:, data:, ...), got {type(data).__name__}")
    check_expanded_size(data, str(path))
    return data


def check_expanded_size(data: Any, source: str, limit: int = MAX_RECIPE_VALUES) -> None:
    """Refuse a document whose values, with every YAML alias expanded, number more than ``limit``.

    Aliases share one object, so parsing is cheap, but validating, copying or printing the value visits every
    expanded node. The walk below counts like they do and stops at the limit, so it costs at most ``limit`` steps
    (a self-referencing alias reaches the limit too).
    """
    budget = limit
    stack = [data]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise RecipeError(
                f"{source}: the recipe expands to more than {limit:,} values (YAML aliases &/* repeat values); "
                "write the values out or remove the aliases"
            )
        if isinstance(node, Mapping):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set):
            stack.extend(node)


def parse_scalar(text: str) -> Any:
    """A command-line value read as YAML, so `1e-4` is a float, `true` a bool and `[a, b]` a list."""
    try:
        value = _yaml().load(io.StringIO(text))
    except Exception:
        return text
    return text if value is None and text.strip() not in ("null", "~", "") else value


def set_path(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = {}
            node[key] = child
        if not isinstance(child, dict):
            raise RecipeError(f"cannot set {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _node(data: dict, dotted: str) -> dict:
    for key in dotted.split(".") if dotted else []:
        data = data[key]
    return data


def apply_overrides(data: dict, flags: Mapping[str, Any] | None = None, sets: Iterable[str] = ()) -> dict:
    """Apply guide-style flags (``{'learning_rate': 1e-4, 'no_peft': True}``) and ``a.b=value`` strings."""
    for name, value in (flags or {}).items():
        if value is None:
            continue
        if name in METHOD_FLAGS:
            if value:
                set_path(data, "method.name", METHOD_FLAGS[name][0])
        elif name in FLAG_PATHS:
            set_path(data, FLAG_PATHS[name], value)
        else:
            raise RecipeError(f"unknown flag --{name}{did_you_mean(name, [*FLAG_PATHS, *METHOD_FLAGS])}")
    for item in sets:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.learning_rate=1e-4")
        key, raw = item.split("=", 1)
        key, replaced = _check_path(key.strip())
        set_path(data, key, parse_scalar(raw))
        parent = _node(data, key.rpartition(".")[0])
        for alias in replaced:  # the file's `file:` gives way to --set mask.file=… (one spelling per key)
            parent.pop(alias, None)
    if (flags or {}).get("no_peft") and (flags or {}).get("use_4bit"):
        raise RecipeError("--no_peft and --use_4bit conflict: 4-bit quantization needs PEFT (QLoRA). Drop one of them.")
    return data


def _aliases(field: FieldInfo) -> list[str]:
    """The other names a YAML file may use for a field (``mask.file`` for ``mask.path``)."""
    alias = field.validation_alias
    return [str(choice) for choice in alias.choices] if isinstance(alias, AliasChoices) else []


def _field_name(model: type[BaseModel], key: str) -> str | None:
    if key in model.model_fields:
        return key
    return next((name for name, field in model.model_fields.items() if key in _aliases(field)), None)


def _check_path(dotted: str) -> tuple[str, list[str]]:
    """The path ``--set`` writes (aliases spelled as the field's name) and the alias spellings it replaces."""
    keys = dotted.split(".")
    for depth, key in enumerate(keys):
        model = model_at(keys[:depth])
        if model is None:
            break  # inside a free-form value (a list, a dict): pydantic validates it later
        name = _field_name(model, key)
        if name is None:
            prefix = ".".join(keys[:depth])
            raise RecipeError(
                f"--set {dotted}: unknown key '{key}'{' in ' + prefix if prefix else ''}"
                f"{did_you_mean(key, model.model_fields)}"
            )
        keys[depth] = name
        if depth == len(keys) - 1:
            return ".".join(keys), [alias for alias in _aliases(model.model_fields[name]) if alias != name]
    return ".".join(keys), []


def _line_of(data: Any, loc: tuple) -> int | None:
    """1-based line of the deepest key of loc that the round-trip YAML still has position info for."""
    line = None
    node = data
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            position = node.lc.data.get(key)  # None for a key added in memory (--set, a schema upgrade)
            line = position[0] + 1 if position else line
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            if hasattr(node, "lc"):
                line = node.lc.item(key)[0] + 1
            node = node[key]
        else:
            break
    return line


def _short_repr() -> reprlib.Repr:
    """repr of a rejected value, cut while it is built (a huge value must not be printed whole and then cut)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxlong, short.maxother = 2, 60, 40, 60
    short.maxlist = short.maxtuple = short.maxset = short.maxdict = 4
    return short


_SHORT_REPR = _short_repr()


def format_validation_error(exc: ValidationError, data: Any, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        line = _line_of(data, loc)
        where = f"{source}:{line}" if line else source
        if err["type"] == "extra_forbidden":
            parent = model_at(loc[:-1])
            hint = did_you_mean(str(loc[-1]), parent.model_fields) if parent else ""
            lines.append(f"{where}: unknown key '{dotted}'{hint}")
        elif err["type"] == "missing":
            lines.append(f"{where}: missing required key '{dotted}'")
        else:
            got = err.get("input")
            shown = _SHORT_REPR.repr(got) if not isinstance(got, Mapping) else "a mapping"
            lines.append(f"{where}: {dotted}: {err['msg']} (got {shown[:80]})")
    return "\n".join(lines)


def validate(data: Mapping[str, Any], source: str = "<recipe>", raw: Any = None) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, raw if raw is not None else data, source)) from None


def load_recipe(
    path: str | Path | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
) -> Recipe:
    """Load, upgrade to the current schema, apply overrides and validate. ``path=None`` builds from flags alone."""
    source = str(path) if path is not None else "<command line>"
    raw: Any = parse_yaml_file(path) if path is not None else CommentedMap()
    data, _notes = versions.upgrade(raw, source)
    data = apply_overrides(data, flags, sets)
    if path is None and "model" not in data:
        raise RecipeError("no recipe file and no --model_name_or_path: give one of them (see `fnsft train --help`)")
    if path is None and "data" not in data:
        raise RecipeError("no recipe file and no --dataset_name_or_path: give one of them (see `fnsft train --help`)")
    return validate(data, source, raw=data)  # an upgraded map keeps each old key's line for errors


def yaml_float(value: float) -> str:
    """A float spelled so YAML 1.1 readers (PyYAML) also see a float: 5e-05 → 5.0e-05."""
    text = repr(float(value))
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _represent_float(representer, value: float):
    if value != value or value in (float("inf"), float("-inf")):
        return representer.represent_float(value)
    return representer.represent_scalar("tag:yaml.org,2002:float", yaml_float(value))


def dump_recipe(recipe: Recipe) -> str:
    """YAML text of a recipe (block style, keys in schema order)."""
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # keep schema order (ruamel types it None)
    yaml.representer.add_representer(float, _represent_float)
    yaml.dump(recipe.to_dict(), out)
    return out.getvalue()
