#!/usr/bin/env bash
# Wheels that bench/gpu_check.py needs on the lent H200 machine (Python 3.12, no network there): the pinned
# versions of what its image lacks or has in another version. Written to .whl/ (ignored by git), which the
# device run carries; see bench/gpu_check.py for the run command. About 61 MiB: the carry limit is 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pin() { grep -i "^$1==" constraints.txt; }
rm -rf .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  "$(pin trl)" "$(pin datasets)" "$(pin dill)" "$(pin multiprocess)" "$(pin transformers)" "$(pin peft)" \
  "$(pin bitsandbytes)" "$(pin liger-kernel)" "$(pin pydantic)" "$(pin pydantic_core)" "$(pin annotated-types)" \
  "$(pin typing-inspection)"
du -sh .whl
