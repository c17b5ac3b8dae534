#!/usr/bin/env bash
# The kind node image for the Kubernetes version the harness uses, and kind itself, built
# on a machine that reaches the package registries (Debian, the Go module proxy) but no
# image registry. A user with registry access never needs this: kind pulls kindest/node.
#
#   e2e/kind/node-image.sh [all]   kind, the node image and everything it preloads
#   e2e/kind/node-image.sh tools   only the Go binaries (kind, kubeadm, local-path-provisioner)
#   e2e/kind/node-image.sh list    the images it makes and their sizes
#
# Prints at the end: the node image's name (kindest/node:$K8S_VERSION) and kind's path
# ($KIND). Then: kind create cluster --image kindest/node:v1.34.4 ...
#
# How (kind's own `kind build node-image` steps, done here because its build pulls every
# image it does not build with `ctr content fetch` from the image's registry, and its
# containerd readiness check needs containerd 2's `ctr info`):
#  1. Go binaries, cached under ${DATAPIPELINE_CACHE:-~/.cache/datapipeline}/: kind
#     ($KIND_VERSION, go install), kubeadm ($K8S_VERSION, the k8s.io/kubernetes module,
#     the same go.mod recipe as e2e/services/k8s.sh), local-path-provisioner
#     ($LOCAL_PATH_PROVISIONER_VERSION, the version kind $KIND_VERSION ships); kube-apiserver,
#     kube-controller-manager, kube-scheduler, kube-proxy, kubelet, kubectl, etcd, CoreDNS
#     and pause come from `e2e/services.sh install node` (the real-node tier's recipes).
#  2. The base: kind's images/base/files from kind's module + e2e/kind/base/Dockerfile
#     (Debian packages; see its header for how it differs from kindest/base).
#  3. The images the node preloads, under the names kind and kubeadm ask for
#     (`kubeadm config images list`, containerd's sandbox_image, kind's CNI and storage
#     manifests), all local stand-ins on debian:bookworm (e2e/images.sh base):
#       registry.k8s.io/kube-{apiserver,controller-manager,scheduler}:$K8S_VERSION
#                                       the binaries built from k8s.io/kubernetes $K8S_VERSION
#       registry.k8s.io/kube-proxy      the same, on Debian's iptables/nftables/conntrack
#                                       (e2e/kind/images/net) instead of distroless-iptables
#       registry.k8s.io/etcd:<kubeadm's tag>      etcd $ETCD_VERSION (the harness' etcd,
#                                       not kubeadm's exact patch version)
#       registry.k8s.io/coredns/coredns:<tag>     CoreDNS $COREDNS_VERSION, likewise
#       registry.k8s.io/pause:3.10      kubernetes' pause.c of $K8S_VERSION (a one-file image)
#       docker.io/kindest/kindnetd      a shell stand-in (e2e/kind/images/kindnetd): kind's
#                                       kindnetd module is not served by the Go proxy here
#       docker.io/kindest/local-path-provisioner  rancher/local-path-provisioner, as kind's
#       docker.io/kindest/local-path-helper       debian:bookworm (kind's: a few busybox files)
#  4. The node: a container of the base, kubeadm/kubelet/kubectl in /usr/bin, /kind/version,
#     kind's CNI and storage manifests (their text taken from kind's Go source) in
#     /kind/manifests, the images imported into its containerd (pinned, not unpacked),
#     then `docker commit` with kind's entrypoint, as kind's builder does.
#
# Needs: a Docker engine (`e2e/images.sh docker-up` starts Debian's), debian:bookworm
# (`e2e/images.sh base`), Go, root. Rebuilds only what changed: each image carries a
# label with the hash of its recipe and inputs.
set -euo pipefail

KIND_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_DIR=$(dirname "$KIND_SCRIPT_DIR")
export GOTOOLCHAIN=local
DP_CACHE=${DATAPIPELINE_CACHE:-$HOME/.cache/datapipeline}
DP_RUN=${DATAPIPELINE_RUN:-/tmp/datapipeline-services}
WORK=$DP_RUN/images-kind

