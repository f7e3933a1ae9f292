"""Output directory rules: refuse to mix runs, lock against concurrent writers, find checkpoints to resume."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from fnsft.errors import TrainError
from fnsft.hashing import file_sha256
from fnsft.models import safetensors_problem
from fnsft.recipe.load import dump_recipe, load_recipe
from fnsft.recipe.schema import Recipe
from fnsft.rundir import LOCK, RunDir

CHECKPOINT_PREFIX = "checkpoint-"
#: Written last, atomically, into each finished checkpoint (fnsft.train.signals.CompletionMarkerCallback).
COMPLETION_MARKER = "fnsft-complete.json"
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
STATE_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
#: Files fnsft itself may leave in an otherwise empty output dir (a live or stale lock).
SCRATCH_NAMES = frozenset({LOCK})


def _step(path: Path) -> int:
    try:
        return int(path.name[len(CHECKPOINT_PREFIX) :])
    except ValueError:
        return -1


def write_completion_marker(checkpoint: Path) -> None:
    """Record every file of a just-written checkpoint with its size and SHA-256; its presence means "complete".

    The digests let a resume notice bytes that changed at the same size (a bad disk, a stray write), which a size
    check cannot; bench/checkpoint_digest.py measures what hashing costs per GB.
    """
    from fnsft.atomic import atomic_write_json

    files = [p for p in sorted(checkpoint.iterdir()) if p.is_file() and p.name != COMPLETION_MARKER]
    atomic_write_json(checkpoint / COMPLETION_MARKER, {
        "files": {p.name: p.stat().st_size for p in files},
        "sha256": {p.name: file_sha256(p) for p in files},
    })


def checkpoint_problem(path: Path, *, verify_contents: bool = False) -> str | None:
    """Why a checkpoint cannot be resumed from (interrupted save, missing, truncated or, with ``verify_contents``,
    changed files), or None if complete. Markers written before digests were recorded are checked by size only."""
    try:
        marker = json.loads((path / COMPLETION_MARKER).read_text(encoding="utf-8"))
        recorded, digests = marker["files"], marker.get("sha256") or {}
        if not isinstance(recorded, dict) or not isinstance(digests, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "its save did not finish (no completion marker)"
    for name, size in recorded.items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if (path / name).stat().st_size != size:
            return f"{name} has {(path / name).stat().st_size} bytes, {size} were written"
    if verify_contents:
        for name, digest in digests.items():
            if (path / name).is_file() and file_sha256(path / name) != digest:
                return f"{name} changed since it was saved (its SHA-256 differs from the one recorded)"
    for name in STATE_FILES:
        if not (path / name).is_file() or (path / name).stat().st_size == 0:
            return f"{name} missing or empty"
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        return "no weights file"
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "trainer_state.json is not valid JSON"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int) or not isinstance(
        state.get("log_history"), list
    ):
        return "trainer_state.json holds no training state (global_step, log_history)"
    for weights in path.glob("*.safetensors"):
        if safetensors_problem(weights) is not None:
            return f"{weights.name} is truncated or corrupt"
    return None


#: Temporary names of saves that a killed process may leave in the run directory (fnsft.atomic, run._save_final).
STAGING_PATTERNS = (".adapter-*", ".model-*", ".adapter.tmp-*", ".model.tmp-*", ".*.old-*", ".*.tmp")


def remove_staging(run: RunDir, warn) -> None:
    """Delete half-written saves of an earlier, killed run (called with the run lock held)."""
    from fnsft.atomic import remove_leftovers

    for name in remove_leftovers(run.root, STAGING_PATTERNS):
        warn(f"removed {name}, left by an interrupted save")


def checkpoints(run: RunDir) -> list[Path]:
    if not run.checkpoints.is_dir():
        return []
    found = [p for p in run.checkpoints.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and _step(p) >= 0]
    return sorted(found, key=_step)


def latest_complete_checkpoint(run: RunDir, warn=None, *, verify_contents: bool = False) -> Path | None:
    """Newest checkpoint that is complete; torn (or, with ``verify_contents``, changed) ones are reported through
    ``warn`` and skipped."""
    for path in reversed(checkpoints(run)):
        problem = checkpoint_problem(path, verify_contents=verify_contents)
        if problem is None:
            return path
        if warn is not None:
            warn(f"skipping {path.name}: {problem}")
    return None


def discard_torn_checkpoints(run: RunDir, resume_from: Path | None, warn) -> None:
    """Delete checkpoints newer than the one resumed from: they are torn, and the Trainer will write them again."""
    newest_good = _step(resume_from) if resume_from is not None else -1
    for path in checkpoints(run):
        if _step(path) > newest_good:
            shutil.rmtree(path)
            warn(f"removed the incomplete {path.name}")


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    changed = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


#: Where this process runs, not what the run trains: every node of a multi-node run differs here.
PLACEMENT_KEYS = ("distributed.node_rank", "distributed.master_addr", "distributed.master_port")


def prepare_output_dir(run: RunDir, recipe: Recipe, resume: bool, warn) -> Path | None:
    """Check the directory may hold this run; return the checkpoint to resume from (or None)."""
    root = run.root
    refuse_if_locked(run)
    if root.exists() and not root.is_dir():
        raise TrainError(f"{root}: output path exists and is not a directory")
    if root.is_dir() and any(p.name not in SCRATCH_NAMES for p in root.iterdir()):
        if not run.recipe.is_file():
            raise TrainError(f"{root}: output directory is not empty and holds no fnsft run; choose another output.dir")
        previous = load_recipe(run.recipe).resolved()
        changed = [key for key in _differences(previous.to_dict(), recipe.to_dict()) if key not in PLACEMENT_KEYS]
        if changed:
            raise TrainError(
                f"{root}: holds a different run (recipe differs in {', '.join(changed[:5])}). "
                "Choose another output.dir, or delete the old run."
            )
        if run.is_finished():
            raise TrainError(f"{root}: this run already finished. Use another output.dir to train again.")
        if not resume:
            if checkpoints(run):
                raise TrainError(f"{root}: holds an interrupted run of this recipe. Add --resume to continue it.")
        else:
            found = latest_complete_checkpoint(run, warn, verify_contents=True)  # what resume will load
            if found is None:
                warn("no complete checkpoint to resume from: starting from step 0")
            discard_torn_checkpoints(run, found, warn)
            return found
    elif resume:
        warn(f"{root}: nothing to resume; starting a new run")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root) as probe:  # a private name: several ranks probe the same directory
            probe.write(b"ok")
    except OSError as exc:
        raise TrainError(f"{root}: output directory is not writable ({exc.strerror})") from None
    return None


def disk_full_error(run: RunDir, exc: OSError) -> TrainError:
    """The disk filled up during a save: what is safe on disk, and how to go on."""
    last = latest_complete_checkpoint(run)
    kept = f"the last complete checkpoint is {last}" if last is not None else "no checkpoint is complete"
    where = f" ({exc.filename})" if exc.filename else ""
    return TrainError(
        f"{run.root}: the disk is full{where}; {kept}, and the half-written save will be discarded. Free some "
        f"space (or lower training.save_total_limit), then resume with: fnsft train {run.recipe} --resume"
    )


def refuse_if_locked(run: RunDir) -> None:
    """A live lock means another `fnsft train` is writing this directory: say so before looking at its contents."""
    owner = RunLock(run).owner()
    if owner is not None and _alive(*owner):
        raise TrainError(_busy_message(run, owner[0]))


def _busy_message(run: RunDir, pid: int) -> str:
    return f"{run.root}: another fnsft train (pid {pid}) is writing here. Wait for it, or use another output.dir."


class RunLock:
    """An exclusive lock file: a second `fnsft train` on the same directory refuses instead of corrupting it.

    The file holds the owner's pid and process start time, so a lock left by a killed run is taken over even if
    its pid has since been reused by an unrelated process.
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.path = run.lock
        self.held = False

    def __enter__(self) -> RunLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner()
                if owner is not None and _alive(*owner):
                    raise TrainError(_busy_message(self.run, owner[0])) from None
                self.path.unlink(missing_ok=True)  # stale lock of a killed run
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()} {_start_time(os.getpid())}")
            self.held = True
            return self
        raise TrainError(f"{self.path}: cannot take the run lock")

    def owner(self) -> tuple[int, str] | None:
        """(pid, start time) of the lock's holder, or None without a readable lock."""
        try:
            pid, _, started = self.path.read_text().strip().partition(" ")
            return int(pid), started
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _start_time(pid: int) -> str:
    """The process start time in clock ticks since boot (Linux /proc), or "" where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name in parentheses may hold spaces


def _alive(pid: int, started: str = "") -> bool:
    """Whether the lock's recorded process still runs. The pid alone is not enough, not even when it is mine:
    in a container fnsft gets the same small pid every time, so a killed container's lock names the new one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not started or _start_time(pid) in ("", started)


def write_recipe(run: RunDir, recipe: Recipe) -> None:
    from fnsft.atomic import atomic_write_text

    header = "# Resolved recipe written by `fnsft train` (every default filled in). Re-run: fnsft train THIS_FILE\n"
    atomic_write_text(run.recipe, header + dump_recipe(recipe))
