"""Looking at mask files: the layer × component heat map, and IoU matching of two files' components."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fnsft.atomic import staged_file
from fnsft.errors import MaskError
from fnsft.mask.maskfile import MaskFile


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (temp file + rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with staged_file(path) as staging:
            fig.savefig(staging, dpi=dpi, format=path.suffix.lstrip(".") or None)
    finally:
        plt.close(fig)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def layer_shares(mask: MaskFile) -> np.ndarray:
    """(layers × components): share of each layer's neurons that each component selects."""
    grid = np.zeros((len(mask.layers), len(mask.components)))
    row = {layer: i for i, layer in enumerate(mask.layers)}
    for col, component in enumerate(mask.components):
        for layer, neurons in component.layer_sets().items():
            grid[row[layer], col] = len(neurons) / mask.width
    return grid


def heatmap(mask: MaskFile, path: str | Path) -> Path:
    """PNG heat map: layer (rows) × component (columns), colour = share of the layer's neurons selected."""
    plt = pyplot()
    grid = layer_shares(mask)
    fig, ax = plt.subplots(figsize=(2 + 0.45 * len(mask.components), 1.5 + 0.18 * len(mask.layers)))
    image = ax.imshow(100 * grid, aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_xticks(range(len(mask.components)), [str(c.id) for c in mask.components], fontsize=7)
    step = max(1, len(mask.layers) // 16)
    ax.set_yticks(range(0, len(mask.layers), step), [str(layer) for layer in mask.layers[::step]], fontsize=7)
    ax.set_xlabel("component")
    ax.set_ylabel("layer")
    ax.set_title(f"{mask.model.name}\n{mask.capture}, {mask.method.threshold}, {mask.data.tokens} tokens", fontsize=8)
    fig.colorbar(image, ax=ax, label="% of layer's neurons")
    fig.tight_layout()
    return save_figure(fig, path)


def flat_sets(mask: MaskFile) -> dict[int, set[int]]:
    return {
        c.id: {layer * mask.width + n for layer, neurons in c.layer_sets().items() for n in neurons}
        for c in mask.components
    }


@dataclass(frozen=True)
class Match:
    component: int
    best: int | None
    iou: float
    matched: bool


def match_masks(a: MaskFile, b: MaskFile, iou_threshold: float = 0.2) -> list[Match]:
    """For each component of ``a``, the component of ``b`` with the highest IoU (the paper's template match)."""
    if not 0 < iou_threshold <= 1:
        raise MaskError(f"--iou {iou_threshold}: must be in (0, 1]")
    if (a.model.num_layers, a.capture, a.width) != (b.model.num_layers, b.capture, b.width):
        raise MaskError(
            f"cannot compare masks of different shape: {a.model.num_layers} layers × {a.width} ({a.capture}) vs "
            f"{b.model.num_layers} layers × {b.width} ({b.capture})"
        )
    sets_b = flat_sets(b)
    matches = []
    for component, neurons in flat_sets(a).items():
        scores = {other: _iou(neurons, theirs) for other, theirs in sets_b.items()}
        best = max(scores, key=lambda k: (scores[k], -k)) if scores else None
        value = scores.get(best, 0.0) if best is not None else 0.0
        matches.append(Match(component, best, value, value >= iou_threshold))
    return matches


def _iou(left: set[int], right: set[int]) -> float:
    union = len(left | right)
    return len(left & right) / union if union else 0.0
