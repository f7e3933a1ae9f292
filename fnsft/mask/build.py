"""Model + token sequences → mask file: seeded sampling, capture, ICA, thresholding, provenance."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fnsft.errors import MaskError
from fnsft.mask.capture import CapturePoint, describe_architecture, iter_activations, parse_layer_spec
from fnsft.mask.ica import ActivationStore, ThresholdRule, run_ica
from fnsft.mask.maskfile import (
    Component,
    DataProvenance,
    ICAStats,
    MaskFile,
    Method,
    identity_for,
    library_versions,
)

DEFAULT_MEMORY_BUDGET = 2 << 30  # bytes of captured float32 activations kept in RAM before spilling to disk


def sample_sequences(sequences: Sequence[Sequence[int]], samples: int | None, seed: int) -> list[list[int]]:
    """A seeded random subset of ``samples`` sequences (all of them, in a seeded order, when None)."""
    order = np.random.default_rng(seed).permutation(len(sequences))
    chosen = order if samples is None else order[:samples]
    return [list(sequences[int(i)]) for i in chosen]


def cap_tokens(sequences: list[list[int]], max_tokens: int | None) -> list[list[int]]:
    """Keep whole sequences until ``max_tokens``; the last one is cut so the total is exactly the cap."""
    if max_tokens is None:
        return [s for s in sequences if s]
    kept, total = [], 0
    for seq in sequences:
        if total >= max_tokens:
            break
        piece = seq[: max_tokens - total]
        if piece:
            kept.append(piece)
            total += len(piece)
    return kept


def token_fingerprint(sequences: list[list[int]]) -> str:
    digest = hashlib.sha256()
    for seq in sequences:
        digest.update(np.asarray(seq, dtype=np.int64).tobytes())
        digest.update(b"|")
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class BuildSettings:
    components: int = 10
    samples: int | None = 100
    max_tokens: int | None = 20_000
    layers: str | list[int] | None = None
    capture: CapturePoint = "mlp-output"
    threshold: str = "percentile=98"
    seed: int = 42
    batch_size: int = 8
    memory_budget: int = DEFAULT_MEMORY_BUDGET


def build_mask(
    model,
    sequences: Sequence[Sequence[int]],
    settings: BuildSettings,
    *,
    model_name: str,
    source_identity: dict[str, Any] | None,
    pad_token_id: int,
    data_source: str,
    data_format: str | None = None,
) -> MaskFile:
    """Discover functional networks in ``model`` from token-id ``sequences`` and return the mask file.

    Raises MaskError for bad settings (layer spec, threshold, too few tokens for the components).
    """
    rule = ThresholdRule.parse(settings.threshold)
    arch = describe_architecture(model)
    layers = parse_layer_spec(settings.layers, arch.num_layers)
    width = arch.width(settings.capture)
    chosen = cap_tokens(sample_sequences(sequences, settings.samples, settings.seed), settings.max_tokens)
    if not chosen:
        raise MaskError(f"{data_source}: no token sequences to analyse")
    with ActivationStore(width * len(layers), settings.memory_budget) as store:
        for rows in iter_activations(
            model, chosen, layers=layers, capture=settings.capture, pad_token_id=pad_token_id,
            batch_size=settings.batch_size,
        ):
            store.append(rows)
        result = run_ica(store, settings.components, settings.seed)
        n_tokens = store.n_rows
    total = width * len(layers)
    components = []
    for index, flat in enumerate(rule.select(result.maps)):
        per_layer: dict[str, list[int]] = {}
        for layer_pos in np.unique(flat // width):
            neurons = flat[flat // width == layer_pos] % width
            per_layer[str(layers[int(layer_pos)])] = [int(n) for n in neurons]
        components.append(
            Component(
                id=index,
                neurons=len(flat),
                share=round(len(flat) / total, 6),
                layers_touched=len(per_layer),
                variance_share=round(float(result.variance_share[index]), 6),
                source_kurtosis=round(float(result.source_kurtosis[index]), 4),
                layers=per_layer,
            )
        )
    return MaskFile(
        model=identity_for(model_name, arch, source_identity),
        capture=settings.capture,
        width=width,
        layers=layers,
        data=DataProvenance(
            source=data_source,
            format=data_format,
            fingerprint=token_fingerprint(chosen),
            samples=len(chosen),
            tokens=n_tokens,
            max_tokens=settings.max_tokens,
            seed=settings.seed,
        ),
        method=Method(
            components=settings.components,
            pca_dims=settings.components,
            threshold=str(rule),
            seed=settings.seed,
            ica=ICAStats(
                converged=result.converged, n_iter=result.n_iter, max_iter=result.max_iter, tol=result.tol,
                warnings=result.warnings,
            ),
        ),
        libraries=library_versions(),
        components=components,
    )
