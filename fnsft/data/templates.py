"""Chat templates and assistant-only loss masks that work for ANY template.

TRL's ``assistant_only_loss`` needs a template with ``{% generation %}`` markers, which most shipped templates
(SmolLM2's among them) lack. Instead we find each assistant turn by rendering prefixes of the conversation:
the text between ``render(messages[:i], add_generation_prompt=True)`` and ``render(messages[:i+1])`` is exactly
what the model must generate for turn i (its content plus the end-of-turn marker). Character spans are then
mapped to tokens with the tokenizer's offset mapping. Templates whose renders are not prefix-consistent fall
back to locating the turn's content in the full render.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fnsft.errors import DataError

#: Used when a tokenizer has no chat template (base models): plain instruction/response text.
PLAIN_TEMPLATE_NAME = "plain"


def plain_template() -> str:
    return resources.files("fnsft.resources").joinpath("templates/plain.jinja").read_text(encoding="utf-8")


def configure_template(tokenizer: Any, override: str | None) -> str:
    """Set the tokenizer's chat template (override file > tokenizer's own > plain); return a name for logs."""
    if override:
        path = Path(override)
        if not path.is_file():
            raise DataError(f"{override}: chat template file not found")
        tokenizer.chat_template = path.read_text(encoding="utf-8")
        return str(path)
    if getattr(tokenizer, "chat_template", None):
        return "tokenizer"
    tokenizer.chat_template = plain_template()
    return PLAIN_TEMPLATE_NAME


def render(tokenizer: Any, messages: list[dict], *, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


@dataclass(frozen=True)
class TokenizedConversation:
    input_ids: list[int]
    assistant_masks: list[int]


def assistant_spans(tokenizer: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans the model must generate (one per assistant turn)."""
    full = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1])
        # upto may end with text the full render does not have at that point (e.g. phi3 appends EOS to the
        # last turn), so the turn ends where upto and full stop agreeing.
        end = _common_prefix_length(upto, full)
        eos = getattr(tokenizer, "eos_token", None)
        if end < len(upto) and eos and upto.endswith(eos):  # don't count a shared start of EOS and the next header
            end = min(end, len(upto) - len(eos))
        content_at = full.find(message["content"], len(prefix))
        consistent = upto.startswith(prefix) and full.startswith(prefix) and len(prefix) >= cursor
        if consistent and content_at >= 0 and content_at + len(message["content"]) <= end:
            start = len(prefix)
        else:  # not prefix-consistent (e.g. the template rewrites earlier turns): find the content itself
            start = full.find(message["content"], cursor)
            if start < 0:
                raise DataError("the chat template drops or rewrites assistant content; set data.chat_template")
            end = start + len(message["content"])
        spans.append((start, end))
        cursor = end
    return full, spans


def _common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def tokenize_conversation(tokenizer: Any, messages: list[dict]) -> TokenizedConversation:
    """Token ids of the rendered conversation and a 0/1 mask that is 1 exactly on assistant-generated tokens."""
    full, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = []
    for token_start, token_end in encoded["offset_mapping"]:
        inside = any(start <= token_start < end for start, end in spans) and token_end > token_start
        mask.append(1 if inside else 0)
    return TokenizedConversation(list(encoded["input_ids"]), mask)


def tokenize_text(tokenizer: Any, text: str) -> list[int]:
    """Raw text with the tokenizer's own special tokens, ended by EOS so the model learns to stop."""
    ids = list(tokenizer(text)["input_ids"])
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return ids
