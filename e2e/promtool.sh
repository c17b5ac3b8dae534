#!/usr/bin/env bash
# The chart's Prometheus alert rules, checked and unit-tested with promtool:
#
#   e2e/promtool.sh install   build promtool into the cache only (idempotent); prints its path
#   e2e/promtool.sh check     promtool check rules on the chart's rules file
#   e2e/promtool.sh test      promtool test rules on e2e/alerts/*.test.yaml (synthetic series)
#   e2e/promtool.sh dashboard every query of the chart's Grafana dashboard parses as PromQL
#   e2e/promtool.sh schema    the dashboard matches Grafana's schema (e2e/grafana-schema: the
#                             Grafana Foundation SDK's strict decoders), every panel queries
#                             Prometheus
#   e2e/promtool.sh install-server
#                             build the Prometheus server into the cache only; prints its path
#                             (for e2e/tests/dashboard_prometheus.rs)
#   e2e/promtool.sh           check, test, dashboard, schema
#
# That the dashboard and the rules name only metrics the binaries export is checked by
# `cargo test -p e2e --test chart_monitoring`.
#
# promtool and the server are built from their Go module (github.com/prometheus/prometheus/cmd/promtool,
# PROMETHEUS_VERSION, the module's v0.3XX.Y for Prometheus v3.XX.Y) through the Go module
# proxy, and cached like the servers' tools (e2e/services.sh):
#   ${DATAPIPELINE_CACHE:-$HOME/.cache/datapipeline}/promtool-<version>-nosd/bin/promtool
# built in a temp dir next to it and renamed into place, so an interrupted build is never
# taken for a cached one. Cold build with empty Go build cache: about 2 min on two cores
# (measured 128 s, modules already downloaded); then instant. The server the same way, in
#   ${DATAPIPELINE_CACHE:-$HOME/.cache/datapipeline}/prometheus-<version>-nosd/bin/prometheus
# (measured 58 s after promtool's build, which leaves most of its packages in Go's cache).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$E2E_DIR")
RULES=$ROOT/charts/datapipeline-operator/rules/datapipeline.rules.yaml
DASHBOARD=$ROOT/charts/datapipeline-operator/dashboards/datapipeline.json
TESTS_DIR=$E2E_DIR/alerts

export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
DP_CACHE=${DATAPIPELINE_CACHE:-$HOME/.cache/datapipeline}
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
# v0.316.0 -> 3.16.0: what `promtool --version` says.
PROMETHEUS_RELEASE=$(sed -E 's/^v0\.3([0-9]{2})\.([0-9]+)$/3.\1.\2/; s/^3\.0([0-9])/3.\1/' <<<"$PROMETHEUS_VERSION")
PROMTOOL_DIR=$DP_CACHE/promtool-$PROMETHEUS_VERSION-nosd
PROMTOOL=$PROMTOOL_DIR/bin/promtool
SERVER_DIR=$DP_CACHE/prometheus-$PROMETHEUS_VERSION-nosd
PROMETHEUS=$SERVER_DIR/bin/prometheus

log() { printf '[promtool %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Builds `cmd/<tool>` of the Prometheus module into <dir>/bin/<tool> unless it is there;
# serialised with flock so two concurrent runs do not build it twice.
build() {
  local tool=$1 dir=$2
  [[ -x $dir/bin/$tool ]] && return 0
  command -v go >/dev/null || die "go is required to build $tool"
  mkdir -p "$DP_CACHE"
  local lock=$DP_CACHE/.$tool-$PROMETHEUS_VERSION.lock lockfd tmp t0=$SECONDS
  exec {lockfd}>"$lock"
  flock "$lockfd"
  if [[ ! -x $dir/bin/$tool ]]; then
    rm -rf "$DP_CACHE/.tmp-$tool-$PROMETHEUS_VERSION."*
    tmp=$(mktemp -d "$DP_CACHE/.tmp-$tool-$PROMETHEUS_VERSION.XXXXXX")
    log "building $tool $PROMETHEUS_VERSION (Prometheus $PROMETHEUS_RELEASE; cache: $dir)"
    mkdir -p "$tmp/bin"
    # remove_all_sd leaves out every service-discovery plugin (cloud SDKs, Kubernetes
    # client): rule and query checks, and a server scraping static targets, need none, and
    # the build takes a fraction of the time.
    GOBIN=$tmp/bin CGO_ENABLED=0 nice -n 10 go install -trimpath -tags remove_all_sd \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE" \
      "github.com/prometheus/prometheus/cmd/$tool@$PROMETHEUS_VERSION" ||
      die "building $tool $PROMETHEUS_VERSION failed (partial build left in $tmp)"
    chmod 755 "$tmp"
    mv -T "$tmp" "$dir"
    log "built $tool $PROMETHEUS_VERSION in $((SECONDS - t0)) s"
  fi
  exec {lockfd}>&-
}

install() { build promtool "$PROMTOOL_DIR"; }

# The Prometheus server (for e2e/tests/dashboard_prometheus.rs, which runs the dashboard's
# queries on what it scraped from a real run). A go-install build embeds no web UI assets;
# only the HTTP API is used.
install_server() { build prometheus "$SERVER_DIR"; }

check() {
  install
  "$PROMTOOL" check rules "$RULES"
}

unit_tests() {
  install
  local tests=("$TESTS_DIR"/*.test.yaml)
  [[ -e ${tests[0]} ]] || die "no rule tests in $TESTS_DIR"
  # The tests name the rules file relative to themselves.
  (cd "$TESTS_DIR" && "$PROMTOOL" test rules "${tests[@]##*/}")
}

# The dashboard's queries (one `"expr": "..."` line each in the JSON, as the file is
# written), with Grafana's $__rate_interval given a value, through promtool's parser.
dashboard() {
  install
  local expr n=0
  while IFS= read -r expr; do
    expr=${expr//'$__rate_interval'/5m}
    "$PROMTOOL" --experimental promql format "$expr" >/dev/null ||
      die "a dashboard query does not parse: $expr"
    n=$((n + 1))
  done < <(sed -n 's/^ *"expr": "\(.*\)",\{0,1\}$/\1/p' "$DASHBOARD" | sed 's/\\"/"/g; s/\\\\/\\/g')
  ((n > 0)) || die "no queries found in $DASHBOARD"
  echo "Checking $DASHBOARD"
  echo "  SUCCESS: $n queries parse"
}

# The dashboard against Grafana's schema, by the Go program in e2e/grafana-schema (its
# module requires the Grafana Foundation SDK; first run compiles it, about 1 min).
schema() {
  command -v go >/dev/null || die "go is required for the schema check"
  (cd "$E2E_DIR/grafana-schema" && nice -n 10 go run . "$DASHBOARD")
}

case ${1:-all} in
  install) install && echo "$PROMTOOL" ;;
  install-server) install_server && echo "$PROMETHEUS" ;;
  check) check ;;
  test) unit_tests ;;
  dashboard) dashboard ;;
  schema) schema ;;
  all) check && unit_tests && dashboard && schema ;;
  *) die "usage: $0 [install|install-server|check|test|dashboard|schema]" ;;
esac
