"""Assistant-only masks must cover exactly the assistant replies (plus end-of-turn) for any chat template."""

from __future__ import annotations

from importlib import resources

import pytest

from fnsft.data.templates import assistant_spans, configure_template, tokenize_conversation

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And the capital of France?"},
    {"role": "assistant", "content": "Paris, of course."},
]

# (template file shipped inside TRL, or None for the SmolLM2 tokenizer's own; the end-of-turn text it appends)
TEMPLATES = {
    "smollm2-own": (None, "<|im_end|>\n"),
    "qwen2_5": ("qwen2_5.jinja", "<|im_end|>\n"),
    "llama3": ("llama3.jinja", "<|eot_id|>"),
    "gemma": ("gemma.jinja", "<end_of_turn>\n"),
    "phi3": ("phi3.jinja", "<|end|>\n"),
}
# The markers each template uses, registered as special tokens as that model family's own tokenizer has them.
MARKERS = ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<start_of_turn>", "<end_of_turn>",
           "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def _tokenizer(smol_tokenizer_dir, template_file):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    if template_file:
        tokenizer.chat_template = resources.files("trl").joinpath("chat_templates", template_file).read_text()
        tokenizer.add_special_tokens({"additional_special_tokens": MARKERS})
    return tokenizer


def _masked_runs(tokenizer, ids, mask):
    runs, current = [], []
    for token, bit in zip(ids, mask, strict=True):
        if bit:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_mask_covers_exactly_the_assistant_replies(smol_tokenizer_dir, name):
    template_file, end_of_turn = TEMPLATES[name]
    tokenizer = _tokenizer(smol_tokenizer_dir, template_file)
    messages = CONVERSATION if name != "gemma" else CONVERSATION[1:]  # gemma's template rejects system turns
    tokens = tokenize_conversation(tokenizer, messages)
    runs = _masked_runs(tokenizer, tokens.input_ids, tokens.assistant_masks)
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    expected = [(reply + end_of_turn).strip() for reply in replies]
    if runs and runs[-1].endswith(tokenizer.eos_token) and not expected[-1].endswith(tokenizer.eos_token):
        expected[-1] = (expected[-1] + "\n" + tokenizer.eos_token).strip()  # templates that end the chat with EOS
    assert [run.strip() for run in runs] == [e.replace("\n\n", "\n") for e in expected]
    # and the unmasked part holds every user turn in full
    unmasked = tokenizer.decode([t for t, bit in zip(tokens.input_ids, tokens.assistant_masks, strict=True) if not bit])
    for message in messages:
        if message["role"] == "user":
            assert message["content"] in unmasked


def test_mask_agrees_with_generation_markers(smol_tokenizer_dir):
    """Against transformers' own assistant mask from TRL's {% generation %} training template (ground truth)."""
    tokenizer = _tokenizer(smol_tokenizer_dir, "llama3_training.jinja")
    truth = tokenizer.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ours = tokenize_conversation(_tokenizer(smol_tokenizer_dir, "llama3.jinja"), CONVERSATION)
    assert ours.input_ids == list(truth["input_ids"])
    assert ours.assistant_masks == list(truth["assistant_masks"])


def test_plain_template_is_used_without_a_chat_template(smol_tokenizer_dir):
    tokenizer = _tokenizer(smol_tokenizer_dir, None)
    tokenizer.chat_template = None
    assert configure_template(tokenizer, None) == "plain"
    text, spans = assistant_spans(tokenizer, CONVERSATION[1:3])
    assert text[spans[0][0] : spans[0][1]].startswith("4")
    assert "### Instruction:" in text
