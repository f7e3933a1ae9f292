"""fnsft's GGUF files held against llama.cpp itself: the part shared by test_llamacpp.py and bench/llamacpp_parity.py.

llama.cpp is never a dependency of fnsft. It runs here through llama-cpp-python installed in a separate
interpreter, named by ``$FNSFT_LLAMA_CPP_PYTHON`` (``just test-llamacpp`` sets it), in a subprocess running
llamacpp_worker.py. Two comparisons:

- quantization: fnsft writes an F32 file, llama.cpp's ``llama_model_quantize`` makes each file type from it, and
  fnsft writes the same type directly; the files are compared tensor by tensor (type chosen, then block by block).
- inference: llama.cpp loads fnsft's files and its next-token logits, greedy continuations, tokenization and chat
  completions (with the chat template stored in the GGUF) are compared with transformers on the HF model.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ENV = "FNSFT_LLAMA_CPP_PYTHON"
WORKER = Path(__file__).with_name("llamacpp_worker.py")

#: Conversations the tiny chat model is trained on: its greedy replies end with the end-of-turn token.
TINY_CHATS = [("What is the capital of France?", "Paris."), ("Name a function.", "def fibonacci(n):"),
              ("Count to three.", "one two three")]
#: Questions for SmolLM2-135M-Instruct, short enough that its greedy answer ends within the token budget.
SMOLLM2_CHATS = ["What is the capital of France?", "Say hello in one word.", "What is 2 + 2?"]
#: The GGML types fnsft's writer produces (K-quants, their 32-block fallbacks, the plain types).
ENCODER_TYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def llama_cpp_interpreter() -> tuple[str | None, str]:
    """(path, llama_cpp version) of the interpreter in $FNSFT_LLAMA_CPP_PYTHON, or (None, why it cannot be used)."""
    python = os.environ.get(ENV)
    if not python:
        return None, f"{ENV} is not set (an interpreter with llama-cpp-python installed; see `just test-llamacpp`)"
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        return None, f"{ENV}={python} is not an executable file"
    probe = subprocess.run([python, "-c", "import llama_cpp; print(llama_cpp.__version__)"], capture_output=True,
                           text=True, env=_child_env(), check=False)
    if probe.returncode:
        tail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{ENV}={python} cannot import llama_cpp: {tail}"
    return python, probe.stdout.strip()


def _child_env() -> dict[str, str]:
    # llama.cpp's own interpreter must not pick up this checkout or fnsft's venv packages
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {"OMP_NUM_THREADS": "1"}


def run_worker(python: str, job: dict, timeout: float = 3600) -> dict:
    result = subprocess.run([python, str(WORKER)], input=json.dumps(job), capture_output=True, text=True,
                            env=_child_env(), timeout=timeout, check=False)
    if result.returncode:
        tail = " | ".join(result.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"llama.cpp worker ({job['op']}) exited {result.returncode}: {tail}")
    return json.loads(result.stdout)


def ggml_encode(python: str, rows, type_names: list[str]) -> dict:
    """ggml's own ``ggml_quantize_chunk`` of a float32 matrix, per GGML type name: uint8 (rows, bytes per row)."""
    import numpy as np
    from gguf import GGMLQuantizationType

    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "rows.npy"
        np.save(source, np.ascontiguousarray(rows, dtype=np.float32))
        outputs = {name: [int(GGMLQuantizationType[name]), str(Path(scratch) / f"{name}.npy")] for name in type_names}
        run_worker(python, {"op": "quantize_rows", "input": str(source), "outputs": outputs})
        return {name: np.load(path) for name, (_, path) in outputs.items()}


def awkward_rows(count: int):
    """Rows of 256 values (one super-block, eight 32-blocks each) that exercise every branch of the encoders."""
    import numpy as np

    rng = np.random.default_rng(0)
    scales = 10.0 ** rng.uniform(-6, 1, size=(count, 1))
    kinds = [rng.standard_normal((count, 256)) * scales, rng.standard_t(2, (count, 256)) * 0.01,
             rng.standard_normal((count, 256)) * (rng.random((count, 256)) < 0.1) * 0.02,
             np.abs(rng.standard_normal((count, 256))) * 0.02 + 0.01]
    special = [np.zeros(256), np.full(256, -0.03), np.full(256, 0.5), np.r_[np.zeros(100), np.ones(156) * 1e-3]]
    return np.concatenate([*kinds, np.stack(special)]).astype(np.float32)


