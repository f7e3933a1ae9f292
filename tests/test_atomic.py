"""Atomic writes leave files and directories with the permissions a plain write would give (the umask's)."""

from __future__ import annotations

import os
import stat

from fnsft.atomic import atomic_write_text, staged_dir


def test_atomic_outputs_are_readable_by_others_as_the_umask_allows(tmp_path):
    # a model cache on a volume shared by two UIDs, or an adapter on a bind mount, must not end up 0600/0700
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.json", "{}")
        with staged_dir(tmp_path / "adapter") as staging:
            (staging / "weights").write_bytes(b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "adapter").stat().st_mode) == 0o755
