"""The tokenizer part of a GGUF file, from a fast tokenizer's ``tokenizer.json``.

Two families, as llama.cpp's ``convert_hf_to_gguf.py`` writes them:

* byte-level BPE (GPT-2 style: SmolLM2, Qwen2, Llama 3) → ``tokenizer.ggml.model = "gpt2"`` with merges and a
  pre-tokenizer name;
* SentencePiece BPE with byte fallback (Llama 2, Mistral v0.1, Gemma) → ``tokenizer.ggml.model = "llama"`` with
  per-token scores. llama.cpp's converter reads those scores from ``tokenizer.model`` with the sentencepiece
  library; here they are derived from ``tokenizer.json``'s merge ranks instead (a token's score is minus the rank
  of the first merge that produces it), which orders merges the same way without a sentencepiece dependency —
  llama.cpp and transformers' GGUF loader both use the scores only to order merges.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fnsft.errors import ExportError, NotYetSupported

#: transformers' BPE pre-tokenizer regexes → llama.cpp's ``tokenizer.ggml.pre`` names (llama.cpp identifies them
#: by hashing tokenizer output; the regex identifies the same families without running llama.cpp's table).
PRE_TOKENIZER_REGEXES = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}
#: llama.cpp's scores for what is not a sentencepiece piece: added tokens and padding rows.
ADDED_TOKEN_SCORE = -1000.0
PADDING_SCORE = -10000.0
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
SPACE_MARK = "\u2581"  # sentencepiece's visible space


@dataclass
class TokenizerInfo:
    """What GGUF needs about the tokenizer, one entry per embedding row."""

    model: Literal["gpt2", "llama"]  # tokenizer.ggml.model
    pre: str
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None
    add_space_prefix: bool | None = None
    notes: list[str] = field(default_factory=list)


def read_tokenizer_json(model_dir: Path) -> dict[str, Any]:
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise NotYetSupported(f"{model_dir}: GGUF export needs a fast tokenizer (tokenizer.json); none found")
    try:
        return json.loads(tokenizer_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ExportError(f"{tokenizer_file}: not a readable tokenizer.json ({error})") from error


def tokenizer_family(tokenizer_json: dict[str, Any]) -> str:
    """``"gpt2"`` (byte-level BPE) or ``"llama"`` (sentencepiece BPE); anything else is not written yet."""
    model = tokenizer_json.get("model", {})
    decoder_type = (tokenizer_json.get("decoder") or {}).get("type")
    if model.get("type") == "BPE" and not model.get("byte_fallback") and decoder_type == "ByteLevel":
        return "gpt2"
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return "llama"
    raise NotYetSupported(
        "GGUF export writes byte-level BPE tokenizers (SmolLM2, Qwen2, Llama 3) and sentencepiece BPE tokenizers "
        f"with byte fallback (Llama 2, Mistral, Gemma); this tokenizer is {model.get('type')} "
        f"(byte_fallback={bool(model.get('byte_fallback'))}, decoder {decoder_type}), which is not written yet"
    )


def detect_pre_tokenizer(tokenizer_json: dict[str, Any]) -> str | None:
    """llama.cpp's pre-tokenizer name for a byte-level BPE tokenizer.json, or None when not recognised."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds and kinds[0] == "Split":
        return PRE_TOKENIZER_REGEXES.get((steps[0].get("pattern") or {}).get("Regex", ""))
    return None


def tokenizer_info(model_dir: Path, vocab_size: int, pre_hint: str | None) -> TokenizerInfo:
    """Tokens, types (and scores) as llama.cpp's converter writes them, padded to the model's vocab size."""
    tokenizer_json = read_tokenizer_json(model_dir)
    if tokenizer_family(tokenizer_json) == "llama":
        return sentencepiece_info(tokenizer_json, vocab_size, unknown_token(model_dir, tokenizer_json))
    return byte_level_info(model_dir, tokenizer_json, vocab_size, pre_hint)


