"""`fnsft push` (issue "export"): not built yet."""

from fnsft.errors import NotYetSupported


def push() -> None:
    """Upload a run to the Hugging Face Hub (not built yet)."""
    raise NotYetSupported("fnsft push is not built yet (tracked in the 'export' issue)")
