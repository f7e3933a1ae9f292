"""Python imports this at start-up when tests/train/faults is on PYTHONPATH: the fault tests' child processes."""

import os

if os.environ.get("FNSFT_TEST_KILL_AT"):
    import kill_points

    kill_points.install()