def byte_level_info(model_dir: Path, tokenizer_json: dict[str, Any], vocab_size: int,
                    pre_hint: str | None) -> TokenizerInfo:
    """llama.cpp's ``get_vocab_base``: every token in transformers' spelling, added tokens typed by specialness."""
    from gguf import TokenType
    from transformers import AutoTokenizer

    notes: list[str] = []
    pre = pre_hint or detect_pre_tokenizer(tokenizer_json)
    if pre is None:
        pre = "default"
        notes.append("pre-tokenizer not recognised: wrote tokenizer.ggml.pre='default' (llama.cpp may split text "
                     "differently from transformers)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    by_id = {index: text for text, index in tokenizer.get_vocab().items()}
    _check_fits(len(by_id), vocab_size)
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
        elif index in added:
            tokens.append(by_id[index])
            types.append(TokenType.CONTROL if added[index].special else TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[index])
            types.append(TokenType.NORMAL)
    return TokenizerInfo("gpt2", pre, tokens, [int(t) for t in types], notes=notes)


def unknown_token(model_dir: Path, tokenizer_json: dict[str, Any]) -> str | None:
    """The unknown token: tokenizer.json's model names it in older conversions, tokenizer_config.json in newer."""
    if tokenizer_json["model"].get("unk_token"):
        return tokenizer_json["model"]["unk_token"]
    config_file = model_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    unk = config.get("unk_token")
    return unk.get("content") if isinstance(unk, dict) else unk


def sentencepiece_info(tokenizer_json: dict[str, Any], vocab_size: int, unk_token: str | None) -> TokenizerInfo:
    """llama.cpp's ``_create_vocab_sentencepiece`` from tokenizer.json: pieces with scores, byte pieces typed BYTE,
    the unknown piece UNKNOWN, added tokens CONTROL (special) or USER_DEFINED with score -1000, padding UNUSED."""
    from gguf import TokenType

    model = tokenizer_json["model"]
    vocab: dict[str, int] = model["vocab"]
    added = {int(entry["id"]): entry for entry in tokenizer_json.get("added_tokens", [])}
    _check_fits(max([*vocab.values(), *added]) + 1, vocab_size)
    merges = model.get("merges", [])
    scores_by_token = merge_rank_scores(merges)
    unmerged_floor = -float(len(merges))  # pieces no merge produces rank below every merge, as in sentencepiece

    tokens = [f"[PAD{index}]" for index in range(vocab_size)]
    types = [TokenType.UNUSED] * vocab_size
    scores = [PADDING_SCORE] * vocab_size
    for text, index in vocab.items():
        tokens[index] = text
        if BYTE_PIECE.fullmatch(text):
            types[index], scores[index] = TokenType.BYTE, 0.0
        elif text == unk_token:
            types[index], scores[index] = TokenType.UNKNOWN, 0.0
        else:
            types[index] = TokenType.NORMAL
            scores[index] = scores_by_token.get(text, unmerged_floor - index)
    for index, entry in added.items():
        tokens[index] = entry["content"]
        if entry["content"] == unk_token:
            types[index], scores[index] = TokenType.UNKNOWN, 0.0
        elif entry.get("special"):
            types[index], scores[index] = TokenType.CONTROL, 0.0
        else:
            types[index], scores[index] = TokenType.USER_DEFINED, ADDED_TOKEN_SCORE
    return TokenizerInfo("llama", "default", tokens, [int(t) for t in types], scores,
                         add_space_prefix=adds_space_prefix(tokenizer_json))


def merge_rank_scores(merges: list[Any]) -> dict[str, float]:
    """Minus the rank of the first merge producing each token: sentencepiece's score order, from BPE merges."""
    scores: dict[str, float] = {}
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        scores.setdefault(left + right, -float(rank))
    return scores


def adds_space_prefix(tokenizer_json: dict[str, Any]) -> bool:
    """Whether text gets a leading "▁" (sentencepiece's add_dummy_prefix): a ``Prepend("▁")`` normalizer (older
    Llama 2 files) or a ``Metaspace`` pre-tokenizer that prepends (newer ones). Gemma does neither."""
    def steps(component: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
        component = component or {}
        return component.get(key, []) if component.get("type") == "Sequence" else [component]

    for step in steps(tokenizer_json.get("normalizer"), "normalizers"):
        if step.get("type") == "Prepend" and step.get("prepend") == SPACE_MARK:
            return True
    for step in steps(tokenizer_json.get("pre_tokenizer"), "pretokenizers"):
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always") != "never" and step.get("add_prefix_space", True)
    return False


def _check_fits(token_count: int, vocab_size: int) -> None:
    if token_count > vocab_size:
        raise ExportError(f"the tokenizer has {token_count} tokens but the model only {vocab_size} embeddings")
