# shellcheck shell=bash disable=SC2317
# A second, separate Kubernetes cluster with ONE REAL NODE on this host (the real-pod
# tier), sourced by e2e/services.sh. The kwok cluster of k8s.sh never sees it.
#
# `e2e/services.sh up node` (needs root; not in the default service list):
#  - host network: a bridge $NODE_BRIDGE (dpnode0) with the gateway $NODE_IP
#    (10.201.0.1/24); a route for the service range onto that bridge (so a ClusterIP
#    never leaves through the default route); ip_forward on; bridged traffic through
#    iptables (br_netfilter); an iptables chain DPNODE-FORWARD that accepts pod<->pod
#    traffic on the bridge and DROPS everything the pods try to forward anywhere else
#    (no masquerading: pods reach only each other, Services and this host's $NODE_IP).
#  - its own etcd + kube-apiserver + controller-manager + scheduler (the functions of
#    k8s.sh, run with this cluster's variables, see _node_cp). The apiserver listens on
#    $NODE_IP:$NODE_APISERVER_PORT only and is advertised there, so the `kubernetes`
#    Service (10.202.0.1:443) reaches it from pods; its certificate also names $NODE_IP.
#  - containerd: Debian's /usr/bin/containerd (1.6, CRI plugin on) as its own instance:
#    own config, root, state, socket under $NODE_RUN/containerd (dockerd's containerd is
#    not touched), runc with cgroupfs, snapshotter overlayfs, CNI from /usr/lib/cni
#    (bridge + host-local + loopback + portmap), sandbox_image = $NODE_PAUSE_IMAGE,
#    which is built here from kubernetes' build/pause/linux/pause.c and imported.
#    containerd runs with HTTP(S)_PROXY=http://127.0.0.1:9, so an image that is not
#    present can never be pulled from anywhere (the pull fails at once).
#  - kubelet (built with the control plane) on that socket, joined with the admin
#    kubeconfig; pods' cgroups under /dpnode in every v1 hierarchy; clusterDNS = $NODE_IP.
#  - kube-proxy (iptables mode) as a host process: ClusterIPs work from pods and from
#    the host.
#  - CoreDNS (built from its Go module) on $NODE_IP:53 with the `kubernetes` plugin
#    only (cluster.local, pods insecure) and NO forward plugin: other names fail
#    (REFUSED); no DNS query ever leaves this host. Pods' resolv.conf lists only it.
#  - storage: a default StorageClass `local` (WaitForFirstConsumer) served by
#    e2e/services/node/provisioner.sh, a polling loop that creates a `local` PV in a 0777
#    directory under $NODE_RUN/pv for each claim the scheduler has placed, any size, and
#    deletes it once its claim is gone (static PVs would be used up after a few
#    namespaces are deleted: `local` PVs are never recycled).
# Ready when the Node is Ready, CoreDNS is ready and the default ServiceAccount exists.
#
# Exported by `e2e/services.sh env`:
#   NODE_KUBECONFIG       admin kubeconfig (server https://$NODE_IP:$NODE_APISERVER_PORT)
#   NODE_APISERVER_URL    https://10.201.0.1:16444
#   NODE_CONTAINERD_SOCK  the node's containerd socket. Images get into the node only by
#                         import: docker save IMG | ctr -a $NODE_CONTAINERD_SOCK -n k8s.io images import -
#                         and pods use imagePullPolicy Never or IfNotPresent.
#   NODE_NAME_K8S         the Node's name (dp-node-0)
#   NODE_IP               the node's InternalIP = bridge gateway; also where host
#                         processes must listen to be reachable from pods
#   NODE_POD_CIDR NODE_SERVICE_CIDR NODE_STORAGE_CLASS
# (KUBECTL comes from the k8s service's lines.)
#
# `down node` stops everything, kills what is left of the pods (force-deletes them so
# the kubelet tears down their sandboxes, then kills remaining tasks through containerd
# and any process left in the /dpnode cgroups), unmounts everything under $NODE_RUN,
# runs `kube-proxy --cleanup`, removes our iptables chain, the route and the bridge,
# restores the kernel tunables the kubelet changed (vm.overcommit_memory, kernel.panic,
# kernel.panic_on_oops, ...), and deletes the node's data (images included); the logs
# stay in $NODE_RUN.
#
# Found by running it here (Debian 12 host, cgroup v1, kernel without modules):
#  - br_netfilter is built into this kernel (/proc/sys/net/bridge exists). Where it is
#    a module we try modprobe; if it cannot be had, kube-proxy runs with
#    masqueradeAll (service traffic is SNATed to the gateway, so replies between two
#    pods on the bridge still pass back through the host) and a warning is printed.
#  - dockerd sets the FORWARD policy to DROP: without DPNODE-FORWARD, bridged pod
#    traffic (seen by iptables through br_netfilter) is dropped.
#  - The kubelet sets kernel tunables on start (protectKernelDefaults=false; true would
#    make it refuse to start, as this host's values differ): down restores them.
#  - kube-apiserver resolves node addresses by type: --kubelet-preferred-address-types
#    InternalIP, otherwise it would look up the node name in the host's DNS.
#  - root here lacks CAP_SYS_RESOURCE: no process may lower its oom_score_adj, so the
#    kubelet's -998 for pod sandboxes made runc fail ("can't get final child's PID
#    from pipe: EOF"). containerd runs with restrict_oom_score_adj, kubelet and
#    kube-proxy with oomScoreAdj 0. (The kubelet also logs that it cannot raise its
#    open-files limit; harmless.)
#  - k8s.sh's _k8s_write_kubeconfig leaves umask 077 in the shell: containerd inherited
#    it and unpacked images with 0700 snapshot roots, which non-root containers cannot
#    read. node_up resets the umask to 022 before starting anything.
#  - containerd 1.6 has no RuntimeConfig CRI call; the kubelet logs that once and uses
#    its own cgroupDriver (cgroupfs), as intended.
#  - The pause.c of k8s v1.34.4 is upstream's 3.10.1; the image is tagged
#    $NODE_PAUSE_IMAGE (3.10) as containerd's sandbox_image names it.

COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
NODE_PAUSE_IMAGE=${NODE_PAUSE_IMAGE:-registry.k8s.io/pause:3.10}
NODE_APISERVER_PORT=${NODE_APISERVER_PORT:-16444}
NODE_ETCD_PORT=${NODE_ETCD_PORT:-12381}
NODE_ETCD_PEER_PORT=${NODE_ETCD_PEER_PORT:-12382}
NODE_KUBELET_PORT=${NODE_KUBELET_PORT:-10350}
NODE_KUBELET_HEALTHZ_PORT=${NODE_KUBELET_HEALTHZ_PORT:-10348}
NODE_PROXY_HEALTHZ_PORT=${NODE_PROXY_HEALTHZ_PORT:-10366}
NODE_PROXY_METRICS_PORT=${NODE_PROXY_METRICS_PORT:-10369}
NODE_DNS_READY_PORT=${NODE_DNS_READY_PORT:-18181}
NODE_BRIDGE=${NODE_BRIDGE:-dpnode0}
NODE_POD_CIDR=${NODE_POD_CIDR:-10.201.0.0/24}
NODE_SERVICE_CIDR=${NODE_SERVICE_CIDR:-10.202.0.0/24}
NODE_NAME_K8S=${NODE_NAME_K8S:-dp-node-0}
NODE_READY_TIMEOUT=${NODE_READY_TIMEOUT:-180}

# Derived, not overridable (an exported NODE_* from `env` must not change them).
NODE_IP=${NODE_POD_CIDR%.*}.1
NODE_RUN=$(run_dir node)
NODE_LOG=$NODE_RUN/node.log
NODE_KUBECONFIG=$NODE_RUN/kubeconfig
NODE_APISERVER_URL=https://$NODE_IP:$NODE_APISERVER_PORT
NODE_CONTAINERD_DIR=$NODE_RUN/containerd
NODE_CONTAINERD_SOCK=$NODE_CONTAINERD_DIR/containerd.sock
NODE_KUBELET_DIR=$NODE_RUN/kubelet
NODE_CGROUP=dpnode
NODE_FWD_CHAIN=DPNODE-FORWARD
NODE_STORAGE_CLASS=local
COREDNS_BIN=$(cache_dir coredns "$COREDNS_VERSION")/bin
# The pause binary comes from the kubernetes module of K8S_VERSION.
NODE_PAUSE_DIR=$(cache_dir pause "$K8S_VERSION")
CNI_BIN_DIR=${CNI_BIN_DIR:-/usr/lib/cni}

# Our processes (down stops the controllers first, then kubelet, containerd, the rest).
NODE_HOST_COMPONENTS=(containerd coredns kube-proxy kubelet provisioner)
NODE_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler "${NODE_HOST_COMPONENTS[@]}")
# What the kubelet writes on start (setupKernelTunables); restored by down.
NODE_KERNEL_TUNABLES=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

# ---------------------------------------------------------------- install

_node_build_coredns() {
  _k8s_go_install "$1" "github.com/coredns/coredns@$COREDNS_VERSION"
  "$1/bin/coredns" -version >&2
}

# The sandbox image: kubernetes' own pause.c (from the k8s.io/kubernetes module),
# static, in a one-file OCI image (USER 65535, ENTRYPOINT /pause as upstream's
# Dockerfile), written as an OCI image-layout tar that `ctr images import` reads. The
# name is set at import time (io.containerd.image.name), not here.
_node_build_pause() {
  local out=$1 dir tag
  dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
  [[ -f $dir/build/pause/linux/pause.c ]] || { log "no build/pause/linux/pause.c in $dir"; return 1; }
  tag=$(sed -n 's/^TAG ?= //p' "$dir/build/pause/Makefile")
  mkdir -p "$out/bin" "$out/rootfs"
  "${NICE[@]}" gcc -Os -Wall -Werror -static -DVERSION="v$tag-$K8S_VERSION" \
    -o "$out/bin/pause" "$dir/build/pause/linux/pause.c"
  strip "$out/bin/pause"
  "$out/bin/pause" -v >&2
  install -m 0755 "$out/bin/pause" "$out/rootfs/pause"
  echo "$tag" >"$out/upstream-tag"
}

node_install() {
  command -v go >/dev/null || die "node: go is required"
  command -v gcc >/dev/null || die "node: gcc is required (the pause binary)"
  cache_build etcd "$ETCD_VERSION" _k8s_build_etcd
  cache_build kube "$K8S_VERSION-node" _k8s_build_kube
  cache_build coredns "$COREDNS_VERSION" _node_build_coredns
  cache_build pause "$K8S_VERSION" _node_build_pause
}

