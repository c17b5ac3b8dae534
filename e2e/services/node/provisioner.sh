#!/usr/bin/env bash
# Tiny dynamic provisioner for the `node` cluster's default StorageClass `local`
# (provisioner datapipeline.local/local-dir, volumeBindingMode WaitForFirstConsumer),
# started by e2e/services/node.sh as:
#   provisioner.sh KUBECTL KUBECONFIG PV_DIR NODE_NAME
# Every 2 s:
#  - each Pending Filesystem PVC of that class that the scheduler has placed (annotation
#    volume.kubernetes.io/selected-node, set by the scheduler for WaitForFirstConsumer
#    classes with a dynamic provisioner) gets a directory PV_DIR/pvc-<uid> (mode 0777,
#    so non-root containers can write) and a `local` PersistentVolume of the requested
#    size, pre-bound to that PVC (claimRef with its uid) and pinned to NODE_NAME; the PV
#    controller then binds the pair and the scheduler lets the pod start.
#  - each of our PVs that is Released (its PVC was deleted; reclaim policy Delete) is
#    deleted together with its directory.
# Sizes are not enforced (a directory on the host's disk). Block-mode claims stay Pending.
set -euo pipefail

kubectl=$1 kubeconfig=$2 pv_dir=$3 node=$4
class=local
provisioner=datapipeline.local/local-dir

k() { "$kubectl" --kubeconfig "$kubeconfig" --request-timeout=10s "$@"; }
say() { printf '%s %s\n' "$(date -Is)" "$*"; }

# provision NS NAME UID SIZE ACCESS_MODES_JSON
provision() {
  local ns=$1 name=$2 uid=$3 size=$4 modes=$5 pv=pvc-$3
  k get pv "$pv" >/dev/null 2>&1 && return 0
  mkdir -p "$pv_dir/$pv"
  chmod 0777 "$pv_dir/$pv"
  k create -f - >/dev/null <<PV
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $pv
  annotations:
    pv.kubernetes.io/provisioned-by: $provisioner
spec:
  capacity: {storage: "${size:-1Gi}"}
  accessModes: ${modes:-[ReadWriteOnce]}
  persistentVolumeReclaimPolicy: Delete
  storageClassName: $class
  volumeMode: Filesystem
  claimRef: {namespace: "$ns", name: "$name", uid: "$uid"}
  local: {path: "$pv_dir/$pv"}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: ["$node"]}
PV
  say "provisioned $pv for $ns/$name ($size)"
}

say "provisioner for StorageClass $class ($provisioner) on node $node, PVs in $pv_dir"
while true; do
  claims=$(k get pvc -A -o jsonpath='{range .items[?(@.status.phase=="Pending")]}{.metadata.namespace}{"\t"}{.metadata.name}{"\t"}{.metadata.uid}{"\t"}{.spec.storageClassName}{"\t"}{.spec.volumeMode}{"\t"}{.metadata.annotations.volume\.kubernetes\.io/selected-node}{"\t"}{.spec.resources.requests.storage}{"\t"}{.spec.accessModes}{"\n"}{end}' 2>&1) ||
    { say "listing PVCs failed: $claims"; claims=; }
  while IFS=$'\t' read -r ns name uid sc mode selected size modes; do
    [[ -n $ns && $sc == "$class" && $mode != Block && -n $selected ]] || continue
    provision "$ns" "$name" "$uid" "$size" "$modes" || say "provisioning for $ns/$name failed"
  done <<<"$claims"

  released=$(k get pv -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{"\t"}{.metadata.annotations.pv\.kubernetes\.io/provisioned-by}{"\n"}{end}' 2>&1) ||
    { say "listing PVs failed: $released"; released=; }
  while IFS=$'\t' read -r pv by; do
    [[ -n $pv && $by == "$provisioner" && $pv == pvc-* ]] || continue
    k delete pv "$pv" --wait=false >/dev/null 2>&1 || continue
    rm -rf "${pv_dir:?}/$pv"
    say "deleted released $pv"
  done <<<"$released"
  sleep 2
done
