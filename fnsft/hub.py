"""`fnsft push`: upload a run's adapter, model or exports to the Hugging Face Hub, with a generated model card.

A push is planned first (pure, offline: files, sizes, card) and executed second, as ONE commit: either every
file lands or none does, so nothing half-uploaded is ever reported as done. The token comes from HF_TOKEN or
huggingface_hub's login cache; it is passed to the client only and never written anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from fnsft.errors import ExportError
from fnsft.export.card import ArtifactKind, model_card, resolve_base_model_id, validate_repo_id
from fnsft.export.files import list_files
from fnsft.export.merge import ADAPTER_CONFIG
from fnsft.export.pipeline import MERGED, MODELFILE, open_run
from fnsft.rundir import RunDir

#: What a push uploads: the run's default (adapter for PEFT, model for full), the adapter, or exports/merged.
PushWhat = Literal["default", "adapter", "merged"]

CARD_NAME = "README.md"
#: Provenance uploaded beside the weights, so the Hub repository alone says how it was made.
PROVENANCE_DIR = "fnsft"
#: Files of a run directory that never go to the Hub (PEFT's template card is replaced by ours).
SKIPPED_NAMES = {CARD_NAME, "training_args.bin"}


class UploadItem(BaseModel):
    """One file of the commit: its path in the repository and where its bytes come from."""

    path_in_repo: str
    local_path: Path | None = None  # None: generated content (the card, the rewritten adapter config)
    content: str | None = None
    size: int

    def payload(self) -> str | bytes:
        """What the commit uploads: the file's path, or the generated text's bytes."""
        if self.local_path is not None:
            return str(self.local_path)
        assert self.content is not None, "an upload item has a local file or generated content"
        return self.content.encode()


class PushPlan(BaseModel):
    """Everything a push will do, computed without network access (what `--dry-run` prints)."""

    repo_id: str
    private: bool
    revision: str | None
    kinds: list[ArtifactKind]
    items: list[UploadItem]
    card: str
    base_model_id: str | None = None  # what the pushed adapter_config.json names as its base model

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.items)


def _folder_items(folder: Path, prefix: str = "") -> list[UploadItem]:
    return [
        UploadItem(path_in_repo=prefix + item.path.relative_to(folder).as_posix(), local_path=item.path, size=item.size)
        for item in list_files(folder)
        if item.path.name not in SKIPPED_NAMES
        and not any(part.startswith(".") for part in item.path.relative_to(folder).parts)  # staging, temporaries
    ]


def _adapter_items(run: RunDir, base_model_id: str) -> list[UploadItem]:
    """The adapter's files, its config naming the base by Hub id (training wrote a local path there)."""
    import json

    items = _folder_items(run.adapter)
    for index, item in enumerate(items):
        if item.path_in_repo == ADAPTER_CONFIG and item.local_path is not None:
            config = json.loads(item.local_path.read_text(encoding="utf-8"))
            config["base_model_name_or_path"] = base_model_id
            content = json.dumps(config, indent=2, sort_keys=True) + "\n"
            items[index] = UploadItem(path_in_repo=ADAPTER_CONFIG, content=content, size=len(content.encode()))
    return items


def _export_items(run: RunDir, kinds: list[ArtifactKind]) -> list[UploadItem]:
    items: list[UploadItem] = []
    if "merged" in kinds:
        merged = run.exports / MERGED
        if not merged.is_dir():
            raise ExportError(f"{run.root}: no merged model to push; run `fnsft export {run.root} --merge` first")
        items += _folder_items(merged)
    if "gguf" in kinds:
        ggufs = sorted(p for p in run.exports.glob("*.gguf") if not p.name.startswith(".")) if run.exports.is_dir() else []
        if not ggufs:
            raise ExportError(f"{run.root}: no GGUF files to push; run `fnsft export {run.root} --gguf q8_0` first")
        items += [UploadItem(path_in_repo=p.name, local_path=p, size=p.stat().st_size) for p in ggufs]
        if (run.exports / MODELFILE).is_file():
            items.append(UploadItem(path_in_repo=MODELFILE, local_path=run.exports / MODELFILE,
                                    size=(run.exports / MODELFILE).stat().st_size))
    return items