def encoder_differences(python: str, rows, type_names: list[str]) -> dict[str, tuple[int, int]]:
    """Per GGML type: (blocks, blocks where fnsft's encoding differs from ggml's); F16/BF16 count values."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    theirs = ggml_encode(python, rows, type_names)
    found = {}
    for name in type_names:
        block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[name]][1]
        ours = fnsft_encode(rows, name).reshape(-1, block_bytes)
        found[name] = (int(ours.shape[0]), int((ours != theirs[name].reshape(-1, block_bytes)).any(axis=1).sum()))
    return found


def fnsft_encode(rows, type_name: str):
    """The encoder fnsft's writer uses for one GGML type, as uint8 (rows, bytes per row)."""
    import numpy as np

    from fnsft.export.gguf import encode

    rows = np.ascontiguousarray(rows, dtype=np.float32)
    encoded = encode(rows, type_name)
    return np.ascontiguousarray(encoded).view(np.uint8).reshape(rows.shape[0], -1)


def write_fnsft(model_dir: Path, target: Path, qtype: str) -> float:
    """Write ``qtype`` with fnsft's own writer; returns the seconds it took."""
    from fnsft.export.gguf import GgufMetadata, write_gguf

    began = time.perf_counter()
    write_gguf(model_dir, target, qtype, GgufMetadata(name="parity"))
    return time.perf_counter() - began


def _fields(path: Path) -> dict[str, object]:
    from gguf import GGUFReader

    return {name: field.contents() for name, field in GGUFReader(path).fields.items() if not name.startswith("GGUF.")}


def compare_gguf(ours: Path, theirs: Path) -> dict:
    """Tensor by tensor: the type each file stores, and how many blocks (elements for F32/F16/BF16) differ."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGUFReader

    mine = {tensor.name: tensor for tensor in GGUFReader(ours).tensors}
    other = {tensor.name: tensor for tensor in GGUFReader(theirs).tensors}
    rows = []
    for name in sorted(mine.keys() | other.keys()):
        if name not in mine or name not in other:
            rows.append({"name": name, "missing_in": "fnsft" if name not in mine else "llama.cpp"})
            continue
        a, b = mine[name], other[name]
        row: dict = {"name": name, "shape": [int(n) for n in a.shape], "fnsft": a.tensor_type.name,
                     "llama_cpp": b.tensor_type.name}
        if a.tensor_type == b.tensor_type and list(a.shape) == list(b.shape):
            block_bytes = GGML_QUANT_SIZES[a.tensor_type][1]
            x = np.asarray(a.data).view(np.uint8).reshape(-1, block_bytes)
            y = np.asarray(b.data).view(np.uint8).reshape(-1, block_bytes)
            differ = np.flatnonzero((x != y).any(axis=1))
            row |= {"blocks": int(x.shape[0]), "differing_blocks": int(differ.size),
                    "first_differing_blocks": differ[:5].tolist()}
        rows.append(row)
    ours_fields, their_fields = _fields(ours), _fields(theirs)
    metadata = sorted(key for key in ours_fields.keys() | their_fields.keys()
                      if ours_fields.get(key) != their_fields.get(key))
    compared = [row for row in rows if "blocks" in row]
    return {
        "tensors": len(rows),
        "type_mismatches": [row for row in rows if "blocks" not in row],
        "blocks": sum(row["blocks"] for row in compared),
        "differing_blocks": sum(row["differing_blocks"] for row in compared),
        "tensors_differing": [row for row in compared if row["differing_blocks"]],
        "types": sorted({row["fnsft"] for row in compared}),
        "metadata_differences": metadata,
    }


def quantize_parity(python: str, model_dir: Path, workdir: Path, qtypes: list[str]) -> dict[str, dict]:
    """fnsft's file of each type against llama.cpp's quantization of fnsft's F32 file; one result per type."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "fnsft-f32.gguf"
    write_fnsft(model_dir, source, "f32")
    theirs = {qtype: str(workdir / f"llama-cpp-{qtype}.gguf") for qtype in qtypes}
    timings = run_worker(python, {"op": "quantize", "input": str(source), "outputs": theirs})
    results = {}
    for qtype in qtypes:
        if timings[qtype]["returncode"]:
            raise RuntimeError(f"llama_model_quantize {qtype} returned {timings[qtype]['returncode']}")
        ours = workdir / f"fnsft-{qtype}.gguf"
        seconds = write_fnsft(model_dir, ours, qtype)
        results[qtype] = compare_gguf(ours, Path(theirs[qtype])) | {
            "fnsft_seconds": seconds, "llama_cpp_seconds": timings[qtype]["seconds"]}
        ours.unlink()
        Path(theirs[qtype]).unlink()
    return results


