"""Output directory rules: refuse to mix runs, lock against concurrent writers, find checkpoints to resume."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from fnsft.errors import TrainError
from fnsft.recipe.load import dump_recipe, load_recipe
from fnsft.recipe.schema import Recipe
from fnsft.rundir import RunDir

CHECKPOINT_PREFIX = "checkpoint-"
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
STATE_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def _step(path: Path) -> int:
    try:
        return int(path.name[len(CHECKPOINT_PREFIX) :])
    except ValueError:
        return -1


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (missing or truncated files), or None if it is complete."""
    for name in STATE_FILES:
        if not (path / name).is_file() or (path / name).stat().st_size == 0:
            return f"{name} missing or empty"
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        return "no weights file"
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "trainer_state.json is not valid JSON"
    for weights in path.glob("*.safetensors"):
        try:
            from safetensors import safe_open

            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
        except Exception:
            return f"{weights.name} is truncated or corrupt"
        header = int.from_bytes(weights.read_bytes()[:8], "little") if weights.stat().st_size >= 8 else -1
        if header < 0 or not _payload_complete(weights, header):
            return f"{weights.name} is truncated"
    return None


def _payload_complete(weights: Path, header_size: int) -> bool:
    """safetensors' header lists each tensor's byte range; the file must reach the last one."""
    with weights.open("rb") as handle:
        handle.seek(8)
        header = json.loads(handle.read(header_size))
    ends = [info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"]
    return weights.stat().st_size >= 8 + header_size + (max(ends) if ends else 0)


def checkpoints(run: RunDir) -> list[Path]:
    if not run.checkpoints.is_dir():
        return []
    found = [p for p in run.checkpoints.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and _step(p) >= 0]
    return sorted(found, key=_step)


def latest_complete_checkpoint(run: RunDir, warn=None) -> Path | None:
    """Newest checkpoint that is complete; torn ones are reported through ``warn`` and skipped."""
    for path in reversed(checkpoints(run)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if warn is not None:
            warn(f"skipping {path.name}: {problem}")
    return None


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


def prepare_output_dir(run: RunDir, recipe: Recipe, resume: bool, warn) -> Path | None:
    """Check the directory may hold this run; return the checkpoint to resume from (or None)."""
    root = run.root
    if root.exists() and not root.is_dir():
        raise TrainError(f"{root}: output path exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not run.recipe.is_file():
            raise TrainError(f"{root}: output directory is not empty and holds no fnsft run; choose another output.dir")
        previous = load_recipe(run.recipe).resolved()
        changed = _differences(previous.to_dict(), recipe.to_dict())
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
            found = latest_complete_checkpoint(run, warn)
            if found is None:
                warn("no complete checkpoint to resume from: starting from step 0")
            return found
    elif resume:
        warn(f"{root}: nothing to resume; starting a new run")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TrainError(f"{root}: output directory is not writable ({exc.strerror})") from None
    return None


def check_free_disk(root: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(root).free
    if free < needed_bytes:
        raise TrainError(
            f"{root}: {free / 2**30:.1f} GiB free, but checkpoints and the final weights need about "
            f"{needed_bytes / 2**30:.1f} GiB. Free some space or choose another output.dir."
        )


class RunLock:
    """An exclusive lock file: a second `fnsft train` on the same directory refuses instead of corrupting it."""

    def __init__(self, run: RunDir) -> None:
        self.path = run.lock
        self.held = False

    def __enter__(self) -> RunLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and _alive(owner):
                    raise TrainError(
                        f"{self.path.parent}: another fnsft train (pid {owner}) is writing here. "
                        "Wait for it, or use another output.dir."
                    ) from None
                self.path.unlink(missing_ok=True)  # stale lock of a killed run
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            self.held = True
            return self
        raise TrainError(f"{self.path}: cannot take the run lock")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_recipe(run: RunDir, recipe: Recipe) -> None:
    from fnsft.atomic import atomic_write_text

    header = "# Resolved recipe written by `fnsft train` (every default filled in). Re-run: fnsft train THIS_FILE\n"
    atomic_write_text(run.recipe, header + dump_recipe(recipe))