# The harness' versions (one place each: e2e/services/k8s.sh and node.sh).
harness_version() { sed -n "s/^$1=\${$1:-\(.*\)}$/\1/p" "$E2E_DIR/services/$2"; }
K8S_VERSION=$(harness_version K8S_VERSION k8s.sh)
ETCD_VERSION=$(harness_version ETCD_VERSION k8s.sh)
COREDNS_VERSION=$(harness_version COREDNS_VERSION node.sh)
[[ -n $K8S_VERSION && -n $ETCD_VERSION && -n $COREDNS_VERSION ]] ||
  { echo "cannot read the harness' versions from e2e/services" >&2; exit 1; }
# kind v0.30.0's default node image is Kubernetes v1.34.0: the same minor as the harness.
KIND_VERSION=v0.30.0
LOCAL_PATH_PROVISIONER_VERSION=v0.0.30
NODE_IMAGE=${NODE_IMAGE:-kindest/node:$K8S_VERSION}
BASE_IMAGE=e2e.local/kind-base:$KIND_VERSION
NET_IMAGE=e2e.local/kind-net:bookworm
RECIPE_LABEL=datapipeline.e2e/recipe
NICE=(nice -n 10)

# shellcheck source=e2e/images/docker-client.sh
source "$E2E_DIR/images/docker-client.sh"