# ---------------------------------------------------------------- runtime
#
# Layout of $NODE_RUN (= $DATAPIPELINE_RUN/node):
#   node.log                 this harness' own steps
#   <component>.log/.pid     etcd kube-apiserver kube-controller-manager kube-scheduler
#                            containerd coredns kube-proxy kubelet provisioner
#   pki/ kubeconfig          as k8s.sh, plus the apiserver's client cert for the kubelet
#   containerd/              config.toml, root/, state/, containerd.sock
#   cni/                     net.d/ (the bridge conflist), ipam/ (host-local leases)
#   kubelet/ kubelet.yaml resolv.conf pod-logs/   the kubelet's root dir and config
#   kube-proxy.yaml Corefile pause-image.tar
#   pv/                      the provisioner's volumes
#   kernel-tunables          values before the kubelet changed them (down restores)

_node_kubectl() {
  "$K8S_BIN/kubectl" --kubeconfig "$NODE_KUBECONFIG" --request-timeout=10s "$@"
}
_node_ctr() { ctr -a "$NODE_CONTAINERD_SOCK" -n k8s.io "$@"; }

# _node_cp CMD...: runs CMD, a control-plane function of k8s.sh, for this cluster: the
# variables those functions read are redeclared here as locals, which CMD sees.
# shellcheck disable=SC2034
_node_cp() {
  local K8S_CLUSTER=node K8S_CONTEXT=datapipeline-e2e-node
  local K8S_RUN=$NODE_RUN K8S_LOG=$NODE_LOG K8S_KUBECONFIG=$NODE_KUBECONFIG
  local K8S_APISERVER_URL=$NODE_APISERVER_URL K8S_APISERVER_PORT=$NODE_APISERVER_PORT
  local ETCD_PORT=$NODE_ETCD_PORT ETCD_PEER_PORT=$NODE_ETCD_PEER_PORT
  local K8S_SERVICE_CIDR=$NODE_SERVICE_CIDR K8S_APISERVER_ADDRESS=$NODE_IP
  local K8S_EXTRA_SANS=",IP:$NODE_IP"
  local K8S_READY_TIMEOUT=$NODE_READY_TIMEOUT
  # The default endpoint reconciler publishes $NODE_IP:port as the `kubernetes`
  # Service's endpoint. The kubelet is dialled at its InternalIP with a client
  # certificate (for logs/exec/port-forward), never by name through the host's DNS.
  local -a K8S_APISERVER_EXTRA_ARGS=(
    --kubelet-client-certificate "$NODE_RUN/pki/kubelet-client.crt"
    --kubelet-client-key "$NODE_RUN/pki/kubelet-client.key"
    --kubelet-preferred-address-types InternalIP
  )
  local -a K8S_KCM_EXTRA_ARGS=(
    --allocate-node-cidrs=true --cluster-cidr "$NODE_POD_CIDR"
    --node-cidr-mask-size "${NODE_POD_CIDR#*/}"
  )
  "$@"
}

_node_start() {
  local c=$1
  shift
  start_bg "$c" "$NODE_RUN/$c.pid" "$NODE_RUN/$c.log" "$@"
}

_node_wait() {
  local c=$1 fn=$2
  wait_for "$c" "$NODE_READY_TIMEOUT" "$NODE_RUN/$c.log" "$NODE_RUN/$c.pid" "$fn" || {
    node_down
    die "node: $c failed to become ready (logs: $NODE_RUN)"
  }
}

# _node_fail MESSAGE: prints the tail of our own log, stops everything, exits.
_node_fail() {
  log "node: $1; last 40 lines of $NODE_LOG:"
  tail -n 40 "$NODE_LOG" >&2 || true
  node_down
  die "node: $1"
}

# ---- host network

# Without br_netfilter, iptables does not see traffic between two ports of the bridge,
# so a reply from a Service's pod to a client pod on the same bridge would skip the
# un-DNAT; kube-proxy's masqueradeAll then routes it back through the host instead.
_node_br_netfilter() {
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && return 0
  command -v modprobe >/dev/null && modprobe br_netfilter 2>/dev/null
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]
}

# (Called in an `||` list, where set -e does not apply: every step checks itself.)
_node_net_up() {
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge || return
  fi
  ip addr replace "$NODE_IP/${NODE_POD_CIDR#*/}" dev "$NODE_BRIDGE" || return
  # IPv4 only: no router solicitations or other IPv6 chatter on the bridge.
  sysctl -qw "net.ipv6.conf.$NODE_BRIDGE.disable_ipv6=1" 2>/dev/null || true
  ip link set "$NODE_BRIDGE" up || return
  ip route replace "$NODE_SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP" || return
  sysctl -qw net.ipv4.ip_forward=1 || return
  if _node_br_netfilter; then
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 || return
    NODE_MASQUERADE_ALL=false
  else
    log "node: WARNING: br_netfilter is not available; kube-proxy runs with masqueradeAll"
    NODE_MASQUERADE_ALL=true
  fi
  { iptables -w -N "$NODE_FWD_CHAIN" 2>/dev/null || iptables -w -F "$NODE_FWD_CHAIN"; } &&
    iptables -w -A "$NODE_FWD_CHAIN" -i "$NODE_BRIDGE" -o "$NODE_BRIDGE" -j ACCEPT &&
    iptables -w -A "$NODE_FWD_CHAIN" -i "$NODE_BRIDGE" -j DROP &&
    iptables -w -A "$NODE_FWD_CHAIN" -o "$NODE_BRIDGE" -j DROP &&
    { iptables -w -C FORWARD -j "$NODE_FWD_CHAIN" 2>/dev/null ||
      iptables -w -I FORWARD 1 -j "$NODE_FWD_CHAIN"; }
}

