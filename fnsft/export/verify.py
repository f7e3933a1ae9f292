"""The parity gate after `fnsft export`: does each exported file behave like the model that was trained?

On held-out examples (the run's eval split, rebuilt with the run's seed, or a ``--verify-data`` file) three
kinds of model are compared, each against the one it was made from: the merged model against the adapter (PEFT
on the base: catches a wrong alpha/r scaling, a missed module, a wrong base), and every GGUF, dequantized by
gguf's own dequantizers (:func:`gguf_model`), against the merged model (catches quantization and conversion
errors). Per pair: mean per-token KL(reference ‖ candidate), top-1 agreement, the perplexity of each on the
examples, and greedy continuations of a few prompts side by side (the first differing token shown). KL and top-1
are gated by the per-type limits in :data:`LIMITS`.

The models run in float32, one at a time, on a GPU when one has room (:func:`verify_device`), else the CPU; the
time per step is in the report. What keeps the gate cheap beside the export it checks: GGUFs are read with
:mod:`fnsft.gguf_file` (gguf's GGUFReader takes seconds per 49k-token vocabulary) and dequantized straight into
one model's parameters, file after file (:func:`load_gguf_weights`); samples run in batches, the prefix they all
share (a chat template's system header) computed once; greedy continuations are read out of the samples' own
forward pass as long as a model continues as its data (the first model) or its reference does, and generated
token by token only from where it departs (:func:`_run_model`); and the merge is checked on the first
:data:`MERGE_SAMPLES` samples only.

Each GGUF's metadata is checked against the HF tokenizer and generation config too: the chat template present
and equal, BOS/EOS/pad ids equal, every ``generation_config.eos_token_id`` an end-of-generation token for
llama.cpp (Llama 3 has two), the add-BOS flag as the tokenizer behaves, and the Modelfile's stop strings covering
every end-of-turn marker.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fnsft.atomic import atomic_write_text
from fnsft.errors import ExportError
from fnsft.gguf_file import GgufFile, read_gguf

VERIFY_JSON = "verify.json"
#: Examples compared, tokens per example, prompts continued greedily and tokens generated for each.
MAX_SAMPLES, MAX_TOKENS, GREEDY_PROMPTS, GREEDY_TOKENS = 16, 128, 3, 16
#: Examples the merged model is compared with the adapter on (the first ones; every GGUF is compared on all).
MERGE_SAMPLES = 4
#: Sequences per forward pass (19 at most: the samples and the greedy prompts); 8 × 128 positions × a 49k
#: vocabulary is 200 MB of logits.
BATCH = 8
#: Shared leading tokens worth computing once (shorter prefixes are recomputed per sequence).
MIN_SHARED_PREFIX = 4
#: Used when neither the run's data nor --verify-data can be read (said so in the report).
FALLBACK_TEXTS = [
    "The capital of France is Paris. It is known for the Eiffel Tower, which was built in 1889.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Once upon a time, there was a little girl who lived in a village near the forest.",
]
#: Token texts llama.cpp treats as end of generation when they are in the vocabulary (llama-vocab.cpp).
LLAMA_CPP_EOG_TEXTS = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "_<EOT>",
                       "<｜end▁of▁sentence｜>", "<|end_of_text|>", "<|return|>", "<|call|>", "<|eom_id|>"}


@dataclass(frozen=True)
class Limit:
    """What a file of one type is expected to keep of its reference's predictions."""

    max_mean_kl: float
    min_top1: float


