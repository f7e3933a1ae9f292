"""`fnsft train --nproc`'s supervisor with a stand-in launcher (a process with one child, like accelerate's agent
and its ranks): a signal to fnsft reaches the rank once, and the run's exit code says it was interrupted."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time

from fnsft.train.supervise import run_supervised

#: The "rank": reports that it is ready, waits for SIGTERM, records its exit code as rank 0 does, exits 143.
RANK = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from fnsft.train.supervise import record_exit_code
    got = []
    signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    Path(sys.argv[1]).write_text("ready")
    while not got:
        time.sleep(0.01)
    time.sleep(0.2)  # a second delivery would arrive here
    Path(sys.argv[2]).write_text(str(len(got)))
    record_exit_code(128 + got[0])
    sys.exit(128 + got[0])
""")
#: The "launcher": ignores SIGTERM itself (it must not be the one signalled), runs the rank, exits 1 on failure.
LAUNCHER = textwrap.dedent("""
    import signal, subprocess, sys
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(1 if subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]]).returncode else 0)
""")


def test_sigterm_reaches_the_rank_once_and_the_run_exits_143(tmp_path):
    ready, deliveries = tmp_path / "ready", tmp_path / "deliveries"

    def signal_when_ready():
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=signal_when_ready, daemon=True).start()
    code = run_supervised([sys.executable, "-c", LAUNCHER, RANK, str(ready), str(deliveries)], dict(os.environ))
    assert code == 128 + signal.SIGTERM
    assert deliveries.read_text() == "1"
    assert signal.getsignal(signal.SIGTERM) == previous  # the supervisor's handler is gone again


def test_a_failed_launch_keeps_its_exit_code(tmp_path):
    assert run_supervised([sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ)) == 3


def test_a_rank_refusing_bad_input_makes_the_run_exit_2():
    rank = "import sys; from fnsft.train.supervise import record_exit_code; record_exit_code(2); sys.exit(2)"
    assert run_supervised([sys.executable, "-c", LAUNCHER, rank], dict(os.environ)) == 2
