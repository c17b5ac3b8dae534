#!/usr/bin/env bash
# End-to-end on kind, for users with Docker: create a cluster from kind-config.yaml, build
# and load the operator and runtime images, install the chart, apply
# examples/shop-events.yaml, wait for Ready, then check through port-forwards that
# profiles reached Elasticsearch and Parquet objects reached MinIO. Cleans up on exit.
#
#   e2e/kind/run.sh               # everything, then delete the cluster
#   KEEP=1 e2e/kind/run.sh        # keep the cluster to look around
#
# Needs: docker, kind, kubectl, helm, curl (>= 7.75 for --aws-sigv4). Not run in CI: the
# CI machine has no Docker engine (the control-plane tests there use kwok instead).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-datapipeline}
NAMESPACE=${NAMESPACE:-shop-demo}
TAG=${TAG:-dev}
KEEP=${KEEP:-0}
READY_TIMEOUT=${READY_TIMEOUT:-900s}
DATA_TIMEOUT=${DATA_TIMEOUT:-600}
ES_PORT=${ES_PORT:-19200}
MINIO_PORT=${MINIO_PORT:-19000}

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm curl; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

FORWARDS=()
cleanup() {
  local status=$?
  for pid in "${FORWARDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ $status -ne 0 ]]; then
    log "failed; state of the pipeline:"
    kubectl -n "$NAMESPACE" get dp,pods 2>/dev/null || true
    kubectl -n "$NAMESPACE" describe dp shop 2>/dev/null | tail -n 30 || true
  fi
  if [[ $KEEP == 1 ]]; then
    log "keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER to remove it)"
  else
    log "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}
trap cleanup EXIT

# Waits until a command prints a number above zero, for at most DATA_TIMEOUT seconds.
wait_for_positive() {
  local what=$1; shift
  local deadline=$((SECONDS + DATA_TIMEOUT)) value
  until value=$("$@" 2>/dev/null) && [[ $value =~ ^[0-9]+$ ]] && ((value > 0)); do
    ((SECONDS < deadline)) || die "no $what after ${DATA_TIMEOUT}s"
    sleep 5
  done
  echo "$what: $value"
}

# Starts a port-forward in the background and waits until the local port answers.
forward() {
  local target=$1 ports=$2 local_port=${2%%:*}
  kubectl -n "$NAMESPACE" port-forward "$target" "$ports" >/dev/null 2>&1 &
  FORWARDS+=("$!")
  local deadline=$((SECONDS + 30))
  until curl -s -o /dev/null "http://127.0.0.1:$local_port/"; do
    ((SECONDS < deadline)) || die "port-forward to $target did not come up"
    sleep 1
  done
}

log "cluster $CLUSTER"
if kind get clusters | grep -qx "$CLUSTER"; then
  echo "exists; reusing it"
else
  kind create cluster --name "$CLUSTER" --config kind-config.yaml
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "building images (tag $TAG)"
docker build -f docker/operator.Dockerfile -t "datapipeline-operator:$TAG" .
docker build -f docker/runtime.Dockerfile -t "pipeline-runtime:$TAG" .
kind load docker-image --name "$CLUSTER" "datapipeline-operator:$TAG" "pipeline-runtime:$TAG"

log "installing the operator chart"
helm upgrade --install datapipeline charts/datapipeline-operator \
  --namespace datapipeline-system --create-namespace \
  --set image.tag="$TAG" --set runtimeImage.tag="$TAG" \
  --wait --timeout 5m

log "applying examples/shop-events.yaml to namespace $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" apply -f examples/shop-events.yaml
kubectl -n "$NAMESPACE" wait dp/shop --for=condition=Ready --timeout="$READY_TIMEOUT"
kubectl -n "$NAMESPACE" get dp shop

log "profiles in Elasticsearch"
ES_PASSWORD=$(kubectl -n "$NAMESPACE" get secret shop-es-elastic-user -o jsonpath='{.data.elastic}' | base64 -d)
forward svc/shop-es "$ES_PORT:9200"
profile_count() {
  curl -fsS -u "elastic:$ES_PASSWORD" "http://127.0.0.1:$ES_PORT/shop-profiles/_count" |
    sed -n 's/.*"count":\([0-9]*\).*/\1/p'
}
wait_for_positive "profiles in index shop-profiles" profile_count

log "Parquet objects in MinIO"
ACCESS_KEY=$(kubectl -n "$NAMESPACE" get secret shop-minio-credentials -o jsonpath='{.data.accessKeyId}' | base64 -d)
SECRET_KEY=$(kubectl -n "$NAMESPACE" get secret shop-minio-credentials -o jsonpath='{.data.secretAccessKey}' | base64 -d)
forward svc/shop-minio "$MINIO_PORT:9000"
object_count() {
  curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    "http://127.0.0.1:$MINIO_PORT/shop-lake?list-type=2&prefix=events/" |
    grep -o '<Key>[^<]*\.parquet</Key>' | wc -l | tr -d ' '
}
wait_for_positive "Parquet objects under s3://shop-lake/events/" object_count

log "done"
kubectl -n "$NAMESPACE" get dp
