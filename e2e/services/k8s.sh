# shellcheck shell=bash disable=SC2317
# Kubernetes control plane without kubelets, sourced by e2e/services.sh.
#
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler (+ kubectl), all
# built from source via the Go module proxy, plus kwok (fake nodes/pods) and helm.
# Wired by hand (no kwokctl): openssl CA + certs, token auth, RBAC.
#
# Changes vs shared/real-services.md (found by running it here):
#  - k8s.io/kubernetes: a wrapper module requiring k8s.io/kubernetes and replacing
#    every ./staging module with its v0.<minor>.<patch> release (the list is read from
#    that version's own go.mod); `tool` lines pull the cmd packages into the module
#    graph so `go mod tidy` writes a complete go.sum, and one `go build` compiles the
#    four binaries, sharing the compilation. The component-base and client-go
#    version ldflags are set so kubectl/helm/kube-rs see a real version.
#  - etcd: wrapper module with `go get -tool go.etcd.io/etcd/server/v3@...`; the
#    server/v3 module is itself the `etcd` main package (server/main.go).
#  - kwok and helm: plain `go install pkg@version` with GOBIN in the cache.
#  - kwok: the standalone binary has NO built-in stages (kwokctl injects its own
#    defaults; kwok alone exits with "no stages found"). We copy kwok's kustomize/stage
#    manifests from its module into the cache and pass the same stages kwokctl uses
#    (node-initialize, node-heartbeat-with-lease + --node-lease-duration-seconds 40,
#    pod-ready/complete/delete) via --config.
#  - PVCs: with no provisioner, a StatefulSet's PVCs stay Pending and its pods are
#    never scheduled ("pod has unbound immediate PersistentVolumeClaims"; checked
#    here). kwok ships the fix itself: its "volume/fast" stages (pvc-provision,
#    pv-bind, pv-delete, pvc-delete) plus its default StorageClass `kwok-volume`
#    (provisioner kwok.x-k8s.io/volume, Immediate). We load those stages and apply
#    that StorageClass, so PVCs without a storageClassName become Bound in ~1 s and
#    StatefulSets reach ready; PVs are deleted with their PVCs. No polling loop of ours.
#    A PVC that names another StorageClass (or storageClassName: "") stays Pending.
#  - kube-apiserver needs --advertise-address (it would otherwise take the default
#    route's address); 127.0.0.1 is not allowed in the `kubernetes` Endpoints, so
#    --endpoint-reconciler-type none (that Service has no endpoints: nothing in a kwok
#    cluster dials it).
#  - controller-manager and scheduler run with --secure-port 0 (no serving port to
#    clash with 10257/10259) and --leader-elect=false; all components use the single
#    admin token (group system:masters) from --token-auth-file.
#  - The kwok node has no InternalIP (no --node-ip): pod IPs come from
#    K8S_POD_CIDR (10.244.0.0/24) and are fake; never send traffic to them.

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
K8S_READY_TIMEOUT=${K8S_READY_TIMEOUT:-120}

# "-node": the entry also holds kubelet and kube-proxy (the real-node tier).
K8S_BIN=$(cache_dir kube "$K8S_VERSION-node")/bin
ETCD_BIN=$(cache_dir etcd "$ETCD_VERSION")/bin
KWOK_BIN=$(cache_dir kwok "$KWOK_VERSION")/bin
HELM_BIN=$(cache_dir helm "$HELM_VERSION")/bin
K8S_RUN=$(run_dir k8s)

# ---------------------------------------------------------------- install

