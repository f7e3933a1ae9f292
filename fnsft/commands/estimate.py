"""`fnsft estimate` (issue "estimate"): not built yet."""

from fnsft.errors import NotYetSupported


def estimate() -> None:
    """Predict per-GPU memory of a fine-tuning run (not built yet)."""
    raise NotYetSupported("fnsft estimate is not built yet (tracked in the 'estimate' issue)")
