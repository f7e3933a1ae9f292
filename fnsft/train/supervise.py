"""Supervising the ``accelerate launch`` of a multi-process `fnsft train`.

The launcher runs in its own session, so a terminal's Ctrl-C reaches only this process, which hands SIGINT/SIGTERM
to each training rank once (not to the launcher: torch's elastic agent would re-send it and SIGKILL ranks still
saving after 30 s). The ranks agree on the stop step among themselves (signals.agreed_signal), save one checkpoint
and exit; rank 0 leaves its exit code in a status file, so this process exits 128 + signal (or 2 for bad input)
even though the launcher reports any rank's failure as a plain 1. A second signal kills the whole launch at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fnsft.atomic import atomic_write_json

#: Where rank 0 of a supervised launch records why it failed (set by :func:`run_supervised`).
STATUS_ENV = "FNSFT_LAUNCH_STATUS"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def record_exit_code(code: int) -> None:
    """Rank 0 of a supervised launch leaves its exit code (2: bad input, 128 + signal: interrupted) for the
    supervisor: the launcher itself only reports that some rank failed."""
    status = os.environ.get(STATUS_ENV)
    if status and os.environ.get("RANK", "0") == "0":
        atomic_write_json(Path(status), {"exit_code": code})


def run_supervised(command: Sequence[str], env: dict[str, str]) -> int:
    """Run the launcher to completion; returns its exit code, or 128 + signal for an interrupted run."""
    import psutil

    from fnsft.console import err

    with tempfile.TemporaryDirectory(prefix="fnsft-status-") as tmp:
        status = Path(tmp) / "interrupted.json"
        launcher = subprocess.Popen(list(command), env={**env, STATUS_ENV: str(status)}, start_new_session=True)
        received: list[int] = []

        def forward(signum: int, frame) -> None:
            received.append(signum)
            if len(received) > 1:
                with contextlib.suppress(ProcessLookupError):  # the launch may have ended meanwhile
                    os.killpg(launcher.pid, signal.SIGKILL)
                return
            try:
                ranks = psutil.Process(launcher.pid).children()
            except psutil.NoSuchProcess:
                ranks = []
            for rank in ranks:
                with contextlib.suppress(psutil.NoSuchProcess):
                    rank.send_signal(signum)
            err.print(f"\n[yellow]{signal.Signals(signum).name}[/] passed to the {len(ranks)} training processes "
                      "(a second signal kills them at once).", highlight=False)

        previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
        try:
            code = launcher.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if code != 0 and status.is_file():
            return int(json.loads(status.read_text(encoding="utf-8"))["exit_code"])
        return 128 + received[0] if received and code != 0 else code