_k8s_build_kube() {
  local out=$1 src=$1/src gomod minor
  mkdir -p "$src" "$out/bin"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  [[ -f $gomod ]] || { log "no go.mod for k8s.io/kubernetes@$K8S_VERSION"; return 1; }
  local staging_ver=v0.${K8S_VERSION#v1.}
  minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  {
    echo "module datapipeline.local/kube-build"
    echo
    sed -n 's/^go \(.*\)$/go \1/p' "$gomod" | head -n1
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # e.g. "	k8s.io/api => ./staging/src/k8s.io/api"
    sed -n 's#^\s*\(k8s.io/[^ ]*\) => \./staging/.*$#\t\1 => \1 '"$staging_ver"'#p' "$gomod"
    echo ")"
    echo
    echo "tool ("
    local c
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
      echo "	k8s.io/kubernetes/cmd/$c"
    done
    echo ")"
  } >"$src/go.mod"
  (
    cd "$src" || exit
    "${NICE[@]}" go mod tidy
    local now ldflags=()
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    local key val pkg
    for kv in "gitVersion=$K8S_VERSION" gitMajor=1 "gitMinor=$minor" \
      gitCommit=0000000000000000000000000000000000000000 gitTreeState=clean "buildDate=$now"; do
      key=${kv%%=*}
      val=${kv#*=}
      for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        ldflags+=("-X" "$pkg.$key=$val")
      done
    done
    CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "-s -w ${ldflags[*]}" -o "$out/bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl \
      k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy
  )
  "$out/bin/kubectl" version --client >&2
}

_k8s_build_etcd() {
  local out=$1 src=$1/src
  mkdir -p "$src" "$out/bin"
  (
    cd "$src" || exit
    go mod init datapipeline.local/etcd-build >/dev/null 2>&1
    "${NICE[@]}" go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3
  )
  "$out/bin/etcd" --version >&2
}

_k8s_go_install() {
  local out=$1 pkg=$2
  mkdir -p "$out/bin"
  shift 2
  GOBIN=$out/bin CGO_ENABLED=0 "${NICE[@]}" go install -trimpath "$@" "$pkg"
}

# kwok plus the Stage/StorageClass manifests shipped in its module (kustomize/stage):
# the standalone `kwok` binary has NO built-in stages (only kwokctl injects its
# defaults; kwok alone exits with "no stages found"), so we hand it the same ones.
_k8s_build_kwok() {
  local out=$1 dir
  _k8s_go_install "$out" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
  [[ -d $dir/kustomize/stage ]] || { log "no kustomize/stage in $dir"; return 1; }
  mkdir -p "$out/stage"
  cp -r "$dir/kustomize/stage/." "$out/stage/"
  chmod -R u+w "$out/stage"
}

k8s_install() {
  command -v go >/dev/null || die "k8s: go is required"
  command -v openssl >/dev/null || die "k8s: openssl is required"
  cache_build etcd "$ETCD_VERSION" _k8s_build_etcd
  cache_build kwok "$KWOK_VERSION" _k8s_build_kwok
  cache_build helm "$HELM_VERSION" _k8s_go_install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  cache_build kube "$K8S_VERSION-node" _k8s_build_kube
}

# ---------------------------------------------------------------- runtime
#
# Layout of $K8S_RUN (= $DATAPIPELINE_RUN/k8s):
#   k8s.log                  this harness' own steps (certs, kubectl apply, waits)
#   <component>.log/.pid     etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
#   pki/                     CA, apiserver serving cert, service-account key pair
#   kubeconfig               admin token (group system:masters) for kubectl/helm/kube-rs
#   etcd/                    etcd data (removed by down)

K8S_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
K8S_LOG=$K8S_RUN/k8s.log
K8S_KUBECONFIG=$K8S_RUN/kubeconfig
K8S_SERVICE_CIDR=${K8S_SERVICE_CIDR:-10.96.0.0/16}
K8S_POD_CIDR=${K8S_POD_CIDR:-10.244.0.0/24}
K8S_NODE_NAME=${K8S_NODE_NAME:-kwok-node-0}
K8S_APISERVER_URL=https://127.0.0.1:$K8S_APISERVER_PORT

# The control-plane functions below (_k8s_pki ... _k8s_cp_start, _k8s_cp_stop) serve
# two clusters: this one, and the real-node cluster of node.sh. They read which one
# from the variables above (K8S_RUN, K8S_LOG, K8S_KUBECONFIG, K8S_APISERVER_URL,
# K8S_APISERVER_PORT, ETCD_PORT, ETCD_PEER_PORT, K8S_SERVICE_CIDR) and these; node.sh
# calls them with its own values declared `local` (bash's dynamic scoping), so the
# defaults here are exactly the `k8s` service's.
K8S_CLUSTER=k8s                    # service name: log messages, ${K8S_CLUSTER}_down on failure
K8S_CONTEXT=datapipeline-e2e       # cluster/context name in the kubeconfig
K8S_APISERVER_ADDRESS=127.0.0.1    # kube-apiserver --bind-address and --advertise-address
K8S_EXTRA_SANS=                    # ",IP:..." appended to the serving certificate's SANs
K8S_CP_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)
# 127.0.0.1 is not accepted in the `kubernetes` Endpoints: no endpoint reconciler here.
K8S_APISERVER_EXTRA_ARGS=(--endpoint-reconciler-type none)
K8S_KCM_EXTRA_ARGS=(--allocate-node-cidrs=false)

_k8s_kubectl() {
  "$K8S_BIN/kubectl" --kubeconfig "$K8S_KUBECONFIG" --request-timeout=10s "$@"
}

_k8s_pki() {
  local pki=$K8S_RUN/pki net=${K8S_SERVICE_CIDR%/*}
  # First address of the service range: the `kubernetes` Service's ClusterIP.
  local svc_ip=${net%.*}.1
  rm -rf "$pki"
  mkdir -p "$pki"
  (
    cd "$pki" || exit
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
      -subj "/CN=datapipeline-e2e-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver"
    cat >apiserver.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:$svc_ip,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local$K8S_EXTRA_SANS
EXT
    openssl x509 -req -sha256 -days 3650 -in apiserver.csr -CA ca.crt -CAkey ca.key \
      -CAcreateserial -extfile apiserver.ext -out apiserver.crt
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
    # Static token auth: one admin in system:masters, used by every component here.
    printf '%s,admin,admin-uid,"system:masters"\n' "$(openssl rand -hex 24)" >tokens.csv
    chmod 600 ./*.key tokens.csv
  ) >>"$K8S_LOG" 2>&1
}

_k8s_write_kubeconfig() {
  local token ca
  token=$(cut -d, -f1 "$K8S_RUN/pki/tokens.csv")
  ca=$(base64 -w0 <"$K8S_RUN/pki/ca.crt")
  umask 077
  cat >"$K8S_KUBECONFIG.tmp" <<EOF2
apiVersion: v1
kind: Config
clusters:
- name: $K8S_CONTEXT
  cluster:
    server: $K8S_APISERVER_URL
    certificate-authority-data: $ca
users:
- name: admin
  user:
    token: $token
contexts:
- name: $K8S_CONTEXT
  context:
    cluster: $K8S_CONTEXT
    user: admin
    namespace: default
current-context: $K8S_CONTEXT
EOF2
  mv -f "$K8S_KUBECONFIG.tmp" "$K8S_KUBECONFIG"
}

# kwok configuration: the same default stages kwokctl uses (node-initialize, node
# heartbeat with lease, pod ready/complete/delete) plus kwok's "volume/fast" stages,
# which provision and bind a PV for every PVC of StorageClass `kwok-volume`.
_k8s_kwok_config() {
  local st=$KWOK_BIN/../stage f first=1
  for f in node/fast/node-initialize.yaml \
    node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
    volume/fast/pvc-provision.yaml volume/fast/pv-bind.yaml \
    volume/fast/pv-delete.yaml volume/fast/pvc-delete.yaml; do
    ((first)) || echo "---"
    first=0
    cat "$st/$f"
  done
}

_k8s_node_manifest() {
  cat <<EOF2
apiVersion: v1
kind: Node
metadata:
  name: $K8S_NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $K8S_NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
spec:
  podCIDR: $K8S_POD_CIDR
status:
  allocatable:
    cpu: "32"
    memory: 256Gi
    pods: "110"
  capacity:
    cpu: "32"
    memory: 256Gi
    pods: "110"
  nodeInfo:
    architecture: amd64
    kubeletVersion: fake
    kubeProxyVersion: fake
    operatingSystem: linux
EOF2
}

_k8s_etcd_ready() { curl -fsS --max-time 3 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
_k8s_apiserver_ready() { _k8s_kubectl get --raw /readyz >/dev/null; }
_k8s_node_ready() {
  [[ $(_k8s_kubectl get node "$K8S_NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
_k8s_default_sa() { _k8s_kubectl -n default get serviceaccount default >/dev/null; }

_k8s_start() {
  local c=$1
  shift
  start_bg "$c" "$K8S_RUN/$c.pid" "$K8S_RUN/$c.log" "$@"
}

_k8s_wait() {
  local c=$1 fn=$2
  wait_for "$c" "$K8S_READY_TIMEOUT" "$K8S_RUN/$c.log" "$K8S_RUN/$c.pid" "$fn" || {
    "${K8S_CLUSTER}_down"
    die "$K8S_CLUSTER: $c failed to become ready (logs: $K8S_RUN)"
  }
}

_k8s_all_alive() {
  local c
  for c in "${K8S_COMPONENTS[@]}"; do
    pid_alive "$K8S_RUN/$c.pid" || return 1
  done
}

# _k8s_cp_prepare: checks the ports, truncates the logs, writes a fresh CA, serving and
# service-account keys and the admin kubeconfig.
_k8s_cp_prepare() {
  local c
  require_port_free etcd "$ETCD_PORT"
  require_port_free etcd "$ETCD_PEER_PORT"
  require_port_free kube-apiserver "$K8S_APISERVER_PORT"
  mkdir -p "$K8S_RUN"
  : >"$K8S_LOG"
  for c in "${K8S_CP_COMPONENTS[@]}"; do : >"$K8S_RUN/$c.log"; done
  _k8s_pki
  _k8s_write_kubeconfig
}

# _k8s_cp_start: etcd, kube-apiserver (waits for both), controller-manager, scheduler.
_k8s_cp_start() {
  local pki=$K8S_RUN/pki
  rm -rf "$K8S_RUN/etcd"
  # --unsafe-no-fsync: test data only, and it makes etcd far faster on slow disks.
  _k8s_start etcd "$ETCD_BIN/etcd" --name datapipeline-e2e --data-dir "$K8S_RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "datapipeline-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn
  _k8s_wait etcd _k8s_etcd_ready

  # --advertise-address must be given: without it the apiserver picks the default
  # route's address. (For the `k8s` cluster, 127.0.0.1 is not accepted in the
  # `kubernetes` Endpoints, so K8S_APISERVER_EXTRA_ARGS turns the endpoint reconciler
  # off: nothing in a kwok cluster dials that Service.)
  _k8s_start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$K8S_APISERVER_ADDRESS" --advertise-address "$K8S_APISERVER_ADDRESS" \
    --secure-port "$K8S_APISERVER_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --token-auth-file "$pki/tokens.csv" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$K8S_SERVICE_CIDR" \
    --allow-privileged=true \
    --profiling=false \
    --cert-dir "$pki" \
    "${K8S_APISERVER_EXTRA_ARGS[@]}"
  _k8s_wait kube-apiserver _k8s_apiserver_ready

  # --secure-port 0: no serving port, so nothing can clash with 10257/10259.
  _k8s_start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$K8S_KUBECONFIG" \
    --controllers '*' \
    --leader-elect=false \
    --secure-port 0 \
    --use-service-account-credentials=false \
    --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range "$K8S_SERVICE_CIDR" \
    --profiling=false \
    "${K8S_KCM_EXTRA_ARGS[@]}"
  _k8s_start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$K8S_KUBECONFIG" \
    --leader-elect=false \
    --secure-port 0 \
    --profiling=false
}

# _k8s_cp_stop: stops the control plane (reverse order) and removes the etcd data.
_k8s_cp_stop() {
  local i
  for ((i = ${#K8S_CP_COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_pid "${K8S_CP_COMPONENTS[$i]}" "$K8S_RUN/${K8S_CP_COMPONENTS[$i]}.pid" "${K8S_STOP_TIMEOUT:-20}"
  done
  rm -rf "$K8S_RUN/etcd"
}

k8s_up() {
  mkdir -p "$K8S_RUN"
  local c
  if _k8s_all_alive; then
    _k8s_wait kube-apiserver _k8s_apiserver_ready
    log "k8s already running at $K8S_APISERVER_URL"
    return 0
  fi
  # A partial control plane (some component died) is restarted from scratch.
  for c in "${K8S_COMPONENTS[@]}"; do
    if pid_alive "$K8S_RUN/$c.pid"; then
      log "k8s: partial control plane found; restarting it"
      k8s_down
      break
    fi
  done
  _k8s_cp_prepare
  : >"$K8S_RUN/kwok.log"
  _k8s_cp_start

  _k8s_kwok_config >"$K8S_RUN/kwok.yaml"
  _k8s_start kwok "$KWOK_BIN/kwok" \
    --kubeconfig "$K8S_KUBECONFIG" \
    --config "$K8S_RUN/kwok.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds 40 \
    --cidr "$K8S_POD_CIDR"

  # kwok's default StorageClass for its volume stages (see _k8s_kwok_config).
  if ! _k8s_kubectl apply -f "$KWOK_BIN/../stage/volume/fast/storage-class.yaml" >>"$K8S_LOG" 2>&1 ||
    ! _k8s_node_manifest | _k8s_kubectl apply -f - >>"$K8S_LOG" 2>&1; then
    tail -n 80 "$K8S_LOG" >&2
    k8s_down
    die "k8s: could not create the StorageClass / node $K8S_NODE_NAME (see $K8S_LOG)"
  fi

  _k8s_wait kwok _k8s_node_ready
  _k8s_wait kube-controller-manager _k8s_default_sa
  pid_alive "$K8S_RUN/kube-scheduler.pid" || _k8s_wait kube-scheduler false
  log "k8s ready at $K8S_APISERVER_URL (KUBECONFIG=$K8S_KUBECONFIG)"
}

k8s_down() {
  stop_pid kwok "$K8S_RUN/kwok.pid" "${K8S_STOP_TIMEOUT:-20}"
  _k8s_cp_stop
}

k8s_status() {
  local c down=()
  for c in "${K8S_COMPONENTS[@]}"; do
    pid_alive "$K8S_RUN/$c.pid" || down+=("$c")
  done
  if [[ ${#down[@]} -eq 0 ]] && _k8s_apiserver_ready >/dev/null 2>&1; then
    echo "k8s        running  $K8S_APISERVER_URL (KUBECONFIG=$K8S_KUBECONFIG)"
  elif [[ ${#down[@]} -eq ${#K8S_COMPONENTS[@]} ]]; then
    echo "k8s        stopped  $K8S_APISERVER_URL"
    return 1
  else
    echo "k8s        degraded $K8S_APISERVER_URL (not running: ${down[*]})"
    return 1
  fi
}

k8s_env() {
  echo "export KUBECONFIG=$K8S_KUBECONFIG"
  echo "export KUBECTL=$K8S_BIN/kubectl HELM=$HELM_BIN/helm KWOK=$KWOK_BIN/kwok"
}

# Functional check, in a throwaway namespace: Deployment 2/2 ready, StatefulSet with a
# PVC template ready (PVCs Bound through kwok's volume stages), CRD + custom object,
# and garbage collection of a child whose ownerReference points at a deleted owner.
k8s_smoke() {
  local ns=smoke-$$-$RANDOM uid i
  local -a k=(_k8s_kubectl -n "$ns")
  _k8s_kubectl create namespace "$ns" >/dev/null
  for ((i = 0; i < 60; i++)); do
    "${k[@]}" get serviceaccount default >/dev/null 2>&1 && break
    sleep 1
  done
  "${k[@]}" apply -f "$SERVICES_DIR/k8s/smoke.yaml" >/dev/null
  "${k[@]}" rollout status deployment/web --timeout=120s >/dev/null ||
    die "k8s smoke: deployment not ready"
  "${k[@]}" rollout status statefulset/db --timeout=120s >/dev/null ||
    die "k8s smoke: statefulset not ready"
  [[ $("${k[@]}" get pvc -o jsonpath='{range .items[*]}{.status.phase}{" "}{end}') == "Bound Bound " ]] ||
    die "k8s smoke: PVCs not Bound"
  _k8s_kubectl wait --for condition=Established crd/widgets.smoke.datapipeline.local --timeout=60s >/dev/null
  printf 'apiVersion: smoke.datapipeline.local/v1\nkind: Widget\nmetadata: {name: owner}\nspec: {size: 1}\n' |
    "${k[@]}" apply -f - >/dev/null
  uid=$("${k[@]}" get widget owner -o jsonpath='{.metadata.uid}')
  cat <<EOF2 | "${k[@]}" apply -f - >/dev/null
apiVersion: v1
kind: ConfigMap
metadata:
  name: child
  ownerReferences:
  - {apiVersion: smoke.datapipeline.local/v1, kind: Widget, name: owner, uid: $uid}
data: {k: v}
EOF2
  "${k[@]}" delete widget owner --wait=true >/dev/null
  "${k[@]}" wait --for=delete configmap/child --timeout=60s >/dev/null ||
    die "k8s smoke: child not garbage-collected"
  _k8s_kubectl delete namespace "$ns" --wait=false >/dev/null
  _k8s_kubectl delete crd widgets.smoke.datapipeline.local --wait=false >/dev/null
  log "k8s smoke ok (deployment 2/2, statefulset+PVCs, CRD, garbage collection)"
}
