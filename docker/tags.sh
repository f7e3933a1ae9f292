#!/usr/bin/env bash
# The image tag <version>-<torch variant>-torch<torch>, e.g. 0.1.0-cu128-torch2.13.0, read from the files the
# build installs from: the version from pyproject.toml, torch from constraints.txt, the CUDA build from
# docker/Dockerfile (TORCH_VARIANT, CUDA_VERSION), or from the environment when a build overrides them
# (docker/build-local.sh: TORCH_VARIANT=cpu CUDA_VERSION=none).
#
#   docker/tags.sh          0.1.0-cu128-torch2.13.0
#   docker/tags.sh --env          version=, torch=, cuda=, variant=, tag= lines (for $GITHUB_OUTPUT)
#   docker/tags.sh --build-args   the --build-arg flags that label the image with these versions
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
torch="$(sed -n 's/^torch==//p' constraints.txt)"
cuda="${CUDA_VERSION:-$(sed -n 's/^ARG CUDA_VERSION=//p' docker/Dockerfile)}"
variant="${TORCH_VARIANT:-$(sed -n 's/^ARG TORCH_VARIANT=//p' docker/Dockerfile)}"
if [ -z "$version" ] || [ -z "$torch" ] || [ -z "$cuda" ] || [ -z "$variant" ]; then
  echo "tags.sh: could not read version ($version), torch ($torch), CUDA ($cuda) or variant ($variant)" >&2
  exit 1
fi
tag="${version}-${variant}-torch${torch}"
case "${1:-}" in
  --env) printf 'version=%s\ntorch=%s\ncuda=%s\nvariant=%s\ntag=%s\n' "$version" "$torch" "$cuda" "$variant" "$tag" ;;
  --build-args)
    echo "--build-arg FNSFT_VERSION=${version} --build-arg TORCH_VERSION=${torch}" \
      "--build-arg TORCH_VARIANT=${variant} --build-arg CUDA_VERSION=${cuda}" ;;
  "") echo "$tag" ;;
  *) echo "usage: docker/tags.sh [--env|--build-args]" >&2; exit 2 ;;
esac
