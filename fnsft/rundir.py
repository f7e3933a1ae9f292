"""The run directory: the unit of output. Every command that reads a finished run goes through here.

Layout::

    RUN_DIR/
      recipe.yaml          resolved recipe (current schema version) that produced the run
      manifest.json        what is needed to reproduce and audit the run (fnsft.manifest)
      metrics.json         train/eval metrics, eval loss and accuracy before vs after
      checkpoints/         trainer checkpoints (checkpoint-N/), used by --resume
      adapter/             LoRA/QLoRA runs: PEFT adapter (adapter_config.json, adapter_model.safetensors) + tokenizer
      model/               full fine-tuning runs: the model (safetensors) + tokenizer
      exports/             written by `fnsft export` (merged/, *.gguf, Modelfile)
      .lock                held while `fnsft train` writes here
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RECIPE = "recipe.yaml"
MANIFEST = "manifest.json"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
MODEL = "model"
EXPORTS = "exports"
LOCK = ".lock"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        return cls(Path(path))

    @property
    def recipe(self) -> Path:
        return self.root / RECIPE

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def adapter(self) -> Path:
        return self.root / ADAPTER

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def exports(self) -> Path:
        return self.root / EXPORTS

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    def is_finished(self) -> bool:
        return self.manifest.is_file() and (self.adapter.is_dir() or self.model.is_dir())
