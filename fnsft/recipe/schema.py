"""Recipe schema v1: the typed description of a whole fine-tuning run.

Defaults live here and nowhere else. Method-dependent defaults (learning rate, warmup, weight decay) are
``None`` in the file and filled by :meth:`Recipe.resolved` from :data:`METHOD_DEFAULTS`, so a recipe that
only says ``method: {name: full}`` gets the guide's full fine-tuning settings, not LoRA's.
This module imports no torch.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from fnsft.names import MaskMode, MethodName, Optimizer, Precision

CURRENT_VERSION: Final = 1

ReportTarget = Literal["none", "tensorboard", "wandb", "trackio"]
DataFormat = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text"]
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"]

#: The guide's per-method defaults (docs/PEFT_VS_FULL_GUIDE.md, "Best Practices"): PEFT lr 1e-4..5e-4, full lr
#: 1e-5..1e-4 with more warmup and weight decay. Values the user leaves unset (None) are filled from here by
#: Recipe.resolved().
MethodDefault = Literal["learning_rate", "warmup_ratio", "weight_decay"]
METHOD_DEFAULTS: dict[MethodName, dict[MethodDefault, float]] = {
    "lora": {"learning_rate": 2e-4, "warmup_ratio": 0.03, "weight_decay": 0.0},
    "qlora": {"learning_rate": 2e-4, "warmup_ratio": 0.03, "weight_decay": 0.0},
    "full": {"learning_rate": 2e-5, "warmup_ratio": 0.1, "weight_decay": 0.01},
}



def _method_default(key: MethodDefault) -> str:
    """``Default: 2e-4 for lora/qlora, 2e-5 for full.``, written from METHOD_DEFAULTS (the one place it is defined)."""
    peft, full = METHOD_DEFAULTS["lora"][key], METHOD_DEFAULTS["full"][key]
    assert METHOD_DEFAULTS["qlora"][key] == peft, "the description names one PEFT default"
    return f"Default: {_short(peft)} for lora/qlora, {_short(full)} for full."


def _short(value: float) -> str:
    """2e-4 rather than 0.0002; 0.03 stays 0.03."""
    return f"{value:.0e}".replace("e-0", "e-") if 0 < value < 1e-3 else f"{value:g}"


#: Counts (steps, rows, tokens, batch sizes) fit a signed 32-bit int: the libraries below hand them to C code.
MAX_COUNT = 2**31 - 1
PositiveInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
#: LoRA rank/alpha above any model's hidden size only allocate memory until the process is killed.
LoraSize = Annotated[int, Field(gt=0, le=65536)]


class Section(BaseModel):
    """Strict base: unknown keys are errors, values are validated on assignment too; no float is inf or NaN
    (an infinite epoch count or learning rate would run for ever or train to NaN without a word)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSection(Section):
    name_or_path: str = Field(description="Hub id, local directory, or a .gguf file.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to pin.")
    gguf_file: str | None = Field(None, description="GGUF file name inside name_or_path (set automatically for a .gguf path).")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint. Off unless you trust it.")
    allow_pickle: bool = Field(False, description="Allow pickle-based weights (.bin/.pt). Off: safetensors only.")
    dtype: Precision = Field("auto", description="Dtype to load the base weights in; auto = bf16 on capable GPUs, fp32 on CPU.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"


class SourceSection(Section):
    """One dataset of a mixture (``data.sources``): its own location, format, split and held-out part."""

    path: str = Field(description="Local json/jsonl/csv/parquet file or directory, or a Hub dataset id (online only).")
    weight: float = Field(1.0, gt=0, description="Share of the mixture relative to the other sources' weights.")
    name: str | None = Field(None, description="Label in summaries and per-source eval losses (default: from path).")
    format: DataFormat = Field("auto", description="Row format of this source; auto detects it from its rows.")
    config_name: str | None = None
    revision: str | None = None
    split: str = "train"
    eval_split: str | None = Field(None, description="Existing split to evaluate on; else validation_fraction.")
    validation_fraction: float | None = Field(None, ge=0, lt=1, description="Held out of this source (default: "
                                              "data.validation_fraction).")
    max_rows: PositiveInt | None = Field(None, description="Use at most this many rows of this source (after the "
                                         "held-out part is taken).")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="Template options for this source "
                                                        "(default: data.chat_template_kwargs).")


