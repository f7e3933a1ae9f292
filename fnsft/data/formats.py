"""Row formats: detect which one a dataset uses and convert every row to one canonical shape.

Canonical rows are either ``{"messages": [{"role", "content"}, ...]}`` (alpaca, sharegpt, messages,
prompt/completion) or ``{"text": str}`` (raw text). Conversion errors name the row and the missing field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fnsft.errors import DataError

SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
    "model": "assistant", "chatgpt": "assistant", "system": "system",
}
CHAT_ROLES = {"system", "user", "assistant", "tool"}


@dataclass(frozen=True)
class Detection:
    format: str
    reason: str


def detect_format(rows: Sequence[Mapping[str, Any]], source: str) -> Detection:
    """Decide the format from the keys of the first rows; explain the decision."""
    if not rows:
        raise DataError(f"{source}: the dataset is empty")
    # Only the fields the first row fills: a file mixing formats gets every column in every row (None where a
    # row lacks it), and a 'messages' column of Nones must not make an alpaca row 1 look like a broken chat row.
    keys = {key for key, value in rows[0].items() if value is not None} if isinstance(rows[0], Mapping) else set()
    if "messages" in keys:
        return Detection("messages", "rows have a 'messages' list")
    if "conversations" in keys:
        first = rows[0]["conversations"]
        if isinstance(first, list) and first and isinstance(first[0], Mapping) and "role" in first[0]:
            return Detection("messages", "rows have 'conversations' with role/content turns")
        return Detection("sharegpt", "rows have 'conversations' with from/value turns")
    if {"instruction", "output"} <= keys:
        return Detection("alpaca", "rows have 'instruction' and 'output'")
    if {"prompt", "completion"} <= keys:
        return Detection("prompt_completion", "rows have 'prompt' and 'completion'")
    if "text" in keys:
        return Detection("text", "rows have a 'text' field")
    shown = ", ".join(sorted(map(str, keys))[:8]) or "none"
    raise DataError(
        f"{source}: cannot detect the dataset format from the columns ({shown}). Expected one of: "
        "instruction/output (alpaca), conversations (sharegpt), messages, prompt/completion, text. "
        "Set data.format explicitly or rename the columns."
    )


def _text_field(row: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise DataError(f"{where}: missing field '{key}'")
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}' must be text, got {type(value).__name__}")
    return value


def _alpaca(row: Mapping[str, Any], where: str) -> dict:
    instruction = _text_field(row, "instruction", where)
    extra = _text_field(row, "input", where, required=False)
    messages = []
    if system := _text_field(row, "system", where, required=False):
        messages.append({"role": "system", "content": system})
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text_field(row, "output", where)}]
    return {"messages": messages}


def _turns(row: Mapping[str, Any], key: str, where: str) -> list:
    turns = row.get(key)
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field '{key}' must be a non-empty list of turns")
    return turns


def _sharegpt(row: Mapping[str, Any], where: str) -> dict:
    messages = []
    for i, turn in enumerate(_turns(row, "conversations", where)):
        if not isinstance(turn, Mapping):
            raise DataError(f"{where}: conversations[{i}] must be a mapping with 'from' and 'value'")
        speaker = turn.get("from")
        role = SHAREGPT_ROLES.get(str(speaker).lower()) if speaker is not None else None
        if role is None:
            raise DataError(f"{where}: conversations[{i}].from is {speaker!r}; expected one of {sorted(SHAREGPT_ROLES)}")
        messages.append({"role": role, "content": _text_field(turn, "value", f"{where}: conversations[{i}]")})
    return {"messages": _checked(messages, where)}


def _messages(row: Mapping[str, Any], where: str) -> dict:
    key = "messages" if "messages" in row else "conversations"
    messages = []
    for i, turn in enumerate(_turns(row, key, where)):
        if not isinstance(turn, Mapping):
            raise DataError(f"{where}: {key}[{i}] must be a mapping with 'role' and 'content'")
        role = turn.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise DataError(f"{where}: {key}[{i}].role is {role!r}; expected one of {sorted(CHAT_ROLES)}")
        messages.append({"role": role, "content": _text_field(turn, "content", f"{where}: {key}[{i}]")})
    return {"messages": _checked(messages, where)}


def _prompt_completion(row: Mapping[str, Any], where: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": _text_field(row, "prompt", where)},
            {"role": "assistant", "content": _text_field(row, "completion", where)},
        ]
    }


def _text(row: Mapping[str, Any], where: str) -> dict:
    text = _text_field(row, "text", where)
    if not text.strip():
        raise DataError(f"{where}: field 'text' is empty")
    return {"text": text}


def _checked(messages: list[dict], where: str) -> list[dict]:
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: the conversation has no assistant turn to learn from")
    return messages


CONVERTERS: dict[str, Callable[[Mapping[str, Any], str], dict]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "messages": _messages,
    "prompt_completion": _prompt_completion,
    "text": _text,
}


def to_canonical(row: Any, fmt: str, where: str) -> dict:
    """Convert one row to canonical form; ``where`` names it in errors (e.g. 'data.jsonl row 17')."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected a mapping of fields, got {type(row).__name__}")
    return CONVERTERS[fmt](row, where)
