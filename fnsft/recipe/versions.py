"""Recipe schema upgrades: each old version loads through an explicit function vN → vN+1.

A recipe without ``version:`` whose top level holds sections (model:, data:, ...) is read as the current
version. The predecessor's flat flag-style YAML (v0) is upgraded by issue "migrate-config".
"""

from __future__ import annotations

from typing import Any

from fnsft.errors import RecipeError
from fnsft.recipe.schema import CURRENT_VERSION


def upgrade(data: Any, source: str) -> tuple[Any, list[str]]:
    """Return the data at the current schema version and notes on what changed."""
    version = data.get("version", CURRENT_VERSION)
    if version == CURRENT_VERSION:
        return data, []
    raise RecipeError(
        f"{source}: recipe version {version!r} is not supported (this fnsft reads version {CURRENT_VERSION})"
    )