#: Per-type limits (nats, fraction of positions). Set from measurements on SmolLM2-135M and the tiny test models,
#: with room: f16/bf16/q8_0 keep nearly every prediction; 4-bit and below lose some near-ties by design.
LIMITS: dict[str, Limit] = {
    "merged": Limit(0.01, 0.98),  # merged vs adapter: only the rounding of W + s·BA to the base dtype
    "f32": Limit(1e-4, 0.995), "f16": Limit(5e-3, 0.97), "bf16": Limit(0.02, 0.95), "q8_0": Limit(0.03, 0.93),
    "q6_k": Limit(0.05, 0.9), "q5_k_s": Limit(0.08, 0.88), "q5_k_m": Limit(0.08, 0.88),
    "q4_k_s": Limit(0.2, 0.8), "q4_k_m": Limit(0.2, 0.8), "q4_0": Limit(0.4, 0.7),
    "q3_k_s": Limit(0.6, 0.65), "q3_k_m": Limit(0.6, 0.65), "q3_k_l": Limit(0.6, 0.65), "q2_k": Limit(1.5, 0.5),
}


class Greedy(BaseModel):
    prompt: str
    reference: str
    candidate: str
    first_difference: int | None = None  # index of the first differing generated token
    reference_token: str | None = None
    candidate_token: str | None = None


class Pair(BaseModel):
    candidate: str  # "merged" or a GGUF type
    reference: str
    mean_kl: float
    top1_agreement: float
    perplexity_reference: float
    perplexity_candidate: float
    positions: int
    greedy: list[Greedy] = []


class Check(BaseModel):
    subject: str  # "merged", a GGUF type, or "Modelfile"
    name: str
    passed: bool
    detail: str


class VerifyReport(BaseModel):
    data_source: str
    samples: int
    pairs: list[Pair] = []
    checks: list[Check] = []
    notes: list[str] = []
    device: str = "cpu"  # where the models ran
    seconds: float = 0.0
    step_seconds: dict[str, float] = {}  # "data", then each model compared ("adapter", "merged", a GGUF type)
    export_seconds: float | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


@dataclass
class Sample:
    prompt: str  # what a user would send (chat-rendered with the generation prompt)
    full: str  # prompt + the reference answer


