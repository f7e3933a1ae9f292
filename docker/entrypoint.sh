#!/bin/sh
# Image entry point: runs fnsft as whatever user `docker run --user UID:GID` chose, so files written to bind
# mounts belong to the caller. `docker run IMAGE train ...` and `docker run IMAGE fnsft train ...` both work.
set -eu
# An arbitrary --user has no passwd entry and HOME=/ (not writable); triton, torch and matplotlib keep caches
# under $HOME, so give them a private writable one.
if [ ! -w "${HOME:-/}" ]; then
  HOME="$(mktemp -d /tmp/fnsft-home.XXXXXX)"
  export HOME
fi
# Nor a user name: getpass.getuser() (torch.compile's cache path) reads $USER before the passwd file.
if [ -z "${USER:-}" ]; then
  USER="$(id -un 2>/dev/null)" || USER="uid$(id -u)"
  export USER
fi
if [ "${1:-}" = fnsft ]; then
  shift
fi
exec fnsft "$@"
