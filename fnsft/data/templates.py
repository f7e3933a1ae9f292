"""Chat templates and assistant-only loss masks that work for ANY template, found without searching for text.

TRL's ``assistant_only_loss`` needs a template with ``{% generation %}`` markers, which most shipped templates
lack. Instead each turn is located by rendering the conversation again with that one message's content replaced
by a unique sentinel: the real render and the sentinel render agree everywhere except inside that message, so
their common prefix and suffix bound the message's characters exactly, whatever the content says (a reply that
repeats the user's words cannot be confused with them). Around each reply:

- the trained span starts where the template's generation prompt stops matching the render (so the assistant
  header and anything the prompt itself supplies, e.g. an empty think block, stay untrained, while what the model
  generates before the content, e.g. a think block or a channel tag, is trained);
- it ends after the end-of-turn marker: the text the template writes after the reply both when the conversation
  goes on and when it ends there (their common start, widened to a whole special token), so the model learns to
  stop and nothing of the next turn's header is trained. EOS is only a fallback.

Templates that rewrite earlier turns (reasoning stripped from history) are trained on what the final render
shows, and the rewrite is reported. Character spans become tokens through the tokenizer's offset mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fnsft.errors import DataError

#: Used when a tokenizer has no chat template (base models): plain instruction/response text.
PLAIN_TEMPLATE_NAME = "plain"
TrainOn = Literal["all_turns", "last_turn"]
# Private-use code points: no template adds, trims or tests for them, no real text starts or ends with them.
_SENTINEL = "\ue000fnsft-turn-{}\ue001"


def plain_template() -> str:
    return resources.files("fnsft.resources").joinpath("templates/plain.jinja").read_text(encoding="utf-8")


def configure_template(tokenizer: Any, override: str | None) -> str:
    """Set the tokenizer's chat template (override file > tokenizer's own > plain); return a name for logs."""
    if override:
        path = Path(override)
        if not path.is_file():
            raise DataError(f"{override}: chat template file not found")
        try:
            tokenizer.chat_template = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{override}: not a text file (a Jinja chat template), byte {exc.start + 1} is not UTF-8") from None
        return str(path)
    if getattr(tokenizer, "chat_template", None):
        return "tokenizer"
    tokenizer.chat_template = plain_template()
    return PLAIN_TEMPLATE_NAME


@dataclass
class TemplateRenderer:
    """A tokenizer's chat template rendered as the tokenizer renders it (transformers' own jinja environment and
    special-token variables), without loading the tokenizer: transformers' tokenizers import torch."""

    chat_template: str | None
    special_tokens: dict[str, str]

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    def apply_chat_template(
        self, messages: list[dict], *, tokenize: bool = False, add_generation_prompt: bool = False, **kwargs: Any
    ) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(  # type: ignore[str-unpack]  # annotated -> str, returns a pair
            conversations=[messages], chat_template=self.chat_template, add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens, **kwargs},
        )
        return rendered[0]


def check_template_renders(
    renderer: TemplateRenderer, conversations: list[tuple[str, list[dict]]], chat_template_kwargs: dict[str, Any]
) -> None:
    """Render each (where, messages) whole and up to each assistant turn's prompt, as training will.

    Raises:
        DataError: naming the row whose conversation the template cannot render.
    """
    for where, messages in conversations:
        try:
            render(renderer, messages, **chat_template_kwargs)
            for i in (i for i, message in enumerate(messages) if message["role"] == "assistant" and i):
                render(renderer, messages[:i], generation_prompt=True, **chat_template_kwargs)
        except DataError as exc:  # render() words template failures as DataErrors
            raise DataError(f"{where}: {exc}") from None


def render(tokenizer: Any, messages: list[dict], *, generation_prompt: bool = False, **template_kwargs: Any) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt, **template_kwargs
        )
    except DataError:
        raise
    except Exception as exc:  # jinja's raise_exception, or a template that cannot handle this conversation
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"the chat template cannot render this conversation: {first}") from None


@dataclass(frozen=True)
class Reply:
    """Where one assistant turn is in the render: its content, and the span trained for it."""

    turn: int  # index in the messages list
    content: tuple[int, int]  # the reply's characters as rendered
    trained: tuple[int, int] | None  # None when train_on leaves this turn out
    end_of_turn: str  # what the span holds after the content ('' when the template writes no marker)
    rewritten: bool  # the render shows other text than the content, beyond whitespace (history rewriting)


@dataclass(frozen=True)
class Rendering:
    """The rendered conversation and the character spans trained. Unpacks as ``text, spans``."""

    text: str
    spans: list[tuple[int, int]]
    replies: list[Reply] = field(default_factory=list)

    def __iter__(self) -> Iterator:
        return iter((self.text, self.spans))


def assistant_spans(
    tokenizer: Any,
    messages: list[dict],
    *,
    chat_template_kwargs: dict[str, Any] | None = None,
    train_on: TrainOn = "all_turns",
    template_name: str = "the chat template",
) -> Rendering:
    """The full rendered text and the character spans the model must generate (one per trained assistant turn)."""
    kwargs = dict(chat_template_kwargs or {})
    full = render(tokenizer, messages, **kwargs)
    assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    trained_turns = set(assistant_turns[-1:] if train_on == "last_turn" else assistant_turns)
    regions = [_content_region(tokenizer, messages, i, full, kwargs, template_name, i in trained_turns)
               for i in range(len(messages))]
    replies: list[Reply] = []
    for i in assistant_turns:
        start, end = regions[i]
        if start < 0:
            continue  # an untrained turn the template drops
        previous_end = max((regions[j][1] for j in range(i) if regions[j][0] >= 0), default=0)
        next_start = min((regions[j][0] for j in range(i + 1, len(messages)) if regions[j][0] >= 0), default=len(full))
        if previous_end > start or next_start < end:
            raise DataError(f"{template_name}: cannot tell turn {i + 1} (assistant) apart from its neighbours")
        located = [j for j in range(i) if regions[j][0] >= 0]
        anchor = located[-1] if located else None
        head = start - _generated_before_content(tokenizer, messages, i, anchor, full[previous_end:start], kwargs)
        marker = _end_of_turn(tokenizer, messages, i, full[end:next_start], kwargs)
        # rewritten: the turn's render lacks some of the content, beyond whitespace (re-spacing is not a rewrite)
        rewritten = "".join(messages[i]["content"].split()) not in "".join(full[previous_end:end].split())
        trained = (head, end + len(marker)) if i in trained_turns else None
        replies.append(Reply(i, (start, end), trained, marker, rewritten))
    spans = [r.trained for r in replies if r.trained is not None]
    return Rendering(full, spans, replies)


