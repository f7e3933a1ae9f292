"""Loss masks on every chat template in the installed TRL wheel, against references that are not the code under test.

1. The ``*_training.jinja`` templates carry ``{% generation %}`` markers: transformers' own
   ``return_assistant_tokens_mask`` gives a reference mask on the same rendered text. What is compared: the two masks
   agree token for token except (a) the reference also marks text that the generation prompt itself supplies (the
   assistant header such as ``<｜Assistant｜>`` / ``<|start|>assistant``, or the ``<think>\\n`` a reasoning prompt
   opens), which the model never generates, and (b) we also train the whitespace the template writes right after
   the end-of-turn marker (``<|im_end|>`` + ``\\n``, as most ChatML training templates do themselves).
2. Every template that renders a conversation: the invariants of issue 13, checked with the test's own in-order
   locator of each message's content.
"""

from __future__ import annotations

import pytest
from template_cases import CONVERSATIONS, TEMPLATES, TRAINING_TEMPLATES, locate_contents, renders, tokenizer_for

from fnsft.data.templates import assistant_spans, tokenize_conversation
from fnsft.errors import DataError

# Templates whose render keeps no assistant content for plain-text messages (they expect content lists): refused.
DROPS_TEXT_CONTENT = {"idefics3.jinja", "idefics3_training.jinja", "smolvlm.jinja", "smolvlm_training.jinja"}
# GLM-4 writes no end-of-turn marker: the reply stops at the next role token, which GLM's generation config lists
# among its stop tokens, so that token is what must be trained after the reply.
# Templates that cannot render string content at all (they index content as a list of parts).
NEEDS_CONTENT_PARTS = {"llava_next.jinja", "llava_next_training.jinja"}
NEXT_ROLE_TOKEN_ENDS_TURN = {"glm4moe.jinja", "glm4moe_training.jinja"}


@pytest.fixture(scope="module")
def tokenizers(smol_tokenizer_dir):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = tokenizer_for(smol_tokenizer_dir, name)
        return cache[name]

    return get


def _inside(position, spans):
    return any(start <= position < end for start, end in spans)


def _prompt_supplied(tokenizer, messages, text):
    """Character ranges of ``text`` that a generation prompt gives before each assistant turn (independently:
    render(messages[:i], add_generation_prompt=True) against render(messages[:i]))."""
    ranges = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i == 0:
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False)
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        shared = next((k for k, (a, b) in enumerate(zip(prompt, text, strict=False)) if a != b), min(len(prompt), len(text)))
        if text.startswith(before):
            ranges.append((len(before), shared))
    return ranges


@pytest.mark.parametrize("name", TRAINING_TEMPLATES)
def test_mask_matches_generation_markers(tokenizers, name):
    tokenizer = tokenizers(name)
    compared = 0
    for messages in CONVERSATIONS.values():
        if not renders(tokenizer, messages) or name in DROPS_TEXT_CONTENT:
            continue
        reference = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                  return_assistant_tokens_mask=True)
        ours = tokenize_conversation(tokenizer, messages)
        assert ours.input_ids == list(reference["input_ids"])
        text = ours.rendering.text
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        supplied = _prompt_supplied(tokenizer, messages, text)
        for (start, end), ref_bit, our_bit in zip(offsets, reference["assistant_masks"], ours.assistant_masks, strict=True):
            piece = text[start:end]
            if ref_bit and not our_bit:
                assert any(a <= start and end <= b for a, b in supplied), f"reference trains {piece!r}, we do not"
            if our_bit and not ref_bit:
                assert piece.strip() == "", f"we train {piece!r}, the reference does not"
        assert sum(ours.assistant_masks) > 0
        compared += 1
    assert compared or name in DROPS_TEXT_CONTENT | NEEDS_CONTENT_PARTS


def _check_invariants(tokenizer, name, messages):
    rendering = assistant_spans(tokenizer, messages)
    text, spans = rendering
    located = locate_contents(text, messages)
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    assert len(spans) == len(assistants)
    for i, message in enumerate(messages):
        start, end = located[i]
        trained = [_inside(p, spans) for p in range(start, end)]
        if message["role"] == "assistant":
            assert all(trained), f"turn {i}: reply not fully trained"
        else:
            assert not any(trained), f"turn {i} ({message['role']}): trained"
    for k, i in enumerate(assistants):
        span_start, span_end = spans[k]
        previous_end = located[i - 1][1] if i else 0
        next_start = located[i + 1][0] if i + 1 < len(messages) else len(text)
        assert previous_end <= span_start and span_end <= next_start, f"turn {i}: span leaves its turn"
        after_reply = text[located[i][1]:next_start]
        if after_reply.strip():  # the template writes something after the reply: its first token must be trained
            first = len(after_reply) - len(after_reply.lstrip())
            assert _inside(located[i][1] + first, spans), f"turn {i}: end-of-turn marker not trained"
        tail = text[located[i][1]:span_end]
        if i + 1 < len(messages) and name not in NEXT_ROLE_TOKEN_ENDS_TURN:
            assert messages[i + 1]["role"] not in tail, f"turn {i}: next header trained ({tail!r})"
    return rendering