class DataSection(Section):
    path: str | None = Field(None, description="Local json/jsonl/csv/parquet file or directory, or a Hub dataset id "
                             "(online only). Give this or data.sources.")
    sources: list[SourceSection] | None = Field(None, min_length=1, description="Several datasets mixed by weight "
                                                "(instead of data.path).")
    mix: Literal["proportional", "temperature", "concat"] = Field(
        "proportional", description="proportional: shares by weight (rows repeated or left out to reach them); "
        "temperature: shares by weight × size^(1/temperature); concat: every row of every source once.")
    mix_by: Literal["tokens", "rows"] = Field("tokens", description="What the shares count: trained tokens or rows.")
    temperature: float = Field(2.0, gt=0, description="For mix: temperature (1 = by size, larger = more uniform).")
    format: DataFormat = Field("auto", description="Row format; auto detects it from the first rows and says what it found.")
    config_name: str | None = None
    revision: str | None = None
    split: str = "train"
    eval_split: str | None = Field(None, description="Existing split to evaluate on; else validation_fraction is held out.")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="Seeded random fraction held out when eval_split is unset.")
    max_length: PositiveInt = Field(1024, description="Tokens per example (longer ones are truncated).")
    packing: bool = Field(False, description="Pack several examples into each sequence (best-fit decreasing).")
    loss_on: Literal["responses", "all"] = Field("responses", description="responses: loss on assistant/completion tokens only.")
    max_samples: PositiveInt | None = Field(None, description="Use at most this many training rows (after the split).")
    system_prompt: str | None = None
    chat_template: str | None = Field(None, description="Path to a Jinja chat template overriding the tokenizer's.")
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Passed to every chat-template render, e.g. {enable_thinking: false}.")
    train_on: Literal["all_turns", "last_turn"] = Field(
        "all_turns", description="Assistant turns trained: every one, or the last only (what reasoning templates want).")
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="A row that cannot be used: stop naming it, or skip it (counted in the manifest).")
    fingerprint: str | None = Field(None, description="Expected dataset fingerprint; a mismatch is an error.")

    @model_validator(mode="after")
    def _path_or_sources(self) -> DataSection:
        if (self.path is None) == (self.sources is None):
            raise ValueError("give data.path (one dataset) or data.sources (a mixture), not both and not neither")
        return self

    def source_sections(self) -> list[tuple[str, DataSection]]:
        """(name, a one-dataset section) per source; a plain ``data.path`` is one source named by its path."""
        if self.sources is None:
            return [(str(self.path), self)]
        named: list[tuple[str, DataSection]] = []
        for source in self.sources:
            name = source.name or source.path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0] or source.path
            while name in (n for n, _ in named):
                name += "'"
            options = {key: getattr(source, key) for key in ("path", "format", "config_name", "revision", "split",
                                                               "eval_split")}
            options["validation_fraction"] = (self.validation_fraction if source.validation_fraction is None
                                              else source.validation_fraction)
            options["chat_template_kwargs"] = (self.chat_template_kwargs if source.chat_template_kwargs is None
                                               else source.chat_template_kwargs)
            options["max_samples"] = source.max_rows
            named.append((name, self.model_copy(update={**options, "sources": None})))
        return named

    def describe(self) -> str:
        """The data in a few words: its path, or the mixture's sources and weights."""
        if self.sources is None:
            return str(self.path)
        return f"{len(self.sources)} sources mixed {self.mix} by {self.mix_by} (" + ", ".join(
            f"{name} ×{source.weight:g}" for (name, _), source in zip(self.source_sections(), self.sources,
                                                                      strict=True)) + ")"


class LoraSection(Section):
    r: LoraSize = Field(16, description="LoRA rank.")
    alpha: LoraSize = Field(32, description="LoRA scaling alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: Literal["auto"] | list[str] = Field(
        "auto",
        description="Modules to adapt (q_proj k_proj v_proj o_proj: space- or comma-separated on the command line); "
        "auto = every linear projection inside the decoder blocks, never lm_head.",
    )
    bias: Literal["none", "all", "lora_only"] = "none"


class QuantizationSection(Section):
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Precision = "auto"


class MethodSection(Section):
    name: MethodName = Field("lora", description="lora (default), qlora (4-bit base + LoRA) or full fine-tuning.")
    lora: LoraSection = Field(default_factory=LoraSection)
    quantization: QuantizationSection = Field(default_factory=QuantizationSection)

    @property
    def is_peft(self) -> bool:
        return self.name != "full"


