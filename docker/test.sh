#!/usr/bin/env bash
# Runs the built image the way users do and prints a table of checks (exit 1 if any fails). CPU only, offline:
# every training container runs with --network none. About 10 minutes on 2 cores.
#
#   docker/test.sh [IMAGE]      default: the image docker/build-local.sh builds (localhost/fnsft:<version>-cpu-...)
#
# Environment: ENGINE (podman or docker; default: whichever is installed).
set -uo pipefail
cd "$(dirname "$0")/.."
engine="${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}"
image="${1:-localhost/fnsft:$(TORCH_VARIANT=cpu CUDA_VERSION=none docker/tags.sh)}"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/fnsft-docker-test.XXXXXX")"
cache="fnsft-test-cache-$$"  # a model cache volume per UID: the GGUF is dequantized once for each
mkdir -p "$work/runs" && chmod 777 "$work/runs"
containers=()
cleanup() {
  for name in "${containers[@]}"; do "$engine" rm -f "$name" >/dev/null 2>&1; done
  "$engine" volume rm -f "$cache-12345" "$cache-1000" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

rows=()
failed=0
record() {  # record NAME OK(0/1) DETAIL
  if [ "$2" = 0 ]; then rows+=("$(printf '%-44s %-4s %s' "$1" ok "$3")")
  else rows+=("$(printf '%-44s %-4s %s' "$1" FAIL "$3")"); failed=1; fi
}
# run/started UID ARGS...: one container, in the foreground (removed after) or detached, with that UID's cache
run() { local uid="$1"; shift; "$engine" run --rm -e OMP_NUM_THREADS=1 --user "$uid:$uid" -v "$cache-$uid:/cache" "$@"; }
started() { local uid="$1"; shift; "$engine" run -d -e OMP_NUM_THREADS=1 --user "$uid:$uid" -v "$cache-$uid:/cache" "$@"; }
# A short quickstart: the baked-in recipe and data, with fewer rows, held-out rows and answer probes.
train_args=(train recipes/quickstart.yaml --set data.max_samples=32 --set data.validation_fraction=0.02
  --set evaluation.exact_match_samples=1)
logs="${FNSFT_TEST_LOGS:-$work/logs}"  # each container's output (kept when FNSFT_TEST_LOGS is set)
mkdir -p "$logs"
wait_for() {  # wait_for FILE SECONDS CONTAINER: until the file exists (a checkpoint's completion marker)
  for _ in $(seq "$2"); do
    [ -e "$1" ] && return 0
    [ "$("$engine" inspect --format '{{.State.Running}}' "$3" 2>/dev/null)" = true ] || return 1
    sleep 1
  done
  return 1
}
sha() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["weights_sha256"])' "$1" 2>/dev/null; }

# ---- the image itself
out="$(run 12345 --network none "$image" --help 2>&1)"; record "--help" $? "$(grep -c 'train' <<<"$out") lines name train"
out="$(run 12345 --network none "$image" env 2>&1)"; record "env" $? "$(grep -m 1 -i -o 'torch.*' <<<"$out" | tr -s ' ' | cut -c 1-60)"
out="$(run 12345 --network none "$image" estimate recipes/quickstart.yaml 2>&1)"
record "estimate recipes/quickstart.yaml" $? "$(grep -m 1 -o 'H100-80GB[^,]*' <<<"$out")"
labels="$("$engine" image inspect --format '{{index .Config.Labels "io.fnsft.torch-variant"}} {{index .Config.Labels "io.fnsft.torch"}}' "$image")"
in_image="$(run 12345 --network none --entrypoint /opt/venv/bin/python "$image" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
variant="${labels% *}"; torch="${labels#* }"
[ "$in_image" = "${torch}+${variant}" ] && [[ "$image" == *"-${variant}-torch${torch}" ]]
record "labels and tag match the build" $? "labels $labels, torch $in_image, tag ${image##*:}"
leftovers="$(run 12345 --network none --entrypoint sh "$image" -c \
  'ls -d /src /root/.cache/pip 2>/dev/null; find / -xdev \( -name "*.whl" -o -path "*/.cache/pip" \) 2>/dev/null' | head -n 3)"
[ -z "$leftovers" ]; record "no /src, pip cache or wheel in the image" $? "${leftovers:-none found}"

