# Sourced by e2e/images.sh and e2e/images/services.sh: sets DOCKER to a client that can run
# BuildKit builds: docker with the buildx plugin, else Debian's 20.10 client
# (/usr/bin/docker, whose built-in BuildKit support newer clients dropped), and exports
# DOCKER_BUILDKIT=1 for the latter.
# shellcheck shell=bash
# shellcheck disable=SC2034 # DOCKER is used by the scripts that source this file
if docker buildx version >/dev/null 2>&1; then
  DOCKER=(docker)
elif [[ -x /usr/bin/docker ]]; then
  DOCKER=(/usr/bin/docker)
else
  DOCKER=(docker)
fi
export DOCKER_BUILDKIT=1
