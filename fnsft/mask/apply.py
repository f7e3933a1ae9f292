"""Masks as forward hooks: lesion (zero the selected neurons) or preserve (zero every other neuron).

Every layer in scope gets a hook, even one where the selected networks have no neurons (preserve then zeroes
that layer completely) — the predecessor skipped such layers, so "preserve" silently left them intact.
Hooks live outside the parameters, so ``state_dict()`` keys stay standard and every checkpoint loads with
plain ``from_pretrained`` / ``PeftModel.from_pretrained``.

Optional row freezing (training): the masked channels' rows of the MLP down projection keep their exact
values. Their gradients are zeroed by a tensor hook (so Adam moments stay zero) and the rows are copied back
after every optimizer step (decoupled weight decay would otherwise still shrink them). With LoRA the rows of
``lora_B`` are frozen (B starts at zero, so the adapter adds nothing to those channels); with full fine-tuning
the base weight's rows (and bias entries).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fnsft.errors import MaskError
from fnsft.hashing import file_sha256
from fnsft.mask.capture import (
    CapturePoint,
    block_mlp,
    describe_architecture,
    find_decoder_blocks,
    mlp_down_proj,
    parse_layer_spec,
)
from fnsft.mask.maskfile import MaskFile, check_against_model, load_mask
from fnsft.names import MaskMode


def keep_vector(width: int, neurons: Iterable[int], mode: MaskMode):
    """1.0 where the channel passes, 0.0 where it is zeroed (float32, CPU)."""
    import torch

    index = torch.tensor(sorted(set(neurons)), dtype=torch.long)
    if mode == "lesion":
        vector = torch.ones(width)
        vector[index] = 0.0
    else:
        vector = torch.zeros(width)
        vector[index] = 1.0
    return vector


class NeuronMasks:
    """Forward hooks multiplying each masked layer's capture point by a 0/1 vector. ``remove()`` undoes them."""

    def __init__(self, model, layer_sets: Mapping[int, Iterable[int]], *, mode: MaskMode, capture: CapturePoint,
                 width: int, layers: Iterable[int]):
        self.mode = mode
        self.capture = capture
        self.vectors = {layer: keep_vector(width, layer_sets.get(layer, ()), mode) for layer in sorted(set(layers))}
        self._cast: dict[tuple, Any] = {}
        self._handles = []
        blocks = find_decoder_blocks(model)
        for layer, vector in self.vectors.items():
            mlp = block_mlp(blocks[layer])
            if capture == "mlp-output":
                self._handles.append(mlp.register_forward_hook(self._output_hook(vector)))
            else:
                down = mlp_down_proj(mlp)
                if down is None:
                    raise MaskError(f"block {layer}: MLP has no down projection to mask its input")
                self._handles.append(down.register_forward_pre_hook(self._input_hook(vector)))

    def _like(self, vector, tensor):
        key = (id(vector), tensor.device, tensor.dtype)
        if key not in self._cast:
            self._cast[key] = vector.to(device=tensor.device, dtype=tensor.dtype)
        return self._cast[key]

    def _output_hook(self, vector):
        def hook(_module, _args, output):
            if isinstance(output, tuple | list):
                return type(output)([output[0] * self._like(vector, output[0]), *output[1:]])
            return output * self._like(vector, output)

        return hook

    def _input_hook(self, vector):
        def hook(_module, args):
            return (args[0] * self._like(vector, args[0]), *args[1:])

        return hook

    @property
    def zeroed_per_layer(self) -> dict[int, int]:
        return {layer: int((vector == 0).sum()) for layer, vector in self.vectors.items()}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def apply_mask(model, mask: MaskFile, components: list[int] | Literal["all"], mode: MaskMode,
               layers: str | list[int] | None = None) -> NeuronMasks:
    """Hook the union of ``components`` of ``mask`` into ``model`` (already checked against it)."""
    ids = component_ids(mask, components)
    scope = mask_layers(mask, layers)
    return NeuronMasks(model, mask.union(ids), mode=mode, capture=mask.capture, width=mask.width, layers=scope)