# Rules the portmap plugin left for pods whose sandboxes were never torn down (hostPort
# pods killed by down's fallback): the jumps from CNI-HOSTPORT-DNAT tagged with our
# network name, and the per-pod chains they point to.
_node_portmap_cleanup() {
  local chains n c
  chains=$(iptables -w -t nat -S CNI-HOSTPORT-DNAT 2>/dev/null |
    sed -n 's/.*dnat name: \\"dpnode\\".* -j \(CNI-DN-[0-9a-f]*\).*/\1/p') || true
  for c in $chains; do
    while n=$(iptables -w -t nat -L CNI-HOSTPORT-DNAT --line-numbers -n 2>/dev/null |
      awk -v c="$c" '$2 == c {print $1; exit}') && [[ -n $n ]]; do
      iptables -w -t nat -D CNI-HOSTPORT-DNAT "$n"
    done
    iptables -w -t nat -F "$c" 2>/dev/null || true
    iptables -w -t nat -X "$c" 2>/dev/null || true
  done
}

_node_net_down() {
  while iptables -w -D FORWARD -j "$NODE_FWD_CHAIN" 2>/dev/null; do :; done
  iptables -w -F "$NODE_FWD_CHAIN" 2>/dev/null || true
  iptables -w -X "$NODE_FWD_CHAIN" 2>/dev/null || true
  _node_portmap_cleanup
  ip route del "$NODE_SERVICE_CIDR" dev "$NODE_BRIDGE" 2>/dev/null || true
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
}

# ---- cgroups: the kubelet's cgroupRoot /dpnode must exist in every v1 hierarchy.

