#!/usr/bin/env bash
# End-to-end on kind, for users with Docker: create a cluster from kind-config.yaml, build
# and load the operator and runtime images, install the chart, apply an all-managed
# example, wait for Ready, then check through port-forwards that the search index holds
# exactly the profiles the embedded `pipeline-runtime run` makes of the same generated
# events, that the business report read from the index gives the embedded run's figures,
# and that Parquet objects reached MinIO. Cleans up on exit.
#
#   e2e/kind/run.sh               # everything, then delete the cluster
#   KEEP=1 e2e/kind/run.sh        # keep the cluster to look around
#
# What a user may set:
#   NODE_IMAGE     the kind node image (default: the one kind itself chooses)
#   EXAMPLE        the pipeline to apply (default examples/shop-events.yaml; it must use a
#                  generator source and managed services)
#   EXTRA_IMAGES   more local images to `kind load` (e.g. the managed services' images on a
#                  machine that cannot pull them)
#   TAG, CLUSTER, NAMESPACE, READY_TIMEOUT, DATA_TIMEOUT, ES_PORT, MINIO_PORT
#
# Needs: docker (BuildKit: buildx, or DOCKER_BUILDKIT=1), kind, kubectl, helm, jq, curl
# (>= 7.75 for --aws-sigv4). Not in CI: e2e/kind/local.sh runs it on this project's
# machines (no image registry in reach), see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-datapipeline}
NAMESPACE=${NAMESPACE:-shop-demo}
TAG=${TAG:-dev}
KEEP=${KEEP:-0}
EXAMPLE=${EXAMPLE:-examples/shop-events.yaml}
NODE_IMAGE=${NODE_IMAGE:-}
read -r -a EXTRA_IMAGES <<<"${EXTRA_IMAGES:-}"
READY_TIMEOUT=${READY_TIMEOUT:-900s}
DATA_TIMEOUT=${DATA_TIMEOUT:-900}
ES_PORT=${ES_PORT:-19200}
MINIO_PORT=${MINIO_PORT:-19000}