# ---- a 3-step quickstart as a UID with no passwd entry, offline, outputs on a bind mount
out="$(run 12345 --network none -v "$work/runs:/workspace/runs" "$image" "${train_args[@]}" \
  --max_steps 3 --output_dir runs/quickstart 2>&1)"
code=$?; echo "$out" > "$logs/quickstart.log"
[ -f "$work/runs/quickstart/manifest.json" ]; code=$((code + $?))
record "quickstart, 3 steps, --user 12345 (no passwd)" "$code" "exit $code, $(grep -o 'eval loss.*' <<<"$out" | tr -s ' │' ' ')"
owners="$(find "$work/runs/quickstart" -printf '%u:%g\n' | sort -u | tr '\n' ' ')"
[ "$owners" = "12345:12345 " ]; record "bind-mount files belong to the caller" $? "owners: ${owners:-no files}"

# ---- reference run as the image's user (UID 1000, has a passwd entry)
ref_args=("${train_args[@]}" --max_steps 4 --set training.save_steps=2)
out="$(run 1000 --network none -v "$work/runs:/workspace/runs" "$image" "${ref_args[@]}" \
  --output_dir runs/reference 2>&1)"
code=$?; echo "$out" > "$logs/reference.log"; reference="$(sha "$work/runs/reference/manifest.json")"
record "4 steps as --user 1000 (passwd entry)" "$code" "exit $code, weights ${reference:0:12}"

# ---- kill -9 mid-training, then --resume in a new container: the weights of the uninterrupted run
name="fnsft-test-kill-$$"; containers+=("$name")
started 1000 --name "$name" --network none -v "$work/runs:/workspace/runs" "$image" "${ref_args[@]}" \
  --output_dir runs/killed >/dev/null
wait_for "$work/runs/killed/checkpoints/checkpoint-2/fnsft-complete.json" 900 "$name"
"$engine" kill -s KILL "$name" >/dev/null
code="$("$engine" wait "$name")"
lock="$(cat "$work/runs/killed/.lock" 2>/dev/null)"
out="$(run 1000 --network none -v "$work/runs:/workspace/runs" "$image" "${ref_args[@]}" \
  --output_dir runs/killed --resume 2>&1)"
resumed=$?; echo "$out" > "$logs/resumed.log"; after="$(sha "$work/runs/killed/manifest.json")"
[ "$code" = 137 ] && [ "$resumed" = 0 ] && [ -n "$after" ] && [ "$after" = "$reference" ]
record "kill -9, --resume in a new container" $? \
  "killed: exit $code, lock left '${lock:-none}'; resumed: exit $resumed, $(grep -o 'resuming from [^ ]*' <<<"$out"), weights ${after:0:12} (reference ${reference:0:12})"

# ---- healthcheck during training, then `stop -t 180`: a checkpoint and exit 143
name="fnsft-test-stop-$$"; containers+=("$name")
started 12345 --name "$name" --network none -v "$work/runs:/workspace/runs" "$image" "${train_args[@]}" \
  --max_steps 200 --set training.save_steps=2 --output_dir runs/stopped >/dev/null
wait_for "$work/runs/stopped/checkpoints/checkpoint-2/fnsft-complete.json" 900 "$name"
if [ "$engine" = podman ]; then
  podman healthcheck run "$name" >/dev/null 2>&1; health=$?
  record "healthcheck while training" "$health" "podman healthcheck run: exit $health"
else
  health="$(docker inspect --format '{{json .Config.Healthcheck.Test}}' "$name")"
  [[ "$health" == *fnsft* ]]; record "healthcheck while training" $? "$health"
fi
"$engine" stop -t 180 "$name" >/dev/null
code="$("$engine" wait "$name")"
"$engine" logs "$name" > "$logs/stopped.log" 2>&1
saved="$(cd "$work/runs/stopped/checkpoints" 2>/dev/null && ls -d checkpoint-* | sort -t- -k2 -n | tail -n 1)"
expected="$(tr -s ' \n' ' ' < "$logs/stopped.log" | grep -o 'expected within about [0-9]* s' | head -n 1)"
[ "$code" = 143 ] && [ -e "$work/runs/stopped/checkpoints/$saved/fnsft-complete.json" ] && [ "$saved" != checkpoint-2 ]
record "stop -t 180: checkpoint, exit 143" $? "exit $code, newest complete $saved, log: ${expected:-no estimate}"

printf '\n%-44s %-4s %s\n' check ok detail
printf '%s\n' "${rows[@]}"
exit "$failed"
