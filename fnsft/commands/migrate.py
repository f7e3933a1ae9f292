"""`fnsft migrate-config` (issue "migrate-config"): not built yet."""

from fnsft.errors import NotYetSupported


def migrate_config() -> None:
    """Convert a recipe between PEFT and full fine-tuning (not built yet)."""
    raise NotYetSupported("fnsft migrate-config is not built yet (tracked in the 'migrate-config' issue)")