def component_ids(mask: MaskFile, components: list[int] | Literal["all"]) -> list[int]:
    if components == "all":
        return [c.id for c in mask.components]
    if not components:
        raise MaskError("no mask components selected (give ids such as [0, 2], or all)")
    for component_id in components:
        mask.component(component_id)  # raises MaskError naming the known ids
    return list(components)


def mask_layers(mask: MaskFile, spec: str | list[int] | None) -> list[int]:
    """The layers to mask: the spec (checked against the model's block count and the mask's captured layers)."""
    if spec is None:
        return list(mask.layers)
    chosen = parse_layer_spec(spec, mask.model.num_layers)
    missing = sorted(set(chosen) - set(mask.layers))
    if missing:
        raise MaskError(f"layers {missing} are not in the mask file (it covers layers {_ranges(mask.layers)})")
    return chosen


def _ranges(ids: list[int]) -> str:
    return f"{ids[0]}-{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ",".join(map(str, ids))


class RowFreezer:
    """Keeps chosen rows of parameters bitwise unchanged during training (see module docstring)."""

    def __init__(self, params: list[tuple[str, Any, Any]]):
        import torch

        self.names = [name for name, _p, _rows in params]
        self._entries = []
        self._handles = []
        for _name, param, rows in params:
            rows = rows.to(param.device)
            keep = torch.ones(param.shape[0], *([1] * (param.dim() - 1)), dtype=param.dtype, device=param.device)
            keep[rows] = 0
            self._handles.append(param.register_hook(lambda grad, keep=keep: grad * keep.to(grad.dtype)))
            self._entries.append((param, rows, param.detach()[rows].clone()))

    def restore(self) -> None:
        """Copy the frozen rows back (call after every optimizer step)."""
        import torch

        with torch.no_grad():
            for param, rows, saved in self._entries:
                param[rows] = saved

    def trainer_callback(self):
        """A transformers TrainerCallback that calls :meth:`restore` after each optimizer step."""
        from transformers import TrainerCallback

        freezer = self

        class RestoreFrozenRows(TrainerCallback):
            def on_optimizer_step(self, args, state, control, **kwargs):
                freezer.restore()

        return RestoreFrozenRows()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def frozen_row_params(model, masks: NeuronMasks) -> list[tuple[str, Any, Any]]:
    """(name, parameter, row index tensor) for the down-projection rows whose outputs the masks zero.

    LoRA-wrapped down projections contribute their ``lora_B`` weights; a trainable base weight (full
    fine-tuning) contributes its own rows and bias entries. Frozen (e.g. quantized) base weights are left alone.
    """
    import torch

    if masks.capture != "mlp-output":
        raise MaskError(
            "freeze_masked_rows needs an mlp-output mask (rows of the down projection); this mask was captured at "
            f"{masks.capture}: set mask.freeze_masked_rows: false"
        )
    blocks = find_decoder_blocks(model)
    found = []
    for layer, vector in masks.vectors.items():
        rows = torch.nonzero(vector == 0).flatten()
        down = mlp_down_proj(block_mlp(blocks[layer]))
        if down is None or not len(rows):
            continue
        lora_b = getattr(down, "lora_B", None)
        if lora_b is not None:
            for adapter, module in lora_b.items():
                if module.weight.requires_grad:
                    found.append((f"layers.{layer}.down_proj.lora_B.{adapter}.weight", module.weight, rows))
        base = getattr(down, "base_layer", down)
        for pname in ("weight", "bias"):
            param = getattr(base, pname, None)
            if param is not None and param.requires_grad and param.is_floating_point():
                found.append((f"layers.{layer}.down_proj.{pname}", param, rows))
    return found


