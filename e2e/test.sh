#!/usr/bin/env bash
# The whole test suite, as README.md gives it and as CI runs it:
#   1. installs what is missing (Debian packages; the servers through e2e/services.sh),
#   2. checks formatting and lints,
#   3. runs the unit and controller tests (no servers needed), then checks the chart's alert
#      rules and Grafana dashboard (e2e/promtool.sh: promtool check/test rules on synthetic
#      series, the dashboard's queries parsed, the dashboard against Grafana's schema;
#      e2e/tests/chart_monitoring.rs: every metric they name is one the binaries export,
#      every dashboard query returns data on them) and builds the Prometheus server that
#      e2e/tests/dashboard_prometheus.rs (step 5) runs the dashboard's queries on,
#   4. starts real Kafka, OpenSearch, an S3 server and a Kubernetes control plane,
#   5. runs the integration tests against them, then stops those servers,
#   6. builds every image (e2e/images.sh: base-image stand-ins, the project's two images, each
#      started once, the managed services' images), starts a cluster with a real kubelet
#      node (e2e/services.sh up node), checks real pods there (DNS, Services, volumes) and
#      loads the images into it,
#   7. runs the first-hour tests there (e2e/tests/real_pods.rs: the Helm chart, all-managed
#      pipelines with 3 and 1 Kafka nodes compared with the embedded run, a broken image),
#   8. stops everything (also on failure) and exits non-zero on any failure.
# Heavy downloads and builds are cached in $DATAPIPELINE_CACHE (default ~/.cache/datapipeline);
# image layers and the image builds' cargo caches in Docker's own store.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATAPIPELINE_CACHE="${DATAPIPELINE_CACHE:-$HOME/.cache/datapipeline}"
# Keep Rust builds out of the clone so a fresh clone reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DATAPIPELINE_CACHE/cargo-target}"
export GOTOOLCHAIN=local
mkdir -p "$DATAPIPELINE_CACHE"

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "prerequisites"
e2e/install-prerequisites.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "unit and controller tests"
cargo test --locked   # default members: everything but e2e, which needs the servers

step "alert rules and dashboard: promtool, and every metric they name is exported"
e2e/promtool.sh   # builds promtool once into the cache; check rules, test rules, dashboard queries, schema
e2e/promtool.sh install-server   # the Prometheus server for dashboard_prometheus (step 5), cached
cargo test -p e2e --locked --test chart_monitoring   # needs no server

cleanup() {
  step "stop servers"
  e2e/services.sh down kafka opensearch s3 k8s node || true
  e2e/images.sh docker-down || true
}
trap cleanup EXIT

step "start servers"
e2e/services.sh up kafka opensearch s3 k8s
eval "$(e2e/services.sh env)"

step "integration tests against the real servers"
cargo test -p e2e --locked --no-fail-fast -- --test-threads=1

step "stop the process servers (the real-pod tier brings its own)"
e2e/services.sh down kafka opensearch s3 k8s

step "images"
e2e/images.sh all

step "a cluster with a real node"
e2e/services.sh up node
eval "$(e2e/services.sh env)"
e2e/services.sh smoke node
e2e/images.sh load-node

step "the first hour on the real node: the chart, all-managed pipelines in real containers"
cargo test -p e2e --locked --features real-pods --test real_pods -- --test-threads=1 --nocapture