_node_cgroup_dirs() {
  local d
  for d in /sys/fs/cgroup/*/; do
    [[ -e $d/cgroup.procs ]] && printf '%s%s\n' "$d" "$NODE_CGROUP"
  done
  return 0
}

_node_cgroups_up() {
  local d
  while read -r d; do
    mkdir -p "$d"
  done < <(_node_cgroup_dirs)
  # A new cpuset starts with no cpus/mems; give it the parent's.
  if [[ -d /sys/fs/cgroup/cpuset/$NODE_CGROUP ]]; then
    [[ -n $(<"/sys/fs/cgroup/cpuset/$NODE_CGROUP/cpuset.cpus") ]] ||
      cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$NODE_CGROUP/cpuset.cpus"
    [[ -n $(<"/sys/fs/cgroup/cpuset/$NODE_CGROUP/cpuset.mems") ]] ||
      cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$NODE_CGROUP/cpuset.mems"
  fi
}

# Every process left in our cgroups (containers of a pod the kubelet did not stop).
_node_cgroup_pids() {
  local d
  while read -r d; do
    if [[ -d $d ]]; then find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done < <(_node_cgroup_dirs) | sort -u
}

_node_cgroups_down() {
  local d i pids
  for ((i = 0; i < 10; i++)); do
    pids=$(_node_cgroup_pids)
    [[ -z $pids ]] && break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  done
  while read -r d; do
    [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done < <(_node_cgroup_dirs)
  return 0
}

# ---- kernel tunables the kubelet sets

_node_save_tunables() {
  [[ -s $NODE_RUN/kernel-tunables ]] && return 0 # already saved by an earlier up
  local t
  for t in "${NODE_KERNEL_TUNABLES[@]}"; do
    if [[ -r /proc/sys/$t ]]; then printf '%s %s\n' "$t" "$(<"/proc/sys/$t")"; fi
  done >"$NODE_RUN/kernel-tunables.tmp"
  mv -f "$NODE_RUN/kernel-tunables.tmp" "$NODE_RUN/kernel-tunables"
}

_node_restore_tunables() {
  local t v
  [[ -s $NODE_RUN/kernel-tunables ]] || return 0
  while read -r t v; do
    [[ $(<"/proc/sys/$t") == "$v" ]] || echo "$v" >"/proc/sys/$t" || true
  done <"$NODE_RUN/kernel-tunables"
  rm -f "$NODE_RUN/kernel-tunables"
}

# ---- mounts under the run dir (kubelet volumes, its rshared root, container rootfs,
# sandbox shm, network namespaces)

_node_mounts() {
  awk -v p="$NODE_RUN/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r
}

_node_unmount_all() {
  local m i
  for ((i = 0; i < 5; i++)); do
    [[ -z $(_node_mounts) ]] && return 0
    while read -r m; do
      [[ -n $m ]] && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
    done < <(_node_mounts)
  done
  [[ -z $(_node_mounts) ]]
}

# ---- configuration files

_node_containerd_config() {
  cat <<EOF
# Written by e2e/services/node.sh: a containerd of its own for the node's kubelet.
version = 2
root = "$NODE_CONTAINERD_DIR/root"
state = "$NODE_CONTAINERD_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$NODE_CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_CONTAINERD_DIR/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$NODE_PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Network namespaces as files under our state dir (not /var/run/netns).
  netns_mounts_under_state_dir = true
  enable_selinux = false
  # No container gets an OOM score below containerd's own (0): the kubelet asks for
  # -998 for sandboxes, which needs CAP_SYS_RESOURCE, and this host's root lacks it
  # (runc then fails with "can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        # runc's state under ours (the default is /run/containerd/runc).
        Root = "$NODE_CONTAINERD_DIR/state/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$NODE_RUN/cni/net.d"
    max_conf_num = 1
EOF
}

_node_cni_config() {
  cat <<EOF
{
  "cniVersion": "0.4.0",
  "name": "dpnode",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE_RUN/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}
  ]
}
EOF
}

_node_kubelet_config() {
  cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$NODE_CONTAINERD_SOCK
address: $NODE_IP
port: $NODE_KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $NODE_KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $NODE_RUN/pki/ca.crt}
authorization: {mode: Webhook}
# cgroup v1 (this host): 1.34 still runs on it when failCgroupV1 is false (1.35 flips
# the default); cgroupfs, as containerd's runc (SystemdCgroup = false).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
failSwapOn: false
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: $NODE_RUN/resolv.conf
podCIDR: $NODE_POD_CIDR
podLogsDir: $NODE_RUN/pod-logs
volumePluginDir: $NODE_RUN/volume-plugins
maxPods: 110
serializeImagePulls: false
# No image GC (100 % never reached) and eviction only on a really full disk or memory.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
  imagefs.inodesFree: 1%
evictionPressureTransitionPeriod: 30s
# The default -999 needs CAP_SYS_RESOURCE (see restrict_oom_score_adj in containerd's).
oomScoreAdj: 0
EOF
}

_node_kube_proxy_config() {
  cat <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $NODE_KUBECONFIG}
hostnameOverride: $NODE_NAME_K8S
bindAddress: $NODE_IP
clusterCIDR: $NODE_POD_CIDR
detectLocalMode: ClusterCIDR
oomScoreAdj: 0
healthzBindAddress: 127.0.0.1:$NODE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$NODE_PROXY_METRICS_PORT
# NodePorts only on the node's bridge address, never on eth0 or 127.0.0.1.
nodePortAddresses: [$NODE_IP/32]
iptables:
  masqueradeAll: $NODE_MASQUERADE_ALL
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 1s
# Leave the host's conntrack sysctls alone (shared with dockerd).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# Only the cluster zones: any other name is REFUSED at once (no forward plugin, no
# upstream), so nothing is ever sent to the host's resolver.
_node_corefile() {
  cat <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    ready 127.0.0.1:$NODE_DNS_READY_PORT
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $NODE_KUBECONFIG datapipeline-e2e-node
        pods insecure
        ttl 5
    }
    cache 5
}
EOF
}

_node_storage_class() {
  cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $NODE_STORAGE_CLASS
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: datapipeline.local/local-dir
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
EOF
}

# OCI image layout of the pause rootfs, with the image name as containerd's import
# annotation; every blob's digest computed here.
_node_pause_image_tar() {
  local out=$1 work config manifest lsum csum msum
  work=$(mktemp -d "$NODE_RUN/.pause.XXXXXX")
  mkdir -p "$work/blobs/sha256"
  tar --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$NODE_PAUSE_DIR/rootfs" -cf "$work/layer.tar" pause
  lsum=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  mv "$work/layer.tar" "$work/blobs/sha256/$lsum"
  config='{"architecture":"amd64","os":"linux","config":{"User":"65535:65535","Entrypoint":["/pause"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:'$lsum'"]}}'
  csum=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
  printf '%s' "$config" >"$work/blobs/sha256/$csum"
  manifest='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'$csum'","size":'${#config}'},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:'$lsum'","size":'$(stat -c %s "$work/blobs/sha256/$lsum")'}]}'
  msum=$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)
  printf '%s' "$manifest" >"$work/blobs/sha256/$msum"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$msum" "${#manifest}" "$NODE_PAUSE_IMAGE" "${NODE_PAUSE_IMAGE##*:}" >"$work/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
  tar -C "$work" -cf "$out" oci-layout index.json blobs
  rm -rf "$work"
}

# ---- readiness checks

_node_containerd_ready() {
  ctr -a "$NODE_CONTAINERD_SOCK" plugins ls 2>/dev/null |
    awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" && $NF == "ok" {ok = 1} END {exit !ok}'
}
_node_dns_ready() { curl -fsS --max-time 3 "http://127.0.0.1:$NODE_DNS_READY_PORT/ready" >/dev/null; }
_node_proxy_ready() { curl -fsS --max-time 3 "http://127.0.0.1:$NODE_PROXY_HEALTHZ_PORT/healthz" >/dev/null; }
_node_node_ready() {
  [[ $(_node_kubectl get node "$NODE_NAME_K8S" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
_node_default_sa() { _node_kubectl -n default get serviceaccount default >/dev/null; }

_node_all_alive() {
  local c
  for c in "${NODE_COMPONENTS[@]}"; do
    pid_alive "$NODE_RUN/$c.pid" || return 1
  done
}

_node_require_tools() {
  [[ $(id -u) -eq 0 ]] || die "node: needs root (bridge, iptables, mounts, cgroups)"
  local t
  for t in containerd ctr runc iptables ip conntrack mount umount curl openssl; do
    command -v "$t" >/dev/null || die "node: $t is missing (e2e/install-prerequisites.sh)"
  done
  for t in bridge host-local loopback portmap; do
    [[ -x $CNI_BIN_DIR/$t ]] || die "node: CNI plugin $CNI_BIN_DIR/$t is missing (containernetworking-plugins)"
  done
  [[ -d /sys/fs/cgroup/memory ]] || die "node: this harness expects cgroup v1 (as this host); /sys/fs/cgroup/memory is missing"
}

node_up() {
  _node_require_tools
  mkdir -p "$NODE_RUN"
  if _node_all_alive && _node_node_ready >/dev/null 2>&1; then
    log "node already running at $NODE_APISERVER_URL (node $NODE_NAME_K8S Ready)"
    return 0
  fi
  # Anything left of an earlier run (partial, or crashed) is torn down first.
  local c
  for c in "${NODE_COMPONENTS[@]}"; do
    if pid_alive "$NODE_RUN/$c.pid"; then
      log "node: partial node cluster found; restarting it"
      break
    fi
  done
  node_down || die "node: could not clean up what an earlier run left (see above)"
  require_port_free kubelet "$NODE_KUBELET_HEALTHZ_PORT"
  require_port_free kube-proxy "$NODE_PROXY_HEALTHZ_PORT"
  require_port_free coredns "$NODE_DNS_READY_PORT"

  local t0=$SECONDS
  # (_k8s_cp_prepare truncates $NODE_LOG: host setup is logged after it.)
  _node_cp _k8s_cp_prepare
  # _k8s_write_kubeconfig leaves umask 077 behind; containerd would inherit it and
  # create every snapshot's root 0700, so no non-root container could read its own
  # image (bash: error while loading shared libraries: ... Permission denied).
  umask 022
  for c in "${NODE_HOST_COMPONENTS[@]}"; do : >"$NODE_RUN/$c.log"; done
  _node_net_up >>"$NODE_LOG" 2>&1 || _node_fail "host network setup failed"
  _node_cgroups_up >>"$NODE_LOG" 2>&1

  # The apiserver's client certificate for the kubelet API (logs, exec, port-forward),
  # in system:masters so the kubelet's webhook authorization allows it.
  (
    cd "$NODE_RUN/pki" || exit
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout kubelet-client.key -out kubelet-client.csr \
      -subj "/O=system:masters/CN=kube-apiserver-kubelet-client"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >kubelet-client.ext
    openssl x509 -req -sha256 -days 3650 -in kubelet-client.csr -CA ca.crt -CAkey ca.key \
      -CAcreateserial -extfile kubelet-client.ext -out kubelet-client.crt
    chmod 600 kubelet-client.key
  ) >>"$NODE_LOG" 2>&1

  _node_cp _k8s_cp_start
  log "node: control plane up at $NODE_APISERVER_URL ($((SECONDS - t0)) s)"

  # containerd + the sandbox image.
  mkdir -p "$NODE_CONTAINERD_DIR" "$NODE_RUN/cni/net.d" "$NODE_RUN/cni/ipam"
  _node_containerd_config >"$NODE_CONTAINERD_DIR/config.toml"
  _node_cni_config >"$NODE_RUN/cni/net.d/10-dpnode.conflist"
  # The proxy makes every registry pull fail at once: images come only by import.
  _node_start containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
    http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy= \
    containerd --config "$NODE_CONTAINERD_DIR/config.toml"
  _node_wait containerd _node_containerd_ready
  _node_pause_image_tar "$NODE_RUN/pause-image.tar"
  if ! _node_ctr images import "$NODE_RUN/pause-image.tar" >>"$NODE_LOG" 2>&1 ||
    ! _node_ctr images ls -q | grep -xF "$NODE_PAUSE_IMAGE" >/dev/null; then
    _node_fail "importing the pause image as $NODE_PAUSE_IMAGE failed"
  fi

  # Storage class + its provisioner, CoreDNS, kube-proxy, kubelet.
  _node_storage_class | _node_kubectl apply -f - >>"$NODE_LOG" 2>&1 ||
    _node_fail "could not create the StorageClass"
  mkdir -p "$NODE_RUN/pv"
  chmod 0755 "$NODE_RUN/pv"
  _node_start provisioner bash "$SERVICES_DIR/node/provisioner.sh" "$K8S_BIN/kubectl" \
    "$NODE_KUBECONFIG" "$NODE_RUN/pv" "$NODE_NAME_K8S"

  _node_corefile >"$NODE_RUN/Corefile"
  _node_start coredns "$COREDNS_BIN/coredns" -conf "$NODE_RUN/Corefile"

  _node_kube_proxy_config >"$NODE_RUN/kube-proxy.yaml"
  _node_start kube-proxy "$K8S_BIN/kube-proxy" --config "$NODE_RUN/kube-proxy.yaml" --v=1

  # Pods (dnsPolicy Default, hostNetwork) get this instead of the host's resolv.conf.
  printf 'nameserver %s\n' "$NODE_IP" >"$NODE_RUN/resolv.conf"
  mkdir -p "$NODE_KUBELET_DIR" "$NODE_RUN/pod-logs" "$NODE_RUN/volume-plugins"
  _node_kubelet_config >"$NODE_RUN/kubelet.yaml"
  _node_save_tunables
  _node_start kubelet "$K8S_BIN/kubelet" --config "$NODE_RUN/kubelet.yaml" \
    --kubeconfig "$NODE_KUBECONFIG" --root-dir "$NODE_KUBELET_DIR" \
    --hostname-override "$NODE_NAME_K8S" --node-ip "$NODE_IP" --v=1

  _node_wait kubelet _node_node_ready
  _node_wait coredns _node_dns_ready
  _node_wait kube-proxy _node_proxy_ready
  _node_wait kube-controller-manager _node_default_sa
  for c in kube-scheduler provisioner; do
    pid_alive "$NODE_RUN/$c.pid" || _node_wait "$c" false
  done
  log "node ready in $((SECONDS - t0)) s: $NODE_NAME_K8S at $NODE_APISERVER_URL (NODE_KUBECONFIG=$NODE_KUBECONFIG, NODE_CONTAINERD_SOCK=$NODE_CONTAINERD_SOCK)"
}

# Force-deletes every pod so the kubelet stops them and tears down their sandboxes
# (CNI DEL), with the controllers already stopped so nothing is recreated. Best effort.
_node_drain() {
  pid_alive "$NODE_RUN/kube-apiserver.pid" && pid_alive "$NODE_RUN/kubelet.pid" &&
    pid_alive "$NODE_RUN/containerd.pid" || return 0
  _node_kubectl delete pods --all -A --force --grace-period=0 --wait=false >/dev/null 2>&1 || return 0
  local i
  for ((i = 0; i < ${NODE_DRAIN_TIMEOUT:-30}; i++)); do
    [[ -z $(_node_ctr tasks ls -q 2>/dev/null) ]] && return 0
    sleep 1
  done
  log "node: pods still running after ${NODE_DRAIN_TIMEOUT:-30}s; killing them"
}

# Kills and deletes whatever containerd still runs (task + container + snapshot).
_node_kill_tasks() {
  pid_alive "$NODE_RUN/containerd.pid" || return 0
  local id
  for id in $(_node_ctr tasks ls -q 2>/dev/null); do
    _node_ctr tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  sleep 1
  for id in $(_node_ctr tasks ls -q 2>/dev/null); do
    _node_ctr tasks delete -f "$id" >/dev/null 2>&1 || true
  done
  for id in $(_node_ctr containers ls -q 2>/dev/null); do
    _node_ctr containers delete "$id" >/dev/null 2>&1 || true
  done
}

# The sockets of our shims: containerd 1.6 puts them in /run/containerd/s (shared with
# any other containerd) as sha256(<containerd socket>/<namespace>/<id>). A shim that is
# killed leaves its socket behind.
_node_remove_shim_sockets() {
  local d id h
  for d in "$NODE_CONTAINERD_DIR"/state/io.containerd.runtime.v2.task/*/*/; do
    [[ -d $d ]] || continue
    id=$(basename "$d")
    d=$(dirname "$d")
    h=$(printf '%s' "$NODE_CONTAINERD_SOCK/$(basename "$d")/$id" | sha256sum | cut -d' ' -f1)
    rm -f "/run/containerd/s/$h"
  done
}