class TrainingSection(Section):
    num_train_epochs: float = Field(3, gt=0, le=1e6, description="Passes over the training data.")
    max_steps: int = Field(-1, ge=-1, le=MAX_COUNT, description="Stop after this many optimizer steps; -1 = run num_train_epochs.")
    per_device_train_batch_size: PositiveInt = Field(4, description="Micro-batch per device.")
    per_device_eval_batch_size: PositiveInt | None = None
    gradient_accumulation_steps: PositiveInt = Field(1, description="Micro-batches per optimizer step.")
    learning_rate: float | None = Field(None, gt=0, description=f"Peak learning rate. {_method_default('learning_rate')}")
    lr_scheduler_type: Scheduler = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float | None = Field(
        None, ge=0, lt=1, description=f"Fraction of steps spent warming up. {_method_default('warmup_ratio')}"
    )
    warmup_steps: PositiveInt | None = Field(
        None, description="Warmup in optimizer steps; when set it replaces warmup_ratio."
    )
    weight_decay: NonNegativeFloat | None = Field(
        None, description=f"AdamW weight decay. {_method_default('weight_decay')}"
    )
    max_grad_norm: NonNegativeFloat = 1.0
    optimizer: Optimizer = "adamw_torch"
    precision: Precision = Field("auto", description="auto = bf16 on capable GPUs, fp32 on CPU.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward: less memory, ~30% slower.")
    longest_batch_first: bool = Field(
        True, description="Train on the longest micro-batch (tokens, after packing) first: a run that does not fit "
        "fails in step 1, not hours in. Same seed, same order."
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Random seed (0 to 2^32-1): initialisation, data order and the held-out split.")
    logging_steps: PositiveInt = Field(10, description="Log the loss every N optimizer steps.")
    save_steps: PositiveInt = Field(500, description="Save a checkpoint (a resume point) every N optimizer steps.")
    save_total_limit: PositiveInt | None = 3
    eval_steps: PositiveInt | None = Field(None, description="Evaluate every N steps; unset = at the end of each epoch.")

    def resolved_value(self, key: MethodDefault) -> float:
        """A method-dependent value of a resolved recipe (:meth:`Recipe.resolved`); unset here is a caller's bug."""
        value = getattr(self, key)
        if value is None:
            raise AssertionError(f"training.{key} is unset: the recipe was not resolved (Recipe.resolved())")
        return float(value)


class OutputSection(Section):
    dir: str = Field("runs/fnsft-run", description="Run directory: resolved recipe, manifest, checkpoints, adapter/model.")
    report_to: list[ReportTarget] = Field(default_factory=lambda: list[ReportTarget](["none"]))
    run_name: str | None = None


class EvaluationSection(Section):
    exact_match_samples: int = Field(
        0, ge=0, le=MAX_COUNT, description="Held-out conversations to answer greedily before and after training (exact-match accuracy)."
    )
    max_new_tokens: PositiveInt = Field(32, description="Generation budget per answer for the exact-match check.")


class MaskSection(Section):
    """Training-time ICA functional-network mask (see `fnsft mask`)."""

    path: str | None = Field(
        None,
        validation_alias=AliasChoices("path", "file"),
        description="Mask file written by `fnsft mask build` (alias: file). Unset: built from the training data at "
        "the start of the run with `fnsft mask build` defaults and saved as RUN_DIR/mask.json.",
    )
    mode: MaskMode = Field(
        "lesion", description="lesion: zero the selected neurons; preserve: zero all others. Aliases: key, complement."
    )
    components: list[int] | Literal["all"] = Field(default_factory=lambda: [0], description="Component ids, or all.")
    layers: str | list[int] | None = Field(
        None, description="Layers to mask ('all', '0-3,8', '-4--1' or a list of ids); default: the mask's layers."
    )
    freeze_masked_rows: bool = Field(
        True, description="Keep the masked channels' down-projection rows unchanged (base weight or LoRA B)."
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _legacy_mode(cls, value: Any) -> Any:
        # The predecessor's names: key = lesion, complement = preserve.
        return {"key": "lesion", "complement": "preserve"}.get(value, value)


class DistributedSection(Section):
    strategy: Literal["none", "ddp", "fsdp", "zero2", "zero3"] = "none"
    num_processes: PositiveInt = 1
    num_nodes: PositiveInt = 1
    node_rank: int = Field(0, ge=0)
    master_addr: str = "127.0.0.1"
    master_port: int = Field(29500, gt=0, lt=65536)
    offload: Literal["none", "optimizer", "params"] = "none"
    accelerate_config: str | None = Field(None, description="Your own accelerate config file (overrides strategy).")


class Recipe(Section):
    version: Literal[1] = CURRENT_VERSION
    model: ModelSection
    data: DataSection
    method: MethodSection = Field(default_factory=MethodSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    output: OutputSection = Field(default_factory=OutputSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    mask: MaskSection | None = None
    distributed: DistributedSection = Field(default_factory=DistributedSection)

    def resolved(self) -> Recipe:
        """A copy with every method-dependent default filled in (what actually runs)."""
        defaults = METHOD_DEFAULTS[self.method.name]
        filled: dict[str, Any] = {key: value for key, value in defaults.items() if getattr(self.training, key) is None
                  and not (key == "warmup_ratio" and self.training.warmup_steps is not None)}
        return self.model_copy(update={"training": self.training.model_copy(update=filled)})

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
