#!/usr/bin/env bash
# e2e/kind/run.sh on this project's machines, which reach the package registries but no
# image registry (so neither kind's node image nor the managed services' images can be
# pulled). It builds everything locally, then runs run.sh unchanged with only what a user
# would set:
#
#   e2e/kind/local.sh             # build what changed, run, delete the cluster
#   KEEP=1 e2e/kind/local.sh      # keep the cluster
#
#  1. e2e/images.sh all           the project's images and the managed services' stand-ins
#                                 (a Docker engine of our own if none runs)
#  2. e2e/kind/node-image.sh      kind and kindest/node:<the harness' Kubernetes version>
#  3. the services' stand-ins tagged under the names the operator defaults to
#     (apache/kafka, opensearchproject/opensearch, quay.io/minio/minio and mc: the
#     constants in operator/src/crd/spec.rs), loaded into the cluster with EXTRA_IMAGES
#  4. run.sh with NODE_IMAGE, EXTRA_IMAGES and EXAMPLE=examples/shop-events-opensearch.yaml
#     (Elasticsearch's image cannot be built from the registries here; OpenSearch's can),
#     with kind, kubectl and helm from the harness' cache first on PATH, and Debian's
#     docker client (BuildKit through DOCKER_BUILDKIT=1) when no buildx plugin is there.
#
# The whole output also goes to $DATAPIPELINE_RUN/kind/run.log. Needs root (the Docker
# engine), Go, and e2e/install-prerequisites.sh's packages. Not part of e2e/test.sh: a
# cold build of the node image and the images takes longer than CI allows (README.md,
# "Kind quick start", has the last successful output).
set -euo pipefail
cd "$(dirname "$0")/../.."
E2E_DIR=$PWD/e2e
DP_CACHE=${DATAPIPELINE_CACHE:-$HOME/.cache/datapipeline}
DP_RUN=${DATAPIPELINE_RUN:-/tmp/datapipeline-services}
mkdir -p "$DP_RUN/kind"
LOG=$DP_RUN/kind/run.log
exec > >(tee "$LOG") 2>&1

log() { printf '[kind-local %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

T0=$SECONDS
"$E2E_DIR/images.sh" all
"$E2E_DIR/kind/node-image.sh" all
log "images ready in $((SECONDS - T0)) s"

# shellcheck source=e2e/images/docker-client.sh
source "$E2E_DIR/images/docker-client.sh"
bin=$DP_RUN/kind/bin
mkdir -p "$bin"
if [[ ${DOCKER[0]} != docker ]]; then
  ln -sf "${DOCKER[0]}" "$bin/docker"
fi
kube_version=$(sed -n 's/^K8S_VERSION=${K8S_VERSION:-\(.*\)}$/\1/p' "$E2E_DIR/services/k8s.sh")
helm_version=$(sed -n 's/^HELM_VERSION=${HELM_VERSION:-\(.*\)}$/\1/p' "$E2E_DIR/services/k8s.sh")
kind_bin=$("$E2E_DIR/kind/node-image.sh" tools 2>&1 | sed -n 's/.*kind: //p')
ln -sf "$kind_bin" "$bin/kind"
ln -sf "$DP_CACHE/kube-$kube_version-node/bin/kubectl" "$bin/kubectl"
ln -sf "$DP_CACHE/helm-$helm_version/bin/helm" "$bin/helm"
export PATH=$bin:$PATH

default_image() { sed -n "s/^pub const $1: &str = \"\(.*\)\";$/\1/p" operator/src/crd/spec.rs; }
extra=()
for pair in DEFAULT_KAFKA_IMAGE=e2e.local/kafka:4.1.0 DEFAULT_OPENSEARCH_IMAGE=e2e.local/opensearch:2.19.1 \
  DEFAULT_MINIO_IMAGE=e2e.local/minio:versitygw DEFAULT_MC_IMAGE=e2e.local/mc:s5cmd; do
  name=$(default_image "${pair%%=*}")
  [[ -n $name ]] || { log "no ${pair%%=*} in operator/src/crd/spec.rs"; exit 1; }
  docker tag "${pair#*=}" "$name"
  log "stand-in ${pair#*=} tagged $name"
  extra+=("$name")
done

export NODE_IMAGE=kindest/node:$kube_version
export EXTRA_IMAGES="${extra[*]}"
export EXAMPLE=examples/shop-events-opensearch.yaml
export DOCKER_BUILDKIT=1
log "e2e/kind/run.sh with NODE_IMAGE=$NODE_IMAGE EXAMPLE=$EXAMPLE EXTRA_IMAGES=\"$EXTRA_IMAGES\""
e2e/kind/run.sh
log "passed in $((SECONDS - T0)) s (log: $LOG)"