# containerd-shim-runc-v2 processes of our containerd (their -address is our socket).
_node_shim_pids() {
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep "^[^ ]*containerd-shim[^ ]* .*-address $NODE_CONTAINERD_SOCK " >/dev/null &&
      echo "${p#/proc/}"
  done
  return 0
}

node_down() {
  local i pids
  # Controllers first, so that nothing recreates the pods being removed.
  stop_pid kube-controller-manager "$NODE_RUN/kube-controller-manager.pid" 20
  stop_pid kube-scheduler "$NODE_RUN/kube-scheduler.pid" 20
  stop_pid provisioner "$NODE_RUN/provisioner.pid" 10
  _node_drain
  stop_pid kubelet "$NODE_RUN/kubelet.pid" 20
  _node_kill_tasks
  stop_pid containerd "$NODE_RUN/containerd.pid" 20
  pids=$(_node_shim_pids)
  # shellcheck disable=SC2086
  [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
  _node_cgroups_down
  _node_remove_shim_sockets
  stop_pid coredns "$NODE_RUN/coredns.pid" 10
  stop_pid kube-proxy "$NODE_RUN/kube-proxy.pid" 10
  _node_cp _k8s_cp_stop

  # Rules kube-proxy wrote (all KUBE-* chains of its own, IPv4 and IPv6), then the
  # kubelet's: KUBE-FIREWALL (jumped to from INPUT and OUTPUT), KUBE-IPTABLES-HINT and
  # KUBE-KUBELET-CANARY. No other kube-proxy or kubelet runs on this host.
  if [[ -x $K8S_BIN/kube-proxy ]]; then
    "$K8S_BIN/kube-proxy" --cleanup --v=0 >>"$NODE_RUN/kube-proxy.log" 2>&1 || true
  fi
  local ipt table chain
  for ipt in iptables ip6tables; do
    while "$ipt" -w -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    while "$ipt" -w -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    for table in mangle nat filter; do
      for chain in KUBE-FIREWALL KUBE-IPTABLES-HINT KUBE-KUBELET-CANARY; do
        if "$ipt" -w -t "$table" -F "$chain" 2>/dev/null; then
          "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
        fi
      done
    done
  done
  _node_net_down
  _node_restore_tunables

  if ! _node_unmount_all; then
    log "node: mounts left under $NODE_RUN, data NOT removed:"
    _node_mounts >&2
    return 1
  fi
  # The kubelet's symlinks to container logs and CNI's result cache of our network.
  find /var/log/containers -maxdepth 1 -type l -lname "$NODE_RUN/*" -delete 2>/dev/null || true
  rm -f /var/lib/cni/results/dpnode-* 2>/dev/null || true
  for i in containerd kubelet cni pv pod-logs volume-plugins pause-image.tar; do
    rm -rf --one-file-system "${NODE_RUN:?}/$i"
  done
  return 0
}

node_status() {
  local c down=()
  for c in "${NODE_COMPONENTS[@]}"; do
    pid_alive "$NODE_RUN/$c.pid" || down+=("$c")
  done
  if [[ ${#down[@]} -eq 0 ]] && _node_node_ready >/dev/null 2>&1; then
    echo "node       running  $NODE_APISERVER_URL (node $NODE_NAME_K8S Ready; NODE_KUBECONFIG=$NODE_KUBECONFIG)"
  elif [[ ${#down[@]} -eq ${#NODE_COMPONENTS[@]} ]]; then
    echo "node       stopped  $NODE_APISERVER_URL"
    return 1
  else
    echo "node       degraded $NODE_APISERVER_URL (not running: ${down[*]:-none}; node Ready: $(_node_node_ready >/dev/null 2>&1 && echo yes || echo no))"
    return 1
  fi
}

node_env() {
  echo "export NODE_KUBECONFIG=$NODE_KUBECONFIG NODE_APISERVER_URL=$NODE_APISERVER_URL"
  echo "export NODE_CONTAINERD_SOCK=$NODE_CONTAINERD_SOCK NODE_NAME_K8S=$NODE_NAME_K8S NODE_IP=$NODE_IP"
  echo "export NODE_POD_CIDR=$NODE_POD_CIDR NODE_SERVICE_CIDR=$NODE_SERVICE_CIDR NODE_STORAGE_CLASS=$NODE_STORAGE_CLASS"
}

# Functional check with real containers, in a throwaway namespace: the image comes from
# Docker (debian:bookworm); a Service's DNS name resolves and connects from a pod and
# its ClusterIP from the host; the API server answers through the `kubernetes` Service;
# other names fail; kubectl exec/logs work; a claim without storageClassName binds and a
# non-root container writes to it.
node_smoke() {
  local ns=smoke-node-$$-$RANDOM i out svc_ip
  local -a k=(_node_kubectl -n "$ns")
  docker image inspect debian:bookworm >/dev/null 2>&1 ||
    die "node smoke: needs the image debian:bookworm in Docker (none is pulled)"
  if ! _node_ctr images ls -q | grep -xF docker.io/library/debian:bookworm >/dev/null; then
    docker save debian:bookworm | _node_ctr images import - >/dev/null ||
      die "node smoke: importing debian:bookworm failed"
  fi
  _node_kubectl create namespace "$ns" >/dev/null
  for ((i = 0; i < 60; i++)); do
    "${k[@]}" get serviceaccount default >/dev/null 2>&1 && break
    sleep 1
  done
  "${k[@]}" apply -f "$SERVICES_DIR/node/smoke.yaml" >/dev/null
  "${k[@]}" wait --for condition=Ready pod/web pod/client --timeout=120s >/dev/null ||
    { "${k[@]}" describe pods >&2; die "node smoke: pods not ready"; }
  "${k[@]}" rollout status statefulset/db --timeout=120s >/dev/null ||
    { "${k[@]}" describe pods,pvc >&2; die "node smoke: statefulset not ready"; }

  svc_ip=$("${k[@]}" get service web -o jsonpath='{.spec.clusterIP}')
  # shellcheck disable=SC2016 # expanded in the pod
  out=$("${k[@]}" exec client -- bash -c '
    set -e
    echo "resolv: $(grep -c nameserver /etc/resolv.conf) nameserver(s): $(grep nameserver /etc/resolv.conf)"
    echo "web: $(getent hosts web.'"$ns"'.svc.cluster.local)"
    echo "web (search path): $(getent hosts web)"
    exec 3<>/dev/tcp/web/80
    printf "GET / HTTP/1.0\r\n\r\n" >&3
    echo "http: $(tail -n1 <&3)"
    exec 3<&-
    exec 4<>/dev/tcp/kubernetes.default.svc/443 && echo "apiserver: kubernetes.default.svc:443 connects"
    exec 4<&-
    if getent hosts example.com >/dev/null; then echo "example.com RESOLVED"; exit 1; fi
    echo "example.com: does not resolve (as intended)"
  ' 2>&1) || { printf '%s\n' "$out" >&2; die "node smoke: checks in the client pod failed"; }
  printf '%s\n' "$out" | sed 's/^/  pod: /' >&2
  grep -q "^web: $svc_ip " <<<"$out" || die "node smoke: web does not resolve to its ClusterIP $svc_ip"
  grep -q '^http: hello from web' <<<"$out" || die "node smoke: no answer from the web Service"

  # From the host, through kube-proxy's OUTPUT rules.
  out=$(exec 3<>"/dev/tcp/$svc_ip/80" && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && tail -n1 <&3) ||
    die "node smoke: ClusterIP $svc_ip:80 unreachable from the host"
  [[ $out == "hello from web" ]] || die "node smoke: unexpected answer from $svc_ip: $out"
  log "  host: ClusterIP $svc_ip:80 answers '$out'"

  "${k[@]}" logs web | grep 'listening on 8080' >/dev/null || die "node smoke: kubectl logs failed"
  [[ $("${k[@]}" get pvc data-db-0 -o jsonpath='{.status.phase}') == Bound ]] ||
    die "node smoke: PVC data-db-0 not Bound"
  [[ $("${k[@]}" exec db-0 -- cat /data/written-by) == 1000 ]] ||
    die "node smoke: the volume was not writable by uid 1000"
  _node_kubectl delete namespace "$ns" --wait=false >/dev/null
  log "node smoke ok (real pods from debian:bookworm; Service DNS + ClusterIP from pod and host; apiserver via kubernetes.default.svc; PVC bound + writable as uid 1000; exec/logs)"
}
