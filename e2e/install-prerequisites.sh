#!/usr/bin/env bash
# Installs the Debian packages the build and the test servers need, when missing.
# Needs root (or passwordless sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential pkg-config         # librdkafka is built from source by rdkafka-sys (its configure script)
  libssl-dev                         # TLS for librdkafka (zlib and zstd are compiled in)
  curl openssl ca-certificates       # health checks; control-plane certificates
  util-linux                         # setsid and flock in e2e/services.sh
  maven openjdk-17-jdk-headless      # Kafka and OpenSearch come from Maven Central, run on Java 17
  containerd runc containernetworking-plugins iptables iproute2 conntrack ethtool socat  # the real node (services.sh up node)
  docker.io debootstrap jq           # the images (e2e/images.sh), their base-image stand-ins, the kind node image
  chromium                           # a real headless browser for the HTML report's test (e2e/tests/report_html_chromium.rs)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi

need() { command -v "$1" >/dev/null || { echo "missing $1: $2" >&2; exit 1; }; }
need cargo "install Rust with rustup (https://rustup.rs)"
need go "install Go >= 1.26 (etcd 3.6.16 and kwok 0.8 need it; the Kubernetes control plane, kwok, helm and the S3 server are built from the Go module proxy)"
need java "install a Java 17 JDK (Kafka and OpenSearch run on it)"
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt || true
echo "prerequisites ok"