def plan_push(
    run_path: str | Path,
    repo_id: str,
    *,
    what: PushWhat = "default",
    gguf: bool = False,
    private: bool = False,
    revision: str | None = None,
    base_model_id: str | None = None,
) -> PushPlan:
    """Decide what a push uploads: PEFT runs → adapter only (default), full runs → the model, or exports.

    Args:
        run_path: finished run directory.
        repo_id: OWNER/NAME.
        what: "default" (adapter for PEFT runs, model for full runs), "adapter" (refused for full runs) or
            "merged" (exports/merged/, written by `fnsft export --merge`).
        gguf: push the GGUF files (and Modelfile) from exports/; alone, or on top of `what`="merged".
        private: create the repository as private (only applies when it is created).
        revision: branch to commit to (created if missing).
        base_model_id: the base model's Hub id, written into the pushed adapter_config.json (default: the one
            the manifest recorded; required when the base was a local directory or an unknown GGUF).

    Returns:
        The plan, with the generated card.
    """
    validate_repo_id(repo_id)
    run, recipe, manifest = open_run(run_path)
    peft = recipe.method.is_peft
    if what == "adapter" and not peft:
        raise ExportError(f"{run.root}: --adapter-only needs a LoRA/QLoRA run; this is a full fine-tuning run")
    kinds: list[ArtifactKind]
    if what == "merged":
        kinds = ["merged", "gguf"] if gguf else ["merged"]
    elif gguf and what == "default":
        kinds = ["gguf"]
    else:
        kinds = ["adapter"] if peft else ["full"]
        if gguf:
            kinds.append("gguf")
    items: list[UploadItem] = []
    base_id = base_model_id
    if "adapter" in kinds:
        base_id = resolve_base_model_id(run, recipe, manifest, base_model_id, required=True)
        items += _adapter_items(run, base_id)
    if "full" in kinds:
        items += _folder_items(run.model)
    items += _export_items(run, kinds)
    for path in (run.recipe, run.manifest):
        items.append(UploadItem(path_in_repo=f"{PROVENANCE_DIR}/{path.name}", local_path=path, size=path.stat().st_size))
    gguf_names = [item.path_in_repo for item in items if item.path_in_repo.endswith(".gguf")]
    card = model_card(run, kinds[0], repo_id, gguf_files=gguf_names, base_model_id=base_id)
    items.insert(0, UploadItem(path_in_repo=CARD_NAME, content=card, size=len(card.encode())))
    return PushPlan(repo_id=repo_id, private=private, revision=revision, kinds=kinds, items=items, card=card,
                    base_model_id=base_id)


def resolve_token() -> str:
    """HF_TOKEN, else huggingface_hub's saved login; never prompts (a prompt would hang a batch job)."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ExportError(
            "no Hugging Face token: set HF_TOKEN (a write token from https://huggingface.co/settings/tokens) "
            "or run `hf auth login` once; nothing was uploaded"
        )
    return token


def _hub_error(exc: Exception, repo_id: str) -> ExportError:
    """One readable line for every failure the client can raise; the token never appears in it."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return ExportError("HF_HUB_OFFLINE is set: cannot push (use --dry-run to see what would be uploaded)")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            return ExportError(f"the token has no write access to {repo_id} (HTTP {status}); nothing was uploaded")
        return ExportError(f"the Hub refused the push to {repo_id}: {str(exc).splitlines()[0]}; nothing was uploaded")
    return ExportError(f"cannot reach the Hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                       "nothing was uploaded")


def execute_push(plan: PushPlan, *, token: str | None = None, endpoint: str | None = None) -> str:
    """Create the repository if needed and upload every planned file in a single commit.

    Args:
        plan: from :func:`plan_push`.
        token: defaults to :func:`resolve_token`.
        endpoint: Hub URL (default: huggingface_hub's, i.e. HF_ENDPOINT or huggingface.co).

    Returns:
        The URL of the commit.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token or resolve_token(), endpoint=endpoint)
    operations = [
        CommitOperationAdd(path_in_repo=item.path_in_repo, path_or_fileobj=item.payload())
        for item in plan.items
    ]
    try:
        api.create_repo(plan.repo_id, private=plan.private or None, exist_ok=True, repo_type="model")
        if plan.revision:
            api.create_branch(plan.repo_id, branch=plan.revision, exist_ok=True)
        commit = api.create_commit(
            plan.repo_id, operations=operations, revision=plan.revision,
            commit_message=f"fnsft push: {', '.join(plan.kinds)}",
        )
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - network/HTTP/validation failures all become one message
        raise _hub_error(exc, plan.repo_id) from None
    return str(commit.commit_url)