class TrainingMasks:
    """What :func:`attach_training_masks` returns: the hooks, the optional row freezer, and provenance."""

    def __init__(self, masks: NeuronMasks, freezer: RowFreezer | None, provenance: dict[str, Any]):
        self.masks = masks
        self.freezer = freezer
        self.provenance = provenance

    def trainer_callbacks(self) -> list:
        """Callbacks to pass to the Trainer (row restoring after each optimizer step, if freezing is on)."""
        return [self.freezer.trainer_callback()] if self.freezer else []

    def remove(self) -> None:
        self.masks.remove()
        if self.freezer:
            self.freezer.remove()


@dataclass
class BuildOnTheFly:
    """What :func:`attach_training_masks` needs to build a mask when the recipe names no file."""

    tokenizer: Any
    data: Any  # DataSection
    seed: int
    save_to: Path
    model_name: str


def build_for_run(model, spec: BuildOnTheFly, layers: str | list[int] | None, model_identity: dict[str, Any] | None) -> Path:
    """Build a mask from the training data with the `fnsft mask build` defaults and save it (atomically)."""
    from fnsft.mask.build import BuildSettings, build_mask
    from fnsft.mask.inputs import token_sequences
    from fnsft.mask.maskfile import save_mask

    tokens = token_sequences(spec.data, spec.tokenizer, spec.seed, "train")
    mask = build_mask(
        model, tokens.sequences, BuildSettings(layers=layers, seed=spec.seed), model_name=spec.model_name,
        source_identity=model_identity, pad_token_id=spec.tokenizer.pad_token_id, data_source=tokens.source,
        data_format=tokens.format,
    )
    return save_mask(mask, spec.save_to)


def attach_training_masks(
    model, mask_section, model_identity: dict[str, Any] | None = None, *, build: BuildOnTheFly | None = None
) -> TrainingMasks:
    """Load the recipe's mask file (or build one), check it against ``model``, hook it in, freeze rows if asked.

    Works before or after PEFT wrapping; call it after wrapping when ``freeze_masked_rows`` should cover the
    LoRA B matrices (they do not exist before). Pass ``handle.trainer_callbacks()`` to the Trainer and call
    ``handle.remove()`` before saving the final model if it will be used unmasked.

    Args:
        model: a transformers causal LM, or a PEFT model wrapping one.
        mask_section: the recipe's ``mask:`` section (MaskSection).
        model_identity: the base model's ``ModelSource.identity``; when given, the mask must have been built
            on the same weights.
        build: how to build the mask when ``mask_section.path`` is unset (tokenizer, data section, seed, and
            where to save it, e.g. RUN_DIR/mask.json). The saved path is in the provenance.
    """
    if mask_section.path is None:
        if build is None:
            raise MaskError("mask.path is not set and no data was given to build a mask from")
        mask_section = mask_section.model_copy(
            update={"path": str(build_for_run(model, build, mask_section.layers, model_identity))}
        )
    mask = load_mask(mask_section.path)
    check_against_model(mask, describe_architecture(model), model_identity)
    masks = apply_mask(model, mask, mask_section.components, mask_section.mode, mask_section.layers)
    freezer = None
    if mask_section.freeze_masked_rows:
        freezer = RowFreezer(frozen_row_params(model, masks))
    zeroed = masks.zeroed_per_layer
    provenance = {
        "path": str(Path(mask_section.path).resolve()),
        "sha256": file_sha256(mask_section.path),
        "schema_version": mask.version,
        "built_for": mask.model.name,
        "capture": mask.capture,
        "threshold": mask.method.threshold,
        "data_fingerprint": mask.data.fingerprint,
        "mode": mask_section.mode,
        "components": component_ids(mask, mask_section.components),
        "layers": sorted(zeroed),
        "zeroed_neurons": sum(zeroed.values()),
        "zeroed_share": round(sum(zeroed.values()) / (mask.width * len(zeroed)), 6),
        "freeze_masked_rows": mask_section.freeze_masked_rows,
        "frozen_parameters": freezer.names if freezer else [],
    }
    return TrainingMasks(masks, freezer, provenance)