T0=$SECONDS
log() { printf '\n==> [%4ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm jq curl; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

FORWARDS=()
WORK=$(mktemp -d)
cleanup() {
  local status=$?
  for pid in "${FORWARDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ $status -ne 0 ]]; then
    log "failed; state of the pipeline:"
    kubectl -n "$NAMESPACE" get dp,pods 2>/dev/null || true
    kubectl -n "$NAMESPACE" describe dp 2>/dev/null | tail -n 30 || true
  fi
  rm -rf "$WORK"
  if [[ $KEEP == 1 ]]; then
    log "keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER to remove it)"
  else
    log "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}
trap cleanup EXIT

# Waits until a command prints the number wanted, for at most DATA_TIMEOUT seconds.
wait_for_count() {
  local what=$1 want=$2
  shift 2
  local deadline=$((SECONDS + DATA_TIMEOUT)) value=
  until value=$("$@" 2>/dev/null) && [[ $value =~ ^[0-9]+$ ]] && ((value == want)); do
    ((SECONDS < deadline)) || die "$what: ${value:-nothing} after ${DATA_TIMEOUT}s, want $want"
    sleep 5
  done
  echo "$what: $value (want $want)"
}

wait_for_positive() {
  local what=$1
  shift
  local deadline=$((SECONDS + DATA_TIMEOUT)) value=
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

log "cluster $CLUSTER${NODE_IMAGE:+ (node image $NODE_IMAGE)}"
if kind get clusters | grep -qx "$CLUSTER"; then
  echo "exists; reusing it"
else
  kind create cluster --name "$CLUSTER" --config kind-config.yaml ${NODE_IMAGE:+--image "$NODE_IMAGE"}
fi
CREATED=$SECONDS
kubectl config use-context "kind-$CLUSTER" >/dev/null
kubectl get nodes -o wide

log "building images (tag $TAG)"
docker build -f docker/operator.Dockerfile -t "datapipeline-operator:$TAG" .
docker build -f docker/runtime.Dockerfile -t "pipeline-runtime:$TAG" .
kind load docker-image --name "$CLUSTER" "datapipeline-operator:$TAG" "pipeline-runtime:$TAG" "${EXTRA_IMAGES[@]}"

log "installing the operator chart"
helm upgrade --install datapipeline charts/datapipeline-operator \
  --namespace datapipeline-system --create-namespace \
  --set image.tag="$TAG" --set runtimeImage.tag="$TAG" \
  --wait --timeout 5m

log "applying $EXAMPLE to namespace $NAMESPACE"
read -r NAME INDEX BUCKET EVENTS SEED < <(kubectl create --dry-run=client -f "$EXAMPLE" -o \
  jsonpath='{.metadata.name} {.spec.search.index} {.spec.objectStore.bucket} {.spec.source.generator.events} {.spec.source.generator.seed}{"\n"}')
[[ -n $NAME && -n $INDEX && -n $BUCKET && -n $EVENTS ]] ||
  die "$EXAMPLE must name an index, a bucket and a generator source"
SEED=${SEED:-42}
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" apply -f "$EXAMPLE"
APPLIED=$SECONDS

log "the embedded run of the same events ($EVENTS events, seed $SEED), for the expected profile count"
chmod 777 "$WORK"
docker run --rm -v "$WORK:/work" "pipeline-runtime:$TAG" \
  generate --events "$EVENTS" --seed "$SEED" --output /work/events.csv
docker run --rm -v "$WORK:/work" "pipeline-runtime:$TAG" \
  run --input /work/events.csv --out /work/lake --quiet
EXPECTED=$(sed -n 's/^  "profiles": \([0-9]*\),$/\1/p' "$WORK/lake/summary.json")
[[ $EXPECTED =~ ^[0-9]+$ ]] || die "no profile count in the embedded run's summary.json"
echo "expected profiles: $EXPECTED"

log "waiting for dp/$NAME to be Ready"
kubectl -n "$NAMESPACE" wait "dp/$NAME" --for=condition=Ready --timeout="$READY_TIMEOUT"
READY=$SECONDS
kubectl -n "$NAMESPACE" get dp "$NAME"

log "profiles in the search index $INDEX"
# Elasticsearch: plain HTTP and the generated `elastic` password. OpenSearch: HTTPS with a
# certificate from the pipeline CA (it names localhost, for port-forwards) and the
# runtime's generated user, whose role reaches the pipeline's index only.
SEARCH_AUTH=()
SEARCH_URL=http://127.0.0.1:$ES_PORT
SEARCH_ENV=()
if ES_PASSWORD=$(kubectl -n "$NAMESPACE" get secret "$NAME-es-elastic-user" -o jsonpath='{.data.elastic}' 2>/dev/null | base64 -d) &&
  [[ -n $ES_PASSWORD ]]; then
  SEARCH_AUTH=(-u "elastic:$ES_PASSWORD")
  export DP_SEARCH_USERNAME=elastic DP_SEARCH_PASSWORD=$ES_PASSWORD
  SEARCH_ENV=(-e DP_SEARCH_USERNAME -e DP_SEARCH_PASSWORD)
elif SEARCH_USER=$(kubectl -n "$NAMESPACE" get secret "$NAME-es-runtime-user" -o jsonpath='{.data.username}' 2>/dev/null | base64 -d) &&
  [[ -n $SEARCH_USER ]]; then
  SEARCH_PASSWORD=$(kubectl -n "$NAMESPACE" get secret "$NAME-es-runtime-user" -o jsonpath='{.data.password}' | base64 -d)
  kubectl -n "$NAMESPACE" get secret "$NAME-es-tls" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$WORK/search-ca.crt"
  SEARCH_AUTH=(-u "$SEARCH_USER:$SEARCH_PASSWORD" --cacert "$WORK/search-ca.crt")
  SEARCH_URL=https://localhost:$ES_PORT
  export DP_SEARCH_USERNAME=$SEARCH_USER DP_SEARCH_PASSWORD=$SEARCH_PASSWORD DP_SEARCH_CA_FILE=/work/search-ca.crt
  SEARCH_ENV=(-e DP_SEARCH_USERNAME -e DP_SEARCH_PASSWORD -e DP_SEARCH_CA_FILE)
fi
forward "svc/$NAME-es" "$ES_PORT:9200"
profile_count() {
  curl -fsS "${SEARCH_AUTH[@]}" "$SEARCH_URL/$INDEX/_count" |
    sed -n 's/.*"count":\([0-9]*\).*/\1/p'
}
wait_for_count "profiles in index $INDEX" "$EXPECTED" profile_count
PROFILES=$SECONDS

log "the business report from the index (README's step 5) against the embedded run's"
docker run --rm -v "$WORK:/work" "pipeline-runtime:$TAG" report --from /work/lake --json >"$WORK/report-embedded.json"
report_from_search() {
  docker run --rm --network host -v "$WORK:/work" "${SEARCH_ENV[@]}" "pipeline-runtime:$TAG" \
    report --from-search "$SEARCH_URL" --pipeline "$NAME" --search-index "$INDEX" "$@"
}
report_from_search
report_from_search --json >"$WORK/report-search.json"
# The index holds profiles, not events: every figure it can give (the others are null)
# must equal the embedded run's.
jq -e -n --slurpfile e "$WORK/report-embedded.json" --slurpfile s "$WORK/report-search.json" \
  '[$s[0] | to_entries[] | select(.value != null)] | length > 0 and all(.[]; .value == $e[0][.key])' >/dev/null ||
  die "the report from the index differs from the embedded run's"
echo "every figure of the report from the index equals the embedded run's: $(jq -c \
  '[to_entries[] | select(.value != null) | .key]' "$WORK/report-search.json")"

log "Parquet objects in MinIO"
ACCESS_KEY=$(kubectl -n "$NAMESPACE" get secret "$NAME-minio-credentials" -o jsonpath='{.data.accessKeyId}' | base64 -d)
SECRET_KEY=$(kubectl -n "$NAMESPACE" get secret "$NAME-minio-credentials" -o jsonpath='{.data.secretAccessKey}' | base64 -d)
kubectl -n "$NAMESPACE" get secret "$NAME-minio-tls" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$WORK/minio-ca.crt"
forward "svc/$NAME-minio" "$MINIO_PORT:9000"
# MinIO speaks TLS only, with a certificate for its Service's name from the pipeline CA:
# curl checks it against that CA and that name, connected through the port-forward.
MINIO_HOST=$NAME-minio.$NAMESPACE.svc
# SigV4 as S3 itself wants it: the payload hash header (an empty body's), and the query
# already percent-encoded (curl signs the query as written).
object_count() {
  curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    --cacert "$WORK/minio-ca.crt" --connect-to "$MINIO_HOST:9000:127.0.0.1:$MINIO_PORT" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "https://$MINIO_HOST:9000/$BUCKET?list-type=2&prefix=events%2F" |
    grep -o '<Key>[^<]*\.parquet</Key>' | wc -l | tr -d ' '
}
wait_for_positive "Parquet objects under s3://$BUCKET/events/" object_count

log "done"
kubectl -n "$NAMESPACE" get dp
echo "kind create cluster: $((CREATED - T0)) s"
echo "apply -> Ready: $((READY - APPLIED)) s; kind create cluster -> Ready: $((READY - T0)) s"
echo "apply -> all $EXPECTED profiles searchable: $((PROFILES - APPLIED)) s"
