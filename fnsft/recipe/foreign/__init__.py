"""Other tools' configs → fnsft recipes (``fnsft migrate-config FILE --from axolotl|llama-factory|torchtune|trl``).

One module per tool holds that tool's defaults (with the version they were read from), its signature keys and
its ``convert`` rules; :mod:`.base` holds the key-by-key bookkeeping they share. Torch-free, like all of recipe/.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fnsft.errors import RecipeError
from fnsft.recipe.foreign import axolotl, llama_factory, torchtune, trl
from fnsft.recipe.foreign.base import Conversion, KeyReport, Status, format_source, to_yaml
from fnsft.recipe.schema import Recipe

__all__ = ["TOOLS", "ForeignConversion", "KeyReport", "Status", "convert_file", "detect_tool", "format_source",
           "read_config"]

TOOLS: dict[str, ModuleType] = {module.NAME: module for module in (axolotl, llama_factory, torchtune, trl)}


@dataclass
class ForeignConversion:
    tool: str
    detected: bool
    recipe: Recipe
    text: str
    rows: list[KeyReport]

    def unsupported_rows(self) -> list[KeyReport]:
        return [row for row in self.rows if row.status == Status.UNSUPPORTED]

    def count(self, status: Status) -> int:
        return sum(row.status == status for row in self.rows)


def _keys(data: Mapping[str, Any]) -> set[str]:
    return {str(key) for key in data}


def _has_component(data: Any) -> bool:
    if isinstance(data, Mapping):
        return "_component_" in data or any(_has_component(v) for v in data.values())
    return isinstance(data, list) and any(_has_component(v) for v in data)


def detect_tool(data: Mapping[str, Any]) -> str | None:
    """The tool a config belongs to, from its keys; None for an fnsft recipe (any schema version) or unknown."""
    keys = _keys(data)
    # torchtune configs have a model: section too, but always with _component_ somewhere
    if ("version" in keys or keys & set(Recipe.model_fields)) and not _has_component(data):
        return None
    if _has_component(data):
        return torchtune.NAME
    scores = {name: len(keys & set(module.SIGNATURE)) for name, module in TOOLS.items() if name != torchtune.NAME}
    best = max(scores, key=lambda name: scores[name])
    if scores[best] >= 2 or (scores[best] == 1 and best == trl.NAME and "model_name_or_path" in keys):
        return best
    return None


def read_config(path: Path) -> Any:
    from fnsft.recipe.load import parse_yaml_file

    return parse_yaml_file(path)


def convert_file(path: str | Path, tool: str = "auto", *, command: str, output: str | Path) -> ForeignConversion:
    """Convert another tool's config file into a validated fnsft recipe (text with comments, and the rows)."""
    from fnsft.recipe.load import validate

    path = Path(path)
    data = read_config(path)
    detected = tool == "auto"
    if detected:
        found = detect_tool(data)
        if found is None:
            raise RecipeError(f"{path}: not a config of {', '.join(TOOLS)} (no key of theirs found); "
                              "name the tool with --from, or use --to/--upgrade for an fnsft recipe")
        tool = found
    if tool not in TOOLS:
        raise RecipeError(f"--from {tool}: expected auto or one of {', '.join(TOOLS)}")
    module = TOOLS[tool]
    conv = Conversion(tool=tool, source=data, defaults=module.DEFAULTS, origin=str(path))
    try:
        module.convert(conv, path)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:  # a value of an unexpected shape
        raise RecipeError(f"{path}: cannot read this {tool} config: {type(exc).__name__}: {exc}") from None
    if "model.name_or_path" not in conv.values:
        raise RecipeError(f"{path}: no base model found in this {tool} config ({module.SIGNATURE[0]} is missing)")
    if "data.path" not in conv.values:
        conv.values["data.path"] = "data/train.jsonl"
        conv.comments["data.path"] = f"no dataset in the {tool} config: point this at your data"
        conv.rows.append(KeyReport("(dataset)", None, "data.path", Status.APPROXIMATED, "no dataset in the source"))
    header = [f"fnsft recipe converted from the {tool} config {path} with {module.VERSION} defaults where it is silent",
              f"made by: {command}", f"run it:  fnsft train {output}",
              "each line's comment says which source key it came from; 'default of' lines are that tool's defaults"]
    text = to_yaml(conv, header)
    recipe = validate(_load_text(text), source=str(output))
    return ForeignConversion(tool=tool, detected=detected, recipe=recipe, text=text, rows=conv.rows)


def _load_text(text: str) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text)
