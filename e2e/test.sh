#!/usr/bin/env bash
# The whole test suite, as README.md gives it and as CI runs it:
#   1. installs what is missing (Debian packages; the servers through e2e/services.sh),
#   2. checks formatting and lints,
#   3. runs the unit and controller tests (no servers needed),
#   4. starts real Kafka, OpenSearch, an S3 server and a Kubernetes control plane,
#   5. runs the integration tests against them,
#   6. stops the servers (also on failure) and exits non-zero on any failure.
# Heavy downloads and builds are cached in $DATAPIPELINE_CACHE (default ~/.cache/datapipeline).
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
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and controller tests"
cargo test --locked   # default members: everything but e2e, which needs the servers

step "start servers"
trap 'step "stop servers"; e2e/services.sh down || true' EXIT
e2e/services.sh up
eval "$(e2e/services.sh env)"

step "integration tests against the real servers"
cargo test -p e2e --locked --no-fail-fast -- --test-threads=1