def _samples_from_rows(rows: list[dict], tokenizer: Any) -> list[Sample]:
    from fnsft.data.templates import render

    samples = []
    for row in rows[:MAX_SAMPLES]:
        messages = row.get("messages")
        if messages:
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant") if any(
                m["role"] == "assistant" for m in messages) else len(messages)
            prompt = render(tokenizer, messages[:last], generation_prompt=True)
            samples.append(Sample(prompt, render(tokenizer, messages[:last + 1])))
        else:
            text = row["text"]
            samples.append(Sample(text[: max(1, len(text) // 2)], text))
    return samples


def held_out_samples(recipe: Any, verify_data: Path | None, tokenizer: Any) -> tuple[list[Sample], str]:
    """Examples to compare on: --verify-data, else the run's eval split rebuilt with its seed, else fixed texts."""
    from datasets.utils.logging import disable_progress_bar

    from fnsft.data.load import load_raw
    from fnsft.data.prepare import canonicalize, detect, split
    from fnsft.errors import DataError

    disable_progress_bar()
    if verify_data is not None:
        section = recipe.data.model_copy(update={"path": str(verify_data), "eval_split": None,
                                                 "max_samples": None, "fingerprint": None})
        raw = load_raw(section)  # a bad file is the user's input: its DataError (file/line) stops here
        rows, _ = canonicalize(raw, section, detect(raw, section).format)
        return _samples_from_rows(list(rows), tokenizer), f"{verify_data} ({min(len(rows), MAX_SAMPLES)} rows)"
    first_source = recipe.data.source_sections()[0][1]  # a mixture is verified on its first source's held-out rows
    try:
        raw = load_raw(first_source)
        train, evaluation = canonicalize(raw, first_source, detect(raw, first_source).format)
        _, evaluation = split(train, evaluation, first_source, recipe.training.seed)
    except DataError as exc:
        return _samples_from_rows([{"text": t} for t in FALLBACK_TEXTS], tokenizer), (
            f"{len(FALLBACK_TEXTS)} built-in texts (the run's data could not be read: {exc}; give --verify-data)")
    if evaluation is None or not len(evaluation):
        return _samples_from_rows([{"text": t} for t in FALLBACK_TEXTS], tokenizer), (
            f"{len(FALLBACK_TEXTS)} built-in texts (the run has no eval split; give --verify-data)")
    rows = [evaluation[i] for i in range(min(len(evaluation), MAX_SAMPLES))]
    return _samples_from_rows(rows, tokenizer), (
        f"{len(rows)} of the {len(evaluation)} held-out rows of {recipe.data.describe()}")


@dataclass
class _Encoded:
    """Token ids of each sample (full text, truncated) and of the first GREEDY_PROMPTS prompts."""

    full: list[list[int]]
    prompts: list[list[int]]

    @classmethod
    def of(cls, tokenizer: Any, samples: list[Sample]) -> _Encoded:
        return cls([tokenizer(s.full, add_special_tokens=False).input_ids[:MAX_TOKENS] for s in samples],
                   [tokenizer(s.prompt, add_special_tokens=False).input_ids[-MAX_TOKENS:]
                    for s in samples[:GREEDY_PROMPTS]])

    def head(self, count: int) -> _Encoded:
        """The first ``count`` samples (the greedy prompts unchanged)."""
        return _Encoded(self.full[:count], self.prompts)


@dataclass
class _Outputs:
    log_probs: list[Any]  # per sample: (positions, vocab) float32 log-softmax
    greedy: list[list[int]]

    def head(self, count: int) -> _Outputs:
        return _Outputs(self.log_probs[:count], self.greedy)


def _shared_prefix(sequences: list[list[int]]) -> int:
    """How many leading tokens every sequence has in common (a chat template's system header), leaving each at
    least one token of its own."""
    return min(len(os.path.commonprefix(sequences)), min(map(len, sequences)) - 1)


def _cache_keyword() -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache`` (argument and output; the old name goes in 5.40)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _prefix_cache(model: Any, prefix: list[int]) -> tuple[Any, Any] | None:
    """The logits and KV cache of the shared prefix, computed once; None where the model's cache is not one
    whose layers can be repeated over a batch (then every sequence is computed whole)."""
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if len(prefix) < MIN_SHARED_PREFIX:
        return None
    out = model(input_ids=torch.tensor([prefix], device=model.device), use_cache=True)
    cache = getattr(out, _cache_keyword())
    if type(cache) is not DynamicCache or not all(isinstance(layer, DynamicLayer) for layer in cache.layers):
        return None
    return out.logits[0].float(), cache


def _logits(model: Any, sequences: list[list[int]]) -> list[Any]:
    """Each sequence's logits, BATCH sequences per forward pass, right-padded: one (batch × positions) matrix
    product per layer instead of one per sample is most of the gate's speed on a CPU, and with causal attention
    the padding after a sequence cannot change its logits. The prefix every sequence shares (the chat template's
    system header: half the positions of short chat samples) is computed once and its KV cache reused."""
    import torch

    prefix = _shared_prefix(sequences)
    shared = _prefix_cache(model, sequences[0][:prefix])
    if shared is None:
        prefix = 0
    logits = []
    for start in range(0, len(sequences), BATCH):
        chunk = [sequence[prefix:] for sequence in sequences[start:start + BATCH]]
        ids = torch.zeros(len(chunk), max(map(len, chunk)), dtype=torch.long)
        mask = torch.zeros(len(chunk), prefix + ids.shape[1], dtype=torch.long)
        mask[:, :prefix] = 1
        for row, suffix in enumerate(chunk):
            ids[row, :len(suffix)] = torch.tensor(suffix)
            mask[row, prefix:prefix + len(suffix)] = 1
        past = None
        if shared is not None:
            past = copy.deepcopy(shared[1])
            for layer in past.layers:
                layer.batch_repeat_interleave(len(chunk))
        out = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                    **{_cache_keyword(): past}).logits.float()
        for row, suffix in enumerate(chunk):
            own = out[row, :len(suffix)]
            logits.append(torch.cat([shared[0], own]) if shared is not None else own)
    return logits


def _generate(model: Any, prompts: list[list[int]], tokens: int) -> list[list[int]]:
    """Greedy continuations of the prompts, generated together (left-padded: generate takes the positions from
    the attention mask), each cut after its first end-of-generation token as a lone generate call would stop."""
    import torch

    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                         max_new_tokens=tokens, do_sample=False, pad_token_id=0)
    stops = _stop_tokens(model)
    return [_cut_after_stop(row, stops) for row in out[:, width:].tolist()]


def _stop_tokens(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


def _cut_after_stop(tokens: list[int], stops: set[int]) -> list[int]:
    return tokens[:next((i + 1 for i, token in enumerate(tokens) if token in stops), len(tokens))]


def _run_model(model: Any, encoded: _Encoded, follow: list[list[int]] | None = None) -> _Outputs:
    """The model's log-probs on every sample and its greedy continuation of each prompt.

    The model is not made to generate token by token where it need not: its predictions along prompt + a guessed
    continuation (``follow``: the reference model's greedy tokens; for the first model, each prompt's own answer
    in the data) come out of the same batched forward pass as the samples, and are its greedy continuation for as
    long as they agree with the guess (each one is the argmax given exactly the tokens greedy decoding would have
    produced before it). Only where they first differ, or where the guess ends before an end-of-generation token
    and GREEDY_TOKENS, does it generate the rest itself (every such prompt in one call). Where prompt + guess
    begins a sample (a model that answers as its data did), the sample's logits already hold those predictions
    and no sequence is added. A sound export of a model that learnt its data thus costs one forward pass per
    model, and the continuations shown side by side are still the ones greedy decoding gives.
    """
    import torch

    model.eval()
    stops = _stop_tokens(model)
    if follow is None:
        follow = [_cut_after_stop(sample[len(prompt):len(prompt) + GREEDY_TOKENS], stops)
                  if sample[:len(prompt)] == prompt else []
                  for prompt, sample in zip(encoded.prompts, encoded.full, strict=False)]  # prompts: the first 3
    with torch.no_grad():
        followed = [prompt + tokens for prompt, tokens in zip(encoded.prompts, follow, strict=True)]
        within = [_sample_starting_with(encoded.full, sequence[:-1]) for sequence in followed]
        own = [sequence for sequence, sample in zip(followed, within, strict=True) if sample is None]
        logits = _logits(model, encoded.full + own)
        samples, own_logits = logits[:len(encoded.full)], iter(logits[len(encoded.full):])
        greedy, unfinished = [], []
        for index, (prompt, tokens, sample) in enumerate(zip(encoded.prompts, follow, within, strict=True)):
            source = next(own_logits) if sample is None else samples[sample]
            predicted = source[len(prompt) - 1:len(prompt) - 1 + len(tokens)].argmax(-1).tolist()
            first = next((i for i, (a, b) in enumerate(zip(tokens, predicted, strict=True)) if a != b), None)
            if first is None and len(tokens) < GREEDY_TOKENS and not (tokens and tokens[-1] in stops):
                first = len(tokens)  # the guess ended early (a short answer without EOS): greedy goes on
            greedy.append(tokens if first is None else tokens[:first])
            if first is not None:
                unfinished.append(index)
        if unfinished:  # the rest of every unfinished continuation in one generate call, each cut to its length
            rest = _generate(model, [encoded.prompts[i] + greedy[i] for i in unfinished],
                             GREEDY_TOKENS - min(len(greedy[i]) for i in unfinished))
            for index, tokens in zip(unfinished, rest, strict=True):
                greedy[index] = greedy[index] + tokens[:GREEDY_TOKENS - len(greedy[index])]
        return _Outputs([sample.log_softmax(-1) for sample in samples], greedy)


def _sample_starting_with(samples: list[list[int]], tokens: list[int]) -> int | None:
    """The first sample that begins with ``tokens``: with causal attention its logits there are those of
    ``tokens`` alone (a model that reproduces its training answers follows into the held-out sample itself)."""
    return next((i for i, sample in enumerate(samples) if sample[:len(tokens)] == tokens), None)


def _greedy_rows(tokenizer: Any, samples: list[Sample], ref: _Outputs, cand: _Outputs) -> list[Greedy]:
    rows = []
    for sample, a, b in zip(samples, ref.greedy, cand.greedy, strict=False):
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if first is None and len(a) != len(b):
            first = min(len(a), len(b))
        rows.append(Greedy(
            prompt=sample.prompt[-60:], reference=tokenizer.decode(a), candidate=tokenizer.decode(b),
            first_difference=first,
            reference_token=tokenizer.decode(a[first:first + 1]) if first is not None else None,
            candidate_token=tokenizer.decode(b[first:first + 1]) if first is not None else None,
        ))
    return rows


def compare(candidate: str, reference: str, ref: _Outputs, cand: _Outputs, encoded: _Encoded, tokenizer: Any,
            samples: list[Sample]) -> Pair:
    import torch

    # Sample by sample: never a (all positions × vocabulary) copy of both models' log-probs at once.
    kl = agree = nll_ref = nll_cand = 0.0
    positions = targets = 0
    for p, q, ids in zip(ref.log_probs, cand.log_probs, encoded.full, strict=True):
        # per position KL ≥ 0; float32 log-softmax rounding leaves identical models at ±1e-9, shown as 0
        kl += float((p.exp() * (p - q)).sum(-1).clamp_min(0).sum())
        agree += float((p.argmax(-1) == q.argmax(-1)).sum())
        next_ids = torch.tensor(ids[1:], device=p.device)[:, None]
        nll_ref -= float(p[:-1].gather(-1, next_ids).sum())
        nll_cand -= float(q[:-1].gather(-1, next_ids).sum())
        positions, targets = positions + p.shape[0], targets + len(ids) - 1
    return Pair(
        candidate=candidate, reference=reference, mean_kl=kl / positions, top1_agreement=agree / positions,
        perplexity_reference=math.exp(nll_ref / targets) if targets else float("nan"),
        perplexity_candidate=math.exp(nll_cand / targets) if targets else float("nan"),
        positions=positions, greedy=_greedy_rows(tokenizer, samples, ref, cand),
    )


def parity_checks(pair: Pair, limit: Limit) -> list[Check]:
    label = f"{pair.candidate} vs {pair.reference}"
    return [
        Check(subject=pair.candidate, name="mean token KL", passed=pair.mean_kl <= limit.max_mean_kl,
              detail=f"{label}: {pair.mean_kl:.2e} nats (limit {limit.max_mean_kl:g})"),
        Check(subject=pair.candidate, name="top-1 agreement", passed=pair.top1_agreement >= limit.min_top1,
              detail=f"{label}: {pair.top1_agreement:.1%} of {pair.positions} positions "
                     f"(limit {limit.min_top1:.0%})"),
    ]


def _eos_ids(model_dir: Path, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS and every generation_config.eos_token_id (Llama 3 lists two)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    config = model_dir / "generation_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("eos_token_id")
        ids += value if isinstance(value, list) else [value] if value is not None else []
    return list(dict.fromkeys(ids))


def metadata_checks(gguf_path: Path, fields: dict[str, Any], model_dir: Path, tokenizer: Any, qtype: str) -> list[Check]:
    """The GGUF's tokenizer metadata (``read_gguf(gguf_path).fields``) against the HF tokenizer and generation
    config."""
    checks = []

    def add(name: str, passed: bool, detail: str) -> None:
        checks.append(Check(subject=qtype, name=name, passed=passed, detail=f"{gguf_path.name}: {detail}"))

    template, expected_template = fields.get("tokenizer.chat_template"), getattr(tokenizer, "chat_template", None)
    if expected_template:
        add("chat template", template == expected_template,
            "chat template equal to the tokenizer's" if template == expected_template else
            "no chat template (tokenizer.chat_template missing): llama.cpp/Ollama would fall back to a generic "
            "one" if template is None else "chat template differs from the tokenizer's")
    for role, expected in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                           ("padding", tokenizer.pad_token_id)):
        stored = fields.get(f"tokenizer.ggml.{role}_token_id")
        if expected is not None:
            add(f"{role} id", stored == expected, f"{role} id {stored} (tokenizer: {expected} "
                f"{tokenizer.convert_ids_to_tokens(expected)!r})")
    tokens = fields.get("tokenizer.ggml.tokens") or []
    stops = {fields.get(f"tokenizer.ggml.{role}_token_id") for role in ("eos", "eot", "eom")}
    for eos in _eos_ids(model_dir, tokenizer):
        text = tokens[eos] if 0 <= eos < len(tokens) else None
        ok = eos in stops or text in LLAMA_CPP_EOG_TEXTS
        add("end of generation", ok, f"generation_config eos {eos} ({text!r}) "
            + ("ends generation in llama.cpp" if ok else "is neither the GGUF's eos/eot id nor a token llama.cpp "
               "stops at: generation would not stop"))
    if tokenizer.bos_token_id is not None:
        adds_bos = tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]
        flag = fields.get("tokenizer.ggml.add_bos_token")
        model = fields.get("tokenizer.ggml.model")
        effective = flag if flag is not None else model == "llama"  # llama.cpp's default per vocabulary type
        add("add-BOS flag", effective == adds_bos,
            f"add_bos_token {flag} (effective {effective}); the tokenizer {'adds' if adds_bos else 'does not add'} BOS")
    return checks


def modelfile_checks(modelfile: Path, model_dir: Path, tokenizer: Any) -> list[Check]:
    """Every end-of-turn marker (EOS and generation_config eos tokens) is a stop string of the Modelfile."""
    stops = set()
    for line in modelfile.read_text().splitlines():
        if line.startswith("PARAMETER stop "):
            stops.add(json.loads(line[len("PARAMETER stop "):]))
    checks = []
    for eos in _eos_ids(model_dir, tokenizer):
        marker = tokenizer.convert_ids_to_tokens(eos)
        checks.append(Check(subject="Modelfile", name="stop strings", passed=marker in stops,
                            detail=f"end-of-turn marker {marker!r} "
                                   + ("is a stop string" if marker in stops else "is missing from PARAMETER stop")))
    return checks


#: Values per call of gguf's block dequantizer (4 MB of float32 out: the temporaries, a few times that, stay below
#: glibc's 32 MB mmap threshold and so reuse the heap's pages instead of faulting in fresh ones per call).
DEQUANTIZE_CHUNK = 2**20


def dequantize_tensor(data: Any, tensor_type: Any, out: Any = None) -> Any:
    """``gguf.dequantize``, the same values, twice as fast on SmolLM2 here: gguf's own function runs its block
    dequantizer 16 rows at a time; this runs the same one (``gguf.quants.Q8_0`` …) on ~1M values at a time.

    ``out``: a C-contiguous float32 array of as many values to write them into (a model's parameter), else a new one.
    """
    import numpy as np
    from gguf import dequantize, quants

    kind = getattr(quants, tensor_type.name, None)
    if tensor_type.name in ("F32", "F16") or kind is None or data.ndim < 2:
        values = dequantize(data, tensor_type)
        if out is None:
            return values
        target = out.reshape(values.shape)
        target[...] = values
        return target
    kind.init_grid()  # the lookup tables of the IQ types; nothing for the others
    rows = data.reshape(-1, data.shape[-1])
    values_per_row = quants.quant_shape_from_byte_shape(rows.shape, tensor_type)[-1]
    shape = (rows.shape[0], values_per_row)
    out = np.empty(shape, dtype=np.float32) if out is None else out.reshape(shape)
    step = max(1, DEQUANTIZE_CHUNK // values_per_row)
    for start in range(0, rows.shape[0], step):
        out[start:start + step] = kind.dequantize_rows(rows[start:start + step])
    return out.reshape(*data.shape[:-1], values_per_row)


def load_gguf_weights(model: Any, gguf: GgufFile, model_dir: Path) -> None:
    """Overwrite every parameter of ``model`` (a transformers model of the merged model's config) with the GGUF's
    tensor, dequantized by gguf's own dequantizers, the converter's transforms undone (rotary permutation, Gemma's
    1 + w). In place: the gate loads every GGUF after the first into the first one's model, no fresh pages to
    fault in per file (135M parameters: 540 MB, 0.3-1.5 s here).

    Tensor names are mapped back with fnsft's own name map (transformers' GGUF loader checks the mapping in the
    test suite, but parses a 49k-token vocabulary for tens of seconds per file: too slow for a gate after every
    export). A parameter the GGUF does not have is an ExportError (left in place it would be the previous file's).
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from fnsft.export.gguf import ARCHITECTURES, plan_tensors, unpermute_qk

    config = model.config
    spec = ARCHITECTURES[config.model_type]
    hf_names = {planned.gguf_name: planned.entry.name for planned in plan_tensors(model_dir, config, "f32")}
    unknown = [tensor.name for tensor in gguf.tensors if tensor.name not in hf_names]
    if unknown:
        raise ExportError(f"{gguf.path}: tensors the model does not have: {', '.join(unknown[:5])}")

    def load(tensor: Any) -> str:
        name = hf_names[tensor.name]
        parameter = model.get_parameter(name).data
        permuted = spec.permute_qk and name.endswith(("q_proj.weight", "k_proj.weight"))
        direct = (parameter.device.type == "cpu" and parameter.dtype == torch.float32
                  and parameter.is_contiguous() and not permuted)
        values = dequantize_tensor(tensor.data, tensor.tensor_type, parameter.numpy() if direct else None)
        values = values.reshape(parameter.shape)
        if permuted:
            kv_heads = config.num_key_value_heads if name.endswith("k_proj.weight") else config.num_attention_heads
            values = unpermute_qk(values, config.num_attention_heads, kv_heads)
        if spec.norm_plus_one and name.endswith("norm.weight"):
            values = values - 1 if not direct else np.subtract(values, 1, out=values)
        if not direct:
            parameter.copy_(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))
        return name

    # numpy releases the GIL in the block arithmetic: one tensor per thread (SmolLM2 q4_k_m: 1.3 → 0.8 s, 2 cores)
    with torch.no_grad(), ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        written = set(pool.map(load, gguf.tensors))
    missing = [name for name, _ in model.named_parameters() if name not in written]
    if missing:
        raise ExportError(f"{gguf.path}: tensors missing from the GGUF: {', '.join(missing[:5])}")


def gguf_model(gguf: GgufFile, model_dir: Path):
    """The model stored in a GGUF, rebuilt on the merged model's config (:func:`load_gguf_weights`)."""
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight is overwritten: random initialisation would be wasted time
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=torch.float32)
    model.tie_weights()  # a tied lm_head is the embedding, which the GGUF stores once
    for parameter in model.parameters():
        # numpy's memory: it asks the kernel for huge pages (up to 512× fewer page faults than torch's 4 KB ones)
        parameter.data = torch.from_numpy(np.empty(tuple(parameter.shape), dtype=np.float32))
    load_gguf_weights(model, gguf, model_dir)
    return model


def verify_device(model_dir: Path) -> str:
    """Where the models run: a GPU when one has room for the model in float32 (the gate compares fp32 logits)
    with a margin for activations and logits, else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    from fnsft.export.merge import weight_entries

    fp32_bytes = 4 * sum(math.prod(entry.shape) for entry in weight_entries(model_dir))
    free, _ = torch.cuda.mem_get_info()
    return "cuda" if free > 1.25 * fp32_bytes + 2 * 2**30 else "cpu"


def verify_exports(
    run: Any, recipe: Any, model_dir: Path, gguf_files: dict[str, Path], *, adapter_base: Path | None,
    modelfile: Path | None, verify_data: Path | None = None, export_seconds: float | None = None,
) -> VerifyReport:
    """Compare and check everything `fnsft export` wrote; the report is also written to exports/verify.json.

    Args:
        run: the RunDir.
        recipe: the run's resolved recipe.
        model_dir: the merged model (or a full run's model/).
        gguf_files: GGUF type → file.
        adapter_base: the base model directory of a PEFT run (None for a full run: nothing to compare the merge to).
        modelfile: the Ollama Modelfile written, if any.
        verify_data: examples to compare on instead of the run's eval split.
        export_seconds: how long the export took (recorded beside the verification time).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, logging

    logging.set_verbosity_error()
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    samples, source = held_out_samples(recipe, verify_data, tokenizer)
    if not samples:
        raise ExportError(f"{source}: no examples to verify on")
    encoded = _Encoded.of(tokenizer, samples)
    device = verify_device(model_dir)
    report = VerifyReport(data_source=source, samples=len(samples), export_seconds=export_seconds, device=device)
    lap = started

    def step_done(name: str) -> None:
        nonlocal lap
        report.step_seconds[name] = round(time.perf_counter() - lap, 2)
        lap = time.perf_counter()

    step_done("data")

    def load(directory: Path):
        return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, device_map=device)

    # The first model follows the data's answers, every later one its reference's continuations (_run_model).
    # One model is in memory at a time, beside its reference's log-probs; the first GGUF's model
    # takes each later GGUF's weights in turn (load_gguf_weights).
    if adapter_base is not None:
        from peft import PeftModel

        # The merge check needs fewer samples than a quantization's: a wrong merge (scaling, a module left out,
        # another base) moves every prediction, where a quantization's small losses are measured on all of them.
        checked = min(MERGE_SAMPLES, len(encoded.full))
        adapter = _run_model(PeftModel.from_pretrained(load(adapter_base), run.adapter).to(device),
                             encoded.head(checked))
        step_done("adapter")
        model = load(model_dir)
        merged = _run_model(model, encoded, follow=adapter.greedy)
        pair = compare("merged", "adapter", adapter, merged.head(checked), encoded.head(checked), tokenizer, samples)
        del adapter
        report.pairs.append(pair)
        report.checks += parity_checks(pair, LIMITS["merged"])
    else:
        model = load(model_dir)
        merged = _run_model(model, encoded)
    step_done("merged")
    # Freed, not reused for the GGUFs: it maps the safetensors file, and the first write to each page copies it
    # (0.8 s more than fresh memory for SmolLM2 here).
    model = None
    for qtype, path in gguf_files.items():
        gguf = read_gguf(path)
        report.checks += metadata_checks(path, gguf.fields, model_dir, tokenizer, qtype)
        if model is None:
            model = gguf_model(gguf, model_dir).to(device)
        else:
            load_gguf_weights(model, gguf, model_dir)
        candidate = _run_model(model, encoded, follow=merged.greedy)
        pair = compare(qtype, "merged", merged, candidate, encoded, tokenizer, samples)
        report.pairs.append(pair)
        report.checks += parity_checks(pair, LIMITS[qtype])
        step_done(qtype)
    if modelfile is not None:
        report.checks += modelfile_checks(modelfile, model_dir, tokenizer)
    report.seconds = round(time.perf_counter() - started, 2)
    atomic_write_text(run.exports / VERIFY_JSON, report.model_dump_json(indent=2) + "\n")
    return report