def _with_sentinel(messages: list[dict], index: int) -> tuple[list[dict], str]:
    sentinel = _SENTINEL.format(index)
    changed = list(messages)
    changed[index] = {**messages[index], "content": sentinel}
    return changed, sentinel


def _content_region(tokenizer, messages, index, full, kwargs, template_name, required) -> tuple[int, int]:
    """Characters of message ``index`` in ``full``: where the render with a sentinel in its place stops agreeing."""
    changed, sentinel = _with_sentinel(messages, index)
    other = render(tokenizer, changed, **kwargs)
    at = other.find(sentinel)
    if at < 0:
        if required:
            raise DataError(
                f"{template_name} drops the content of turn {index + 1} ({messages[index]['role']}) from the "
                "render, so it cannot be trained on; use another template (data.chat_template) or "
                "data.train_on: last_turn"
            )
        return (-1, -1)
    prefix = min(_common_prefix_length(full, other), at)
    after = len(other) - at - len(sentinel)
    suffix = min(_common_prefix_length(full[::-1], other[::-1]), after, len(full) - prefix)
    return prefix, len(full) - suffix


def _generated_before_content(tokenizer, messages, index, anchor, between, kwargs) -> int:
    """How many characters before the reply's content the model generates itself (a think block, a channel tag):
    the part of ``between`` (the render from the message ``anchor`` to this reply) the generation prompt lacks."""
    if anchor is None:
        try:
            prompt = render(tokenizer, messages[:index], generation_prompt=True, **kwargs)
        except DataError:
            return 0
    else:
        changed, sentinel = _with_sentinel(messages[:index], anchor)
        with_prompt = render(tokenizer, changed, generation_prompt=True, **kwargs)
        at = with_prompt.find(sentinel)
        prompt = with_prompt[at + len(sentinel):] if at >= 0 else ""
    return len(between) - _common_prefix_length(between, prompt)


def _end_of_turn(tokenizer, messages, index, after, kwargs) -> str:
    """The marker after reply ``index``: what follows it both here and when the conversation ends after it."""
    changed, sentinel = _with_sentinel(messages[: index + 1], index)
    closing = render(tokenizer, changed, **kwargs)
    closing = closing[closing.find(sentinel) + len(sentinel):]
    shared = _common_prefix_length(after, closing)
    length = _token_boundary(tokenizer, after, shared)
    if length == 0:  # nothing shared (or only part of a word): fall back to a leading special token, then EOS
        first = _leading_special(tokenizer, after)
        eos = getattr(tokenizer, "eos_token", None)
        length = len(first) if first else (len(eos) if eos and after.startswith(eos) else 0)
    return after[:length]


def _special_tokens(tokenizer) -> list[str]:
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    names = {str(token) for token in added.values()} | set(getattr(tokenizer, "all_special_tokens", []) or [])
    return sorted((name for name in names if name), key=len, reverse=True)


def _leading_special(tokenizer, text: str) -> str:
    return next((token for token in _special_tokens(tokenizer) if text.startswith(token)), "")


def _token_boundary(tokenizer, text: str, length: int) -> int:
    """``length`` moved back to the start of the token it cuts (never half of the next header's first word).
    A cut first token that is special is kept whole: gpt-oss ends a turn with ``<|end|>`` but the conversation
    with ``<|return|>``, which share only ``<|``."""
    if length == 0:
        return 0
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    for token_start, token_end in encoded["offset_mapping"]:
        if token_start < length < token_end:
            first_special = token_start == 0 and text[:token_end] in _special_tokens(tokenizer)
            return token_end if first_special else token_start
    return length


def _common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass(frozen=True)
class TokenizedConversation:
    input_ids: list[int]
    assistant_masks: list[int]
    rendering: Rendering | None = None


def token_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for every token that overlaps a trained span (as transformers' own assistant mask counts them)."""
    return [
        1 if token_end > token_start and any(token_start < end and token_end > start for start, end in spans) else 0
        for token_start, token_end in offsets
    ]


def tokenize_conversation(tokenizer: Any, messages: list[dict], **options: Any) -> TokenizedConversation:
    """Token ids of the rendered conversation and a 0/1 mask that is 1 exactly on assistant-generated tokens."""
    rendering = assistant_spans(tokenizer, messages, **options)
    encoded = tokenizer(rendering.text, add_special_tokens=False, return_offsets_mapping=True)
    mask = token_mask(encoded["offset_mapping"], rendering.spans)
    return TokenizedConversation(list(encoded["input_ids"]), mask, rendering)


def tokenize_text(tokenizer: Any, text: str) -> list[int]:
    """Raw text with the tokenizer's own special tokens, ended by EOS so the model learns to stop."""
    ids = list(tokenizer(text)["input_ids"])
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return ids
