#!/usr/bin/env bash
# Builds the fnsft image on a machine that reaches no container registry and no PyTorch wheel index, with a
# CPU torch: a stand-in base image made from Debian packages, then docker/Dockerfile on it, unmodified.
#
#   docker/build-local.sh            prints the built image reference (localhost/fnsft:<tag>) as its last line
#
# Steps:
#   1. the base: `mmdebstrap --variant=minbase` (Debian bookworm from this host's apt sources) with this host's CA
#      bundle and a pip configuration made from this host's (`pip config list`: certificate, index URLs, timeout;
#      local paths dropped), so pip inside the build trusts what the host trusts; then `<engine> import`.
#   2. the torch wheel: the CPU torch of constraints.txt from pip's find-links folders, or downloaded by pip
#      here, is copied to docker/wheels/ (git-ignored; the builder stage only, never the runtime stage).
#   3. `<engine> build` with BASE_IMAGE, TORCH_VARIANT=cpu, TORCH_SPEC and WHEEL_DIR.
#
# Environment: ENGINE (podman or docker; default: whichever is installed, podman is installed if neither is),
# BASE_SUITE (default bookworm), REBUILD_BASE=1 to remake the base, EXTRAS (default gpu,tracking).
set -euo pipefail
cd "$(dirname "$0")/.."

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
  else
    echo "build-local: no container engine; installing podman and buildah (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah >&2
    engine=podman
  fi
fi
command -v mmdebstrap >/dev/null || {
  echo "build-local: installing mmdebstrap (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2
}
suite="${BASE_SUITE:-bookworm}"
base="localhost/fnsft-base:${suite}"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/fnsft-build-local.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# ---- 1. the stand-in base
if [ "${REBUILD_BASE:-0}" = 1 ] || ! "$engine" image inspect "$base" >/dev/null 2>&1; then
  python3 - "$work/pip.conf" <<'EOF'
import subprocess, sys
# pip's settings, as the host resolves them; keep what makes sense in another filesystem
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
keep = {"index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout", "retries", "proxy"}
settings = {}
for line in listed.splitlines():
    key, _, value = line.partition("=")
    name = key.rsplit(".", 1)[-1]
    value = value.strip().strip("'\"")
    if name in keep:
        urls = [v for v in value.split() if not v.startswith("file:")]  # local indexes are not in the image
        if urls:
            settings[name.replace("default-timeout", "timeout")] = " ".join(urls)
settings["cert"] = "/etc/ssl/certs/ca-certificates.crt"  # the host's bundle, added to the base's below
with open(sys.argv[1], "w") as out:
    out.write("# Made by fnsft docker/build-local.sh from the build host's pip configuration\n[global]\n")
    out.writelines(f"{k} = {v}\n" for k, v in sorted(settings.items()))
EOF
  echo "build-local: making the base $base (mmdebstrap $suite, about 1-3 min)" >&2
  nice -n 10 mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --customize-hook="upload /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates/build-host.crt" \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    --customize-hook="upload $work/pip.conf /etc/pip.conf" \
    "$suite" "$work/rootfs.tar" >&2
  "$engine" import "$work/rootfs.tar" "$base" >&2
  rm -f "$work/rootfs.tar"
fi

# ---- 2. the CPU torch wheel, from pip's find-links folders or downloaded here
torch_pin="$(sed -n 's/^torch==//p' constraints.txt)"
rm -rf docker/wheels && mkdir -p docker/wheels
links="$(python3 -m pip config list 2>/dev/null | sed -n "s/^.*find-links='\(.*\)'$/\1/p" | tr ' ' '\n'; printf '%s\n' ${PIP_FIND_LINKS:-})"
wheel="$(for dir in $links; do ls "$dir"/torch-"${torch_pin}"+cpu-*.whl 2>/dev/null; done | head -n 1 || true)"
if [ -n "$wheel" ]; then
  cp "$wheel" docker/wheels/
else
  echo "build-local: no torch ${torch_pin}+cpu wheel in pip's find-links; downloading it" >&2
  python3 -m pip download --quiet --no-deps --dest docker/wheels --python-version 3.11 --only-binary :all: \
    --platform "manylinux_2_28_$(uname -m)" --extra-index-url https://download.pytorch.org/whl/cpu \
    "torch==${torch_pin}+cpu" >&2
fi

# ---- 3. the image
export TORCH_VARIANT=cpu CUDA_VERSION=none
tag="$(docker/tags.sh)"
image="localhost/fnsft:${tag}"
format=()
[ "$engine" = podman ] && format=(--format docker)  # the OCI format drops SHELL and HEALTHCHECK
# shellcheck disable=SC2046  # tags.sh prints several flags
nice -n 10 "$engine" build "${format[@]}" -f docker/Dockerfile \
  $(docker/tags.sh --build-args) \
  --build-arg BASE_IMAGE="$base" \
  --build-arg TORCH_SPEC="torch==${torch_pin}+cpu" \
  --build-arg WHEEL_DIR=docker/wheels \
  --build-arg EXTRAS="${EXTRAS:-gpu,tracking}" \
  --build-arg VCS_REF="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$image" . >&2
rm -rf docker/wheels
echo "$image"
