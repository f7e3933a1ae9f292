"""Memory estimator for fine-tuning runs (``fnsft estimate``). No torch: shapes come from configs.

Public API (stable; used by ``fnsft train`` for the calibration record and by migrate-config):
``EstimateInput``, ``Breakdown``, ``estimate``, ``inputs_from_recipe``, ``build_input``, ``make_it_fit``,
``Suggestion``, ``parse_memory``, ``gpu_memory``, ``resolve_shape``, ``ModelShape``.
Names are loaded lazily so importing this package stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "EstimateInput": "fnsft.estimate.memory",
    "Breakdown": "fnsft.estimate.memory",
    "estimate": "fnsft.estimate.memory",
    "inputs_from_recipe": "fnsft.estimate.inputs",
    "build_input": "fnsft.estimate.inputs",
    "make_it_fit": "fnsft.estimate.fit",
    "Suggestion": "fnsft.estimate.fit",
    "recommendation": "fnsft.estimate.fit",
    "parse_memory": "fnsft.estimate.gpus",
    "gpu_memory": "fnsft.estimate.gpus",
    "resolve_shape": "fnsft.estimate.resolve",
    "ModelShape": "fnsft.estimate.arch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fnsft.estimate' has no attribute {name!r}")
