"""The mask file (schema v1): component → layer → neuron indices, with the provenance needed to trust it.

It holds no timestamp or host name on purpose: the same model, inputs and seed give a bitwise-identical file.
Loading validates the JSON; :func:`check_against_model` refuses a file built for another model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fnsft.atomic import atomic_write_text
from fnsft.errors import MaskError
from fnsft.mask.capture import Architecture, CapturePoint

SCHEMA: Final = "fnsft.mask"
SCHEMA_VERSION: Final = 1
NUMBER_LIST = re.compile(r"\[\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*\]")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelIdentity(Strict):
    name: str = Field(description="What the user called the model (hub id, path, package:// spec).")
    weights: str | None = Field(description="Weights fingerprint: GGUF sha256, directory digest, or hub id@revision.")
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int | None


class DataProvenance(Strict):
    source: str = Field(description="Where the text came from (recipe data path or file).")
    format: str | None = None
    fingerprint: str = Field(description="sha256 of the exact token ids analysed, in order.")
    samples: int
    tokens: int
    max_tokens: int | None
    seed: int


class ICAStats(Strict):
    converged: bool
    n_iter: int
    max_iter: int
    tol: float
    warnings: list[str] = Field(default_factory=list)


class Method(Strict):
    algorithm: Literal["standardize+streaming-pca+fastica"] = "standardize+streaming-pca+fastica"
    components: int
    pca_dims: int
    threshold: str
    seed: int
    ica: ICAStats


class Component(Strict):
    id: int
    neurons: int
    share: float = Field(description="Share of all captured neurons.")
    layers_touched: int
    variance_share: float = Field(description="Share of the standardized variance this component's map carries.")
    source_kurtosis: float = Field(description="Excess kurtosis of the component's time course (non-Gaussianity).")
    layers: dict[str, list[int]] = Field(description="Layer id → sorted neuron indices.")

    def layer_sets(self) -> dict[int, list[int]]:
        return {int(layer): neurons for layer, neurons in self.layers.items()}


class MaskFile(Strict):
    schema_name: Literal["fnsft.mask"] = Field(SCHEMA, alias="schema")
    version: Literal[1] = SCHEMA_VERSION
    model: ModelIdentity
    capture: CapturePoint
    width: int = Field(description="Neurons per layer at the capture point.")
    layers: list[int] = Field(description="Layers that were captured and analysed.")
    data: DataProvenance
    method: Method
    libraries: dict[str, str]
    components: list[Component]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def component(self, component_id: int) -> Component:
        for item in self.components:
            if item.id == component_id:
                return item
        known = ", ".join(str(c.id) for c in self.components)
        raise MaskError(f"component {component_id} is not in the mask file (it has components {known})")

    def union(self, component_ids: list[int]) -> dict[int, set[int]]:
        """Layer → neuron set over the given components."""
        merged: dict[int, set[int]] = {}
        for component_id in component_ids:
            for layer, neurons in self.component(component_id).layer_sets().items():
                merged.setdefault(layer, set()).update(neurons)
        return merged

    @property
    def total_neurons(self) -> int:
        return self.width * len(self.layers)

    def to_json(self) -> str:
        text = json.dumps(self.model_dump(mode="json", by_alias=True), indent=1, sort_keys=False)
        # One line per neuron list: readable provenance, compact index lists.
        return NUMBER_LIST.sub(lambda m: "[" + ", ".join(n.strip() for n in m.group(1).split(",")) + "]", text) + "\n"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("fnsft", "torch", "transformers", "peft", "scikit-learn", "scipy", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def weights_fingerprint(source_identity: dict[str, Any] | None) -> str | None:
    """The part of a ModelSource identity that names the weights (not where they happen to be on disk)."""
    if not source_identity:
        return None
    kind = source_identity.get("source")
    if kind == "gguf":
        return f"gguf:sha256:{source_identity['sha256']}"
    if kind == "dir":
        return f"dir:files:{source_identity['files_digest']}"
    if kind == "hub":
        return f"hub:{source_identity['repo_id']}@{source_identity.get('revision') or 'main'}"
    return None


def save_mask(mask: MaskFile, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, mask.to_json())
    return path


def load_mask(path: str | Path) -> MaskFile:
    """Read and validate a mask file; a missing, malformed or wrong-version file is a MaskError."""
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"{path}: mask file not found (build one with `fnsft mask build`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MaskError(f"{path}: not a JSON mask file ({exc})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        hint = " (an old predecessor template file? rebuild it with `fnsft mask build`)" if isinstance(raw, dict) and "templates" in raw else ""
        raise MaskError(f"{path}: not an fnsft mask file{hint}")
    if raw.get("version") != SCHEMA_VERSION:
        raise MaskError(f"{path}: mask schema version {raw.get('version')!r} is not supported (this fnsft reads v{SCHEMA_VERSION})")
    try:
        mask = MaskFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MaskError(f"{path}: invalid mask file at {where}: {first['msg']}") from None
    _check_consistency(mask, path)
    return mask


def _check_consistency(mask: MaskFile, path: Path) -> None:
    captured = set(mask.layers)
    for component in mask.components:
        for layer, neurons in component.layer_sets().items():
            if layer not in captured:
                raise MaskError(f"{path}: component {component.id} names layer {layer}, which was not captured")
            if neurons and not 0 <= min(neurons) <= max(neurons) < mask.width:
                raise MaskError(f"{path}: component {component.id} layer {layer} has neurons outside 0..{mask.width - 1}")


def check_against_model(
    mask: MaskFile, arch: Architecture, source_identity: dict[str, Any] | None = None, *, same_weights: bool = True
) -> None:
    """Refuse a mask built for a different model: shape always; weights too (when both sides know them)
    unless ``same_weights`` is False, e.g. to lesion a fine-tuned descendant of the mask's base model."""
    mismatches = []
    if mask.model.num_layers != arch.num_layers:
        mismatches.append(f"{mask.model.num_layers} layers vs the model's {arch.num_layers}")
    if mask.model.model_type != arch.model_type:
        mismatches.append(f"model type {mask.model.model_type} vs {arch.model_type}")
    width = arch.width(mask.capture)
    if mask.width != width:
        mismatches.append(f"{mask.capture} width {mask.width} vs the model's {width}")
    here = weights_fingerprint(source_identity)
    if not mismatches and same_weights and here and mask.model.weights and here != mask.model.weights:
        mismatches.append(f"weights {mask.model.weights} vs this model's {here}")
    if mismatches:
        raise MaskError(
            f"mask file was built for {mask.model.name} ({mask.model.architecture}) and does not match this model: "
            + "; ".join(mismatches)
        )


def identity_for(name: str, arch: Architecture, source_identity: dict[str, Any] | None) -> ModelIdentity:
    return ModelIdentity(
        name=name,
        weights=weights_fingerprint(source_identity),
        architecture=arch.architecture,
        model_type=arch.model_type,
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
    )
