"""Answer accuracy on held-out conversations: greedy generation vs the reference reply (exact match).

Eval loss says the model got better at predicting references; exact match says whether it now answers right.
Used before and after training when ``evaluation.exact_match_samples`` > 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fnsft.console import err
from fnsft.data.templates import render


def normalize(text: str) -> str:
    """Case, surrounding whitespace and trailing punctuation do not make an answer wrong."""
    return re.sub(r"[\s.!]+$", "", text.strip()).strip().lower()


@dataclass
class ExactMatch:
    accuracy: float
    correct: int
    total: int
    examples: list[dict[str, str]]


def exact_match(model: Any, tokenizer: Any, conversations: list[list[dict]], max_new_tokens: int,
                template_kwargs: dict[str, Any] | None = None, batch_size: int = 16) -> ExactMatch:
    import torch

    items = [(c[:-1], c[-1]["content"]) for c in conversations if c and c[-1]["role"] == "assistant"]
    prompts = [render(tokenizer, history, generation_prompt=True, **(template_kwargs or {})) for history, _ in items]
    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only generation needs the prompt flush against the new tokens
    answers: list[str] = []
    # generation takes minutes on CPU with nothing else moving: say what is happening and how far it is
    status = err.status(f"answering {len(prompts)} held-out questions") if err.is_terminal else None
    try:
        if status is not None:
            status.start()
        device = next(model.parameters()).device
        for start in range(0, len(prompts), batch_size):
            if status is not None:
                status.update(f"answering held-out questions: {start}/{len(prompts)} done")
            batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                generated = model.generate(
                    **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id, use_cache=True
                )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            answers += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        if status is not None:
            status.stop()
        tokenizer.padding_side = padding_side
        model.train(was_training)
    examples = [
        {"prompt": history[-1]["content"], "reference": reference, "answer": answer.strip()}
        for (history, reference), answer in zip(items, answers, strict=True)
    ]
    correct = sum(normalize(e["answer"]) == normalize(e["reference"]) for e in examples)
    return ExactMatch(correct / len(examples) if examples else 0.0, correct, len(examples), examples)
