"""`fnsft export` (issue "export"): not built yet."""

from fnsft.errors import NotYetSupported


def export() -> None:
    """Merge adapters and write GGUF from a run directory (not built yet)."""
    raise NotYetSupported("fnsft export is not built yet (tracked in the 'export' issue)")
