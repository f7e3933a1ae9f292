"""Every chat template shipped in the installed TRL wheel, a tokenizer for each, and the conversations they are
checked on. Shared by the mask tests and by nothing in the package (the tests must stay independent of it)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

TEMPLATE_DIR = Path(str(resources.files("trl").joinpath("chat_templates")))
TEMPLATES = sorted(p.name for p in TEMPLATE_DIR.glob("*.jinja"))
TRAINING_TEMPLATES = [name for name in TEMPLATES if name.endswith("_training.jinja")]
# Marker-like literals in a template (<|im_end|>, <｜end▁of▁sentence｜>, <end_of_turn>, <turn|>, ...): registered as
# special tokens, as the model family's own tokenizer has them.
MARKER = re.compile(r"<[|｜][^<>\s'\"]{1,60}?[|｜]>|<\|?[a-z_]{2,30}\|?>")

CONVERSATIONS = {
    "paris": [
        {"role": "user", "content": "Is the capital Paris or Lyon?"},
        {"role": "assistant", "content": "Paris"},
    ],
    "multi_turn_system": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And the capital of France?"},
        {"role": "assistant", "content": "Paris, of course."},
    ],
    "whitespace_unicode": [
        {"role": "user", "content": "  Café?\n\n東京 🙂  "},
        {"role": "assistant", "content": "\nOui — café. 東京 🙂\n\n"},
        {"role": "user", "content": "\tand now?\n"},
        {"role": "assistant", "content": "Done.\n"},
    ],
    "reply_repeats_user": [
        {"role": "user", "content": "Repeat after me: hello world"},
        {"role": "assistant", "content": "hello world"},
        {"role": "user", "content": "hello world"},
        {"role": "assistant", "content": "hello world"},
    ],
}


@cache
def template_text(name: str) -> str:
    return (TEMPLATE_DIR / name).read_text(encoding="utf-8")


def tokenizer_for(tokenizer_dir: Path, name: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = template_text(name)
    tokenizer.chat_template = text
    tokenizer.add_special_tokens({"additional_special_tokens": sorted(set(MARKER.findall(text)))})
    return tokenizer


def renders(tokenizer, messages) -> bool:
    """Whether the template itself accepts this conversation (gemma rejects system turns, VLM templates want
    content lists): the checks only apply where it does."""
    try:
        tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:
        return False
    return True


def locate_contents(text: str, messages: list[dict]) -> list[tuple[int, int] | None]:
    """The test's own locator: each message's (stripped) content, searched in order from the previous one's end.
    Valid for the conversations above, whose templates render messages in order and content verbatim or trimmed."""
    found, cursor = [], 0
    for message in messages:
        content = message["content"].strip()
        at = text.find(content, cursor)
        if at < 0:
            found.append(None)
            continue
        found.append((at, at + len(content)))
        cursor = at + len(content)
    return found