@pytest.mark.parametrize("name", TEMPLATES)
def test_invariants_on_every_template(tokenizers, name):
    tokenizer = tokenizers(name)
    checked = 0
    for messages in CONVERSATIONS.values():
        if not renders(tokenizer, messages):
            continue
        if name in DROPS_TEXT_CONTENT:
            with pytest.raises(DataError, match=r"turn \d+ \(assistant\)"):
                assistant_spans(tokenizer, messages, template_name=name)
            continue
        _check_invariants(tokenizer, name, messages)
        checked += 1
    # every template renders at least one of the conversations, except the VLM ones that want content lists
    assert checked or name in DROPS_TEXT_CONTENT | NEEDS_CONTENT_PARTS


def test_user_words_repeated_by_the_reply_are_not_trained(tokenizers):
    """The failure the issue measured: 'Paris' in the question must stay untrained, 'Paris' the reply trained."""
    tokenizer = tokenizers("qwen3.jinja")
    text, spans = assistant_spans(tokenizer, CONVERSATIONS["paris"])
    question = text.index("Paris")
    reply = text.rindex("Paris")
    assert question < reply
    assert not _inside(question, spans) and _inside(reply, spans)
    assert text[spans[0][0]:spans[0][1]] == "<think>\n\n</think>\n\nParis<|im_end|>\n"


def test_gpt_oss_trains_end_and_return_markers(tokenizers):
    tokenizer = tokenizers("gptoss.jinja")
    text, spans = assistant_spans(tokenizer, CONVERSATIONS["multi_turn_system"])
    assert [text[a:b] for a, b in spans] == [
        "<|channel|>final<|message|>4<|end|>", "<|channel|>final<|message|>Paris, of course.<|return|>"]


def test_history_rewriting_is_reported_and_last_turn_only(tokenizers):
    """Qwen3 strips the reasoning of earlier turns: that turn trains on what the render shows and says so."""
    tokenizer = tokenizers("qwen3.jinja")
    messages = [
        {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "<think>R1</think>A1"},
        {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "<think>R2</think>A2"},
    ]
    rendering = assistant_spans(tokenizer, messages)
    text = rendering.text
    assert [text[a:b] for a, b in rendering.spans] == ["A1<|im_end|>\n", "<think>\nR2\n</think>\n\nA2<|im_end|>\n"]
    assert [reply.rewritten for reply in rendering.replies] == [True, False]  # the last is only re-spaced
    last = assistant_spans(tokenizer, messages, train_on="last_turn")
    assert [text[a:b] for a, b in last.spans] == ["<think>\nR2\n</think>\n\nA2<|im_end|>\n"]


def test_enable_thinking_false_leaves_the_prompt_think_block_untrained(tokenizers):
    tokenizer = tokenizers("qwen3.jinja")
    text, spans = assistant_spans(tokenizer, CONVERSATIONS["paris"], chat_template_kwargs={"enable_thinking": False})
    assert text[spans[0][0]:spans[0][1]] == "Paris<|im_end|>\n"
    assert "<think>\n\n</think>\n\nParis" in text


def test_trimming_templates_accept_trailing_whitespace(tokenizers):
    for name in ("llama3.jinja", "gemma3.jinja", "cohere.jinja", "qwen3_5_nothink.jinja"):
        tokenizer = tokenizers(name)
        messages = [{"role": "user", "content": "hi\n"}, {"role": "assistant", "content": "hello\n\n"}]
        text, spans = assistant_spans(tokenizer, messages)
        assert "hello" in text[spans[0][0]:spans[0][1]]


# Written by hand from each family's chat format (what the model generates after its generation prompt): one
# template per failure class of issue 13 — trimming (Llama 3.1, Gemma 3, Cohere 2), a prompt that opens a think
# block (Qwen3.5, Nemotron), history rewriting (DeepSeek R1), per-turn end markers (gpt-oss), EOS after the chat
# (Phi-3.5, whose template appends the tokenizer's EOS: SmolLM2's <|im_end|> here).
HAND_WRITTEN = {
    "llama3_1.jinja": ["Paris<|eot_id|>", "Yes, Paris.<|eot_id|>"],
    "gemma3.jinja": ["Paris<end_of_turn>\n", "Yes, Paris.<end_of_turn>\n"],
    "cohere2.jinja": ["Paris\n<|END_RESPONSE|><|END_OF_TURN_TOKEN|>", "Yes, Paris.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"],
    "qwen3_5_think.jinja": ["Paris<|im_end|>\n", "\n</think>\n\nYes, Paris.<|im_end|>\n"],
    "nemotron_3_nano.jinja": ["</think>Paris<|im_end|>\n", "</think>Yes, Paris.<|im_end|>\n"],
    "deepseek_r1_distill.jinja": ["Paris\n<｜end▁of▁sentence｜>", "Yes, Paris.<｜end▁of▁sentence｜>"],
    "gptoss.jinja": ["<|channel|>final<|message|>Paris\n<|end|>", "<|channel|>final<|message|>Yes, Paris.<|return|>"],
    "phi3_5.jinja": ["Paris\n<|end|>\n", "Yes, Paris.<|end|>\n<|im_end|>"],
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_hand_written_spans(tokenizers, name):
    messages = [
        {"role": "user", "content": "Is the capital Paris or Lyon?\n"}, {"role": "assistant", "content": "Paris\n"},
        {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "Yes, Paris."},
    ]
    text, spans = assistant_spans(tokenizers(name), messages)
    assert [text[a:b] for a, b in spans] == HAND_WRITTEN[name]