log() { printf '[kind-node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

cache_dir() { printf '%s/%s-%s' "$DP_CACHE" "$1" "$2"; }

# cache_build COMPONENT VERSION FUNCTION: FUNCTION fills a temp dir that is renamed to the
# cache entry; nothing if the entry exists (same layout as e2e/services.sh).
cache_build() {
  local comp=$1 ver=$2 fn=$3 final tmp lockfd t0
  final=$(cache_dir "$comp" "$ver")
  [[ -d $final ]] && return 0
  mkdir -p "$DP_CACHE"
  exec {lockfd}>"$DP_CACHE/.$comp-$ver.lock"
  flock "$lockfd"
  if [[ ! -d $final ]]; then
    rm -rf "$DP_CACHE/.tmp-$comp-$ver."*
    tmp=$(mktemp -d "$DP_CACHE/.tmp-$comp-$ver.XXXXXX")
    log "building $comp $ver (cache: $final)"
    t0=$SECONDS
    "$fn" "$tmp" || {
      exec {lockfd}>&-
      die "building $comp $ver failed (partial result in $tmp)"
    }
    chmod 755 "$tmp"
    mv -T "$tmp" "$final"
    log "built $comp $ver in $((SECONDS - t0)) s"
  fi
  exec {lockfd}>&-
}

module_dir() { go mod download -json "$1" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p'; }

# ------------------------------------------------------------------ Go binaries

build_kind() {
  mkdir -p "$1/bin"
  GOBIN=$1/bin CGO_ENABLED=0 "${NICE[@]}" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION"
  "$1/bin/kind" version >&2
}

build_local_path_provisioner() {
  mkdir -p "$1/bin"
  GOBIN=$1/bin CGO_ENABLED=0 "${NICE[@]}" go install -trimpath -ldflags "-s -w" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION"
}

# kubeadm from the go.mod e2e/services/k8s.sh generated for the other binaries (the
# staging modules replaced by their published versions), with kubeadm added as a tool.
build_kubeadm() {
  local out=$1 src=$1/src kube_src minor
  kube_src=$(cache_dir kube "$K8S_VERSION-node")/src
  [[ -f $kube_src/go.mod ]] || die "no $kube_src/go.mod: e2e/services.sh install node"
  mkdir -p "$src" "$out/bin"
  sed 's#^\tk8s.io/kubernetes/cmd/kubectl$#&\n\tk8s.io/kubernetes/cmd/kubeadm#' "$kube_src/go.mod" >"$src/go.mod"
  grep -q 'cmd/kubeadm' "$src/go.mod" || die "could not add kubeadm to the tools of $kube_src/go.mod"
  cp "$kube_src/go.sum" "$src/go.sum"
  minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  (
    cd "$src"
    "${NICE[@]}" go mod tidy
    local ldflags=() kv pkg
    for kv in "gitVersion=$K8S_VERSION" gitMajor=1 "gitMinor=$minor" \
      gitCommit=0000000000000000000000000000000000000000 gitTreeState=clean \
      "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
      for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        ldflags+=("-X" "$pkg.${kv%%=*}=${kv#*=}")
      done
    done
    CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "-s -w ${ldflags[*]}" -o "$out/bin/" \
      k8s.io/kubernetes/cmd/kubeadm
  )
  "$out/bin/kubeadm" version -o short >&2
}

build_tools() {
  command -v go >/dev/null || die "go is required"
  "$E2E_DIR/services.sh" install node
  cache_build kind "$KIND_VERSION" build_kind
  cache_build kubeadm "$K8S_VERSION" build_kubeadm
  cache_build local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" build_local_path_provisioner
  KIND=$(cache_dir kind "$KIND_VERSION")/bin/kind
  KUBE_BIN=$(cache_dir kube "$K8S_VERSION-node")/bin
  KUBEADM=$(cache_dir kubeadm "$K8S_VERSION")/bin/kubeadm
  KIND_SRC=$(module_dir "sigs.k8s.io/kind@$KIND_VERSION")
  [[ -d $KIND_SRC/images/base/files ]] || die "no images/base/files in $KIND_SRC"
}

# ------------------------------------------------------------------ images

image_label() { "${DOCKER[@]}" image inspect -f "{{ index .Config.Labels \"$RECIPE_LABEL\" }}" "$1" 2>/dev/null || true; }

# build_image TAG CONTEXT_DIR [docker build args...]: builds unless TAG carries the hash of
# the context's files and the arguments.
build_image() {
  local tag=$1 context=$2
  shift 2
  local hash
  hash=$( (cd "$context" && find . -type f -print0 | sort -z | xargs -0 sha256sum; printf '%s\n' "$@") | sha256sum | cut -c1-16)
  if [[ $(image_label "$tag") == "$hash" ]]; then
    log "$tag is current"
    return 0
  fi
  log "building $tag"
  local logf=$WORK/build-${tag//[\/:]/_}.log
  "${DOCKER[@]}" build --progress=plain --label "$RECIPE_LABEL=$hash" -t "$tag" "$@" "$context" >"$logf" 2>&1 || {
    tail -n 40 "$logf" >&2
    die "docker build of $tag failed (log: $logf)"
  }
}

# A fresh staging directory for an image's build context.
stage() {
  local dir=$WORK/context/$1
  rm -rf "$dir"
  mkdir -p "$dir"
  printf '%s' "$dir"
}

build_base() {
  local ctx
  ctx=$(stage base)
  cp -r "$KIND_SRC/images/base/files" "$ctx/files"
  chmod -R u+w "$ctx/files"
  cp -r "$KIND_SCRIPT_DIR/base/." "$ctx/"
  build_image "$BASE_IMAGE" "$ctx" --build-arg "BASE_ID=$("${DOCKER[@]}" image inspect -f '{{.Id}}' debian:bookworm)"
}

# binary_image TAG ENTRYPOINT_JSON BINARY...: debian:bookworm + the binaries.
binary_image() {
  local tag=$1 entrypoint=$2 ctx
  shift 2
  ctx=$(stage "${tag//[\/:]/_}")
  mkdir -p "$ctx/bin"
  cp "$@" "$ctx/bin/"
  cp "$KIND_SCRIPT_DIR/images/binary/Dockerfile" "$ctx/"
  [[ -n $entrypoint ]] && printf 'ENTRYPOINT %s\n' "$entrypoint" >>"$ctx/Dockerfile"
  build_image "$tag" "$ctx"
}

# The text of one of kind's manifest constants (a Go raw string in pkg/build/nodeimage).
kind_manifest() {
  local file=$KIND_SRC/pkg/build/nodeimage/$1 const=$2 image_const image
  sed -n "/^const $const = \`/,/^\`/p" "$file" | sed '1d;$d' >"$WORK/$const.yaml.in"
  [[ -s $WORK/$const.yaml.in ]] || die "no const $const in $file"
  # ` + someImage + ` splices another constant in.
  while image_const=$(grep -o '` + [A-Za-z]* + `' "$WORK/$const.yaml.in" | head -1 | sed 's/` + \(.*\) + `/\1/') && [[ -n $image_const ]]; do
    image=$(kind_const "$image_const")
    sed -i "s#\` + $image_const + \`#$image#g" "$WORK/$const.yaml.in"
  done
  cat "$WORK/$const.yaml.in"
}

kind_const() {
  grep -rh "^const $1 = \"" "$KIND_SRC/pkg/build/nodeimage/" | sed 's/^const [A-Za-z]* = "\(.*\)"$/\1/' | head -1
}

build_images() {
  local cp_images etcd_tag coredns_tag pause_tag
  mapfile -t cp_images < <("$KUBEADM" config images list --kubernetes-version "$K8S_VERSION")
  etcd_tag=$(printf '%s\n' "${cp_images[@]}" | grep '/etcd:')
  coredns_tag=$(printf '%s\n' "${cp_images[@]}" | grep '/coredns:')
  pause_tag=$(sed -n 's/^\s*sandbox_image = "\(.*\)"$/\1/p' "$KIND_SRC/images/base/files/etc/containerd/config.toml")
  [[ -n $etcd_tag && -n $coredns_tag && -n $pause_tag ]] || die "unexpected image list: ${cp_images[*]} / $pause_tag"

  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    binary_image "registry.k8s.io/$c:$K8S_VERSION" "" "$KUBE_BIN/$c"
  done
  local ctx
  ctx=$(stage net)
  cp -r "$KIND_SCRIPT_DIR/images/net/." "$ctx/"
  build_image "$NET_IMAGE" "$ctx" --build-arg "BASE_ID=$("${DOCKER[@]}" image inspect -f '{{.Id}}' debian:bookworm)"
  ctx=$(stage kube-proxy)
  cp "$KUBE_BIN/kube-proxy" "$ctx/"
  printf 'FROM %s\nCOPY --chmod=0755 kube-proxy /usr/local/bin/kube-proxy\n' "$NET_IMAGE" >"$ctx/Dockerfile"
  build_image "registry.k8s.io/kube-proxy:$K8S_VERSION" "$ctx" --build-arg "NET_ID=$(image_label "$NET_IMAGE")"
  binary_image "$etcd_tag" "" "$(cache_dir etcd "$ETCD_VERSION")/bin/etcd"
  binary_image "$coredns_tag" '["/usr/local/bin/coredns"]' "$(cache_dir coredns "$COREDNS_VERSION")/bin/coredns"
  ctx=$(stage pause)
  cp "$(cache_dir pause "$K8S_VERSION")/bin/pause" "$ctx/"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
  build_image "$pause_tag" "$ctx"
  ctx=$(stage kindnetd)
  cp -r "$KIND_SCRIPT_DIR/images/kindnetd/." "$ctx/"
  build_image "$(kind_const kindnetdImage)" "$ctx" --build-arg "NET_IMAGE=$NET_IMAGE" --build-arg "NET_ID=$(image_label "$NET_IMAGE")"
  binary_image "$(kind_const storageProvisionerImage)" '["/usr/local/bin/local-path-provisioner"]' \
    "$(cache_dir local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION")/bin/local-path-provisioner"
  "${DOCKER[@]}" tag debian:bookworm "$(kind_const storageHelperImage)"

  PRELOAD=("${cp_images[@]}")
  # kubeadm's list names the pause version it would like; the node uses containerd's.
  mapfile -t PRELOAD < <(printf '%s\n' "${PRELOAD[@]}" | grep -v '/pause:')
  PRELOAD+=("$pause_tag" "$(kind_const kindnetdImage)" "$(kind_const storageProvisionerImage)" "$(kind_const storageHelperImage)")
}

# ------------------------------------------------------------------ the node image

assemble_node() {
  local hash cid
  hash=$( (
    for img in "$BASE_IMAGE" "${PRELOAD[@]}"; do "${DOCKER[@]}" image inspect -f '{{.Id}}' "$img"; done
    # Contents only: the same files under other paths are the same inputs.
    sha256sum "$KUBEADM" "$KUBE_BIN/kubelet" "$KUBE_BIN/kubectl" "${BASH_SOURCE[0]}" | cut -d' ' -f1
  ) | sha256sum | cut -c1-16)
  if [[ $(image_label "$NODE_IMAGE") == "$hash" ]]; then
    log "$NODE_IMAGE is current"
    return 0
  fi
  log "assembling $NODE_IMAGE"
  kind_manifest const_cni.go defaultCNIManifest >"$WORK/default-cni.yaml"
  kind_manifest const_storage.go defaultStorageManifest >"$WORK/default-storage.yaml"
  # Named, so a container left by an interrupted build is removed by the next one.
  local name=datapipeline-kind-node-build
  "${DOCKER[@]}" rm -f -v "$name" >/dev/null 2>&1 || true
  # shellcheck disable=SC2064 # this container, now
  trap "'${DOCKER[0]}' rm -f -v '$name' >/dev/null 2>&1 || true" EXIT
  cid=$("${DOCKER[@]}" run -d --name "$name" --entrypoint=sleep --security-opt seccomp=unconfined --privileged "$BASE_IMAGE" infinity)
  local b
  for b in "$KUBEADM" "$KUBE_BIN/kubelet" "$KUBE_BIN/kubectl"; do
    "${DOCKER[@]}" cp "$b" "$cid:/usr/bin/$(basename "$b")"
  done
  "${DOCKER[@]}" exec "$cid" chmod 0755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl
  "${DOCKER[@]}" exec "$cid" chown root:root /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl
  "${DOCKER[@]}" exec "$cid" mkdir -p /kind/manifests
  printf '%s' "$K8S_VERSION" | "${DOCKER[@]}" exec -i "$cid" cp /dev/stdin /kind/version
  "${DOCKER[@]}" exec -i "$cid" cp /dev/stdin /kind/manifests/default-cni.yaml <"$WORK/default-cni.yaml"
  "${DOCKER[@]}" exec -i "$cid" cp /dev/stdin /kind/manifests/default-storage.yaml <"$WORK/default-storage.yaml"

  "${DOCKER[@]}" exec "$cid" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
  local i
  for ((i = 0; i < 60; i++)); do
    "${DOCKER[@]}" exec "$cid" ctr version >/dev/null 2>&1 && break
    sleep 0.5
  done
  "${DOCKER[@]}" exec "$cid" ctr version >/dev/null || die "containerd did not start in the build container"
  log "importing ${#PRELOAD[@]} images into the node's containerd"
  "${DOCKER[@]}" save "${PRELOAD[@]}" |
    "${DOCKER[@]}" exec -i "$cid" ctr --namespace=k8s.io images import --all-platforms --no-unpack --digests - >/dev/null
  local img
  for img in "${PRELOAD[@]}"; do
    # ctr names docker.io images in full; docker save drops the docker.io/ prefix.
    [[ $img == */*/* || $img == *.*/* ]] || img=docker.io/$img
    "${DOCKER[@]}" exec "$cid" ctr --namespace=k8s.io images label "$img" io.cri-containerd.pinned=pinned >/dev/null
  done
  "${DOCKER[@]}" exec "$cid" ctr --namespace=k8s.io images list -q | sed 's/^/[kind-node]   /' >&2
  "${DOCKER[@]}" exec "$cid" pkill containerd
  for ((i = 0; i < 60; i++)); do
    "${DOCKER[@]}" exec "$cid" pgrep -x containerd >/dev/null || break
    sleep 0.5
  done
  "${DOCKER[@]}" commit \
    --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change 'ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""' \
    --change "LABEL $RECIPE_LABEL=$hash" \
    "$cid" "$NODE_IMAGE" >/dev/null
  "${DOCKER[@]}" rm -f -v "$cid" >/dev/null
  trap - EXIT
  log "built $NODE_IMAGE"
}

list_images() {
  "${DOCKER[@]}" image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' |
    grep -E '^(kindest/|registry.k8s.io/|e2e.local/kind-)' || true
}

main() {
  mkdir -p "$WORK"
  case ${1:-all} in
  all)
    build_tools
    "$E2E_DIR/images.sh" docker-up
    "${DOCKER[@]}" image inspect debian:bookworm >/dev/null 2>&1 || "$E2E_DIR/images.sh" base
    build_base
    build_images
    assemble_node
    list_images
    log "node image: $NODE_IMAGE"
    log "kind: $KIND"
    ;;
  tools)
    build_tools
    log "kind: $KIND"
    ;;
  list) list_images ;;
  *) die "unknown command $1; see the header of $0" ;;
  esac
}

main "$@"
