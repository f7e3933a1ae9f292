"""What `fnsft train` can check in seconds, checked before torch is imported, weights load or anything is created.

Paths, Hub reachability, every data row (parsed, format detected, converted) and the chat template rendered on
the first rows: a typo in any of them is reported before the minutes a model load takes.
"""

from __future__ import annotations

from fnsft.data.load import describe_row, is_hub_dataset, load_raw
from fnsft.data.prepare import canonicalize, detect
from fnsft.data.templates import check_template_renders, configure_template
from fnsft.hub_access import check_hub_dataset, check_hub_model
from fnsft.models import ModelSource, read_chat_template, resolve_model
from fnsft.quiet import quiet_libraries
from fnsft.recipe.schema import Recipe
from fnsft.train.build import check_moe_dropout

TEMPLATE_CHECK_ROWS = 5


def check_before_loading(recipe: Recipe) -> ModelSource:
    """Raise the first problem a run would hit, without heavy imports; return the resolved model source.

    Raises:
        ModelError: the model path or Hub id cannot be used here.
        RecipeError: LoRA dropout on MoE experts PEFT wraps as parameters (they take none).
        DataError: a missing, malformed or unconvertible dataset (file:line or row named), or a chat template
            that cannot render its conversations.
    """
    quiet_libraries()
    source = resolve_model(recipe.model)
    if source.kind == "hub":
        check_hub_model(recipe.model.name_or_path, recipe.model.revision)
    check_moe_dropout(recipe)
    conversations = []
    for _name, part in recipe.data.source_sections():
        if is_hub_dataset(part):
            check_hub_dataset(str(part.path))
        raw = load_raw(part)
        rows, _ = canonicalize(raw, part, detect(raw, part).format)  # every row: the first bad one is named
        first = range(min(TEMPLATE_CHECK_ROWS, len(rows)))
        conversations += [(describe_row(raw, i), rows[i]["messages"]) for i in first if rows[i].get("messages")]
    renderer = read_chat_template(source) if conversations else None
    if renderer is not None:
        configure_template(renderer, recipe.data.chat_template)
        check_template_renders(renderer, conversations, recipe.data.chat_template_kwargs)
    return source