def fit_chat_model(base_dir: Path, target: Path, steps: int = 120) -> Path:
    """``base_dir`` trained (all weights) on :data:`TINY_CHATS`, so its greedy replies are decided and end with
    the end-of-turn token, as a fine-tune's do."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                           tokenize=False) for q, a in TINY_CHATS]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    model.eval().save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def _eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def hf_reference(model_dir: Path, questions: list[str], max_new_tokens: int) -> dict:
    """transformers on the HF model: chat prompts (rendered by the tokenizer), logits at every prompt position,
    greedy continuations (stopping at generation_config's EOS ids)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    stop = _eos_ids(model)
    prompts = []
    for question in questions:
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
            sequence, generated = list(ids), []
            for _ in range(max_new_tokens):
                token = int(model(torch.tensor([sequence])).logits[0, -1].argmax())
                generated.append(token)
                if token in stop:
                    break
                sequence.append(token)
        prompts.append({"question": question, "text": text, "ids": ids, "logits": logits, "generated": generated,
                        "stopped": generated[-1] in stop, "reply": tokenizer.decode(generated, skip_special_tokens=True)})
    return {"prompts": prompts, "eos": sorted(stop), "chat_template": tokenizer.chat_template,
            "bos": tokenizer.bos_token_id}


def _first_difference(a: list[int], b: list[int]) -> int | None:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def inference_parity(python: str, gguf_path: Path, reference: dict, max_new_tokens: int) -> dict:
    """llama.cpp on ``gguf_path`` against :func:`hf_reference`: per prompt and summed up."""
    import numpy as np
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        job = {"op": "infer", "model": str(gguf_path), "max_new_tokens": max_new_tokens, "n_ctx": 512,
               "prompts": [{"ids": p["ids"], "text": p["text"], "scores": str(Path(scratch) / f"{i}.npy")}
                           for i, p in enumerate(reference["prompts"])],
               "chats": [[{"role": "user", "content": p["question"]}] for p in reference["prompts"]]}
        began = time.perf_counter()
        result = run_worker(python, job)
        seconds = time.perf_counter() - began
        scores = [torch.from_numpy(np.load(prompt["scores"])) for prompt in job["prompts"]]
    expected = torch.cat([p["logits"] for p in reference["prompts"]]).log_softmax(-1)
    actual = torch.cat(scores).log_softmax(-1)
    prompts = []
    for ref, got, chat in zip(reference["prompts"], result["prompts"], result["chats"], strict=True):
        prompts.append({
            "question": ref["question"], "tokenization_equal": got["tokenized"] == ref["ids"],
            "greedy_equal": got["generated"] == ref["generated"],
            "first_differing_token": _first_difference(got["generated"], ref["generated"]),
            "llama_cpp_stopped_at_eog": got["stopped_at_eog"], "hf_stopped_at_eos": ref["stopped"],
            "llama_cpp_generated": len(got["generated"]), "hf_generated": len(ref["generated"]),
            "hf_reply": ref["reply"], "chat_reply": chat["text"], "chat_finish_reason": chat["finish_reason"],
            "chat_reply_equal": chat["text"].strip() == ref["reply"].strip(),
        })
    return {
        "top1_agreement": float((expected.argmax(-1) == actual.argmax(-1)).float().mean()),
        "mean_kl": float((expected.exp() * (expected - actual)).sum(-1).mean()),
        "positions": int(expected.shape[0]),
        "chat_template_equal": result["chat_template"] == reference["chat_template"],
        "eos_in_eog": set(reference["eos"]) <= set(result["eog"]), "llama_cpp_eos": result["eos"],
        "llama_cpp_eot": result["eot"], "hf_eos": reference["eos"], "llama_cpp_seconds": seconds,
        "prompts": prompts,
    }
