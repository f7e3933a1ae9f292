"""Runs llama.cpp itself (through llama-cpp-python) for the parity tests and bench; never imported by fnsft.

It runs in llama-cpp-python's own interpreter (``$FNSFT_LLAMA_CPP_PYTHON``), which has llama_cpp and numpy but
not fnsft, so it imports nothing else. One JSON job on stdin, one JSON result on stdout:

- ``{"op": "quantize", "input": F32_GGUF, "outputs": {"q4_k_m": PATH, ...}}``: ``llama_model_quantize`` with
  llama.cpp's default parameters (no importance matrix), one thread, per file type.
- ``{"op": "quantize_rows", "input": NPY, "outputs": {"Q4_K": [GGML_TYPE_ID, NPY], ...}}``: ggml's own
  ``ggml_quantize_chunk`` (the function llama_model_quantize calls per tensor) on a float32 matrix.
- ``{"op": "infer", "model": GGUF, "prompts": [{"ids": [...], "text": "...", "scores": NPY}], "chats": [[msg, ...]],
  "max_new_tokens": N}``: next-token logits at every prompt position (saved to ``scores``), greedy continuation
  until an end-of-generation token, llama.cpp's tokenization of ``text``, and ``create_chat_completion`` (the
  chat template stored in the GGUF) on each chat.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time


def _ftype(llama_cpp, name: str) -> int:
    special = {"f32": "LLAMA_FTYPE_ALL_F32", "f16": "LLAMA_FTYPE_MOSTLY_F16", "bf16": "LLAMA_FTYPE_MOSTLY_BF16"}
    return getattr(llama_cpp, special.get(name, f"LLAMA_FTYPE_MOSTLY_{name.upper()}"))


def quantize(job: dict) -> dict:
    import llama_cpp

    results = {}
    for name, target in job["outputs"].items():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = _ftype(llama_cpp, name)
        params.nthread = 1
        began = time.perf_counter()
        code = llama_cpp.llama_model_quantize(job["input"].encode(), target.encode(), ctypes.byref(params))
        results[name] = {"returncode": code, "seconds": time.perf_counter() - began}
    return results


def quantize_rows(job: dict) -> dict:
    from pathlib import Path

    import llama_cpp
    import numpy as np

    libs = Path(llama_cpp.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(next(libs.glob("libggml-base.*"))))
    ggml.ggml_row_size.restype = ctypes.c_size_t
    ggml.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    ggml.ggml_quantize_chunk.restype = ctypes.c_size_t
    ggml.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    rows = np.ascontiguousarray(np.load(job["input"]), dtype=np.float32)
    for name, (type_id, target) in job["outputs"].items():
        row_size = ggml.ggml_row_size(type_id, rows.shape[1])
        out = np.zeros((rows.shape[0], row_size), dtype=np.uint8)
        written = ggml.ggml_quantize_chunk(type_id, rows.ctypes.data, out.ctypes.data, 0, rows.shape[0],
                                           rows.shape[1], None)
        if written != out.size:
            raise RuntimeError(f"ggml_quantize_chunk {name} wrote {written} bytes, expected {out.size}")
        np.save(target, out)
    return {"rows": rows.shape[0]}


def _greedy(llm, llama_cpp, ids: list[int], max_new: int) -> tuple[list[int], bool]:
    """Argmax decoding after ``ids`` (already evaluated); stops after an end-of-generation token."""
    generated: list[int] = []
    for _ in range(max_new):
        token = int(llm.scores[llm.n_tokens - 1].argmax())
        generated.append(token)
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            return generated, True
        llm.eval([token])
    return generated, False


def infer(job: dict) -> dict:
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=job["model"], n_ctx=job.get("n_ctx", 512), logits_all=True, verbose=False,
                          n_threads=1, n_threads_batch=1, seed=0)
    vocab = llm._model.vocab
    result: dict = {
        "bos": llm.token_bos(), "eos": llm.token_eos(), "eot": llama_cpp.llama_vocab_eot(vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "chat_template": llm.metadata.get("tokenizer.chat_template"),
        "eog": [token for token in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, token)],
        "prompts": [], "chats": [],
    }
    max_new = job.get("max_new_tokens", 32)
    for prompt in job["prompts"]:
        ids = prompt["ids"]
        llm.reset()
        llm.eval(ids)
        np.save(prompt["scores"], np.asarray(llm.scores[: len(ids)], dtype=np.float32))
        generated, stopped = _greedy(llm, llama_cpp, ids, max_new)
        result["prompts"].append({
            "tokenized": llm.tokenize(prompt["text"].encode(), add_bos=False, special=True),
            "generated": generated, "stopped_at_eog": stopped,
        })
    for messages in job.get("chats", []):
        llm.reset()
        reply = llm.create_chat_completion(messages=messages, temperature=0.0, top_k=1, max_tokens=max_new, seed=0)
        choice = reply["choices"][0]
        result["chats"].append({"text": choice["message"]["content"], "finish_reason": choice["finish_reason"],
                                "completion_tokens": reply["usage"]["completion_tokens"]})
    return result


def main() -> None:
    job = json.load(sys.stdin)
    result = {"quantize": quantize, "quantize_rows": quantize_rows, "infer": infer}[job["op"]](job)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
