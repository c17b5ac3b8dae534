#!/usr/bin/env bash
# Real servers for the integration tests, as plain processes on 127.0.0.1.
#
#   e2e/services.sh install [NAME...]  download/build into the cache only (idempotent)
#   e2e/services.sh up      [NAME...]  install if needed, start, wait until ready (idempotent)
#   e2e/services.sh down    [NAME...]  SIGTERM, wait, SIGKILL; remove the runtime data dirs
#   e2e/services.sh stop    [NAME...]  like down, but keep the data (kafka, s3): an outage
#   e2e/services.sh start   [NAME...]  like up, on the data a stop kept: the server restarts
#   e2e/services.sh status  [NAME...]  running/stopped + endpoint; non-zero if any is down
#   e2e/services.sh env                `export ...` lines with the endpoints
#   e2e/services.sh smoke   [NAME...]  functional check of running servers (topic+produce,
#                                      index+count, bucket+object, k8s workloads, real pods)
#
# NAME: kafka opensearch s3 k8s (the default set) and node (only when named: a second
# cluster with a real kubelet + containerd node; needs root, see services/node.sh).
#
# Cache (heavy downloads/builds, keyed by version):
#   ${DATAPIPELINE_CACHE:-$HOME/.cache/datapipeline}/<component>-<version>/
#   Every entry is built in a temp dir next to it and renamed into place at the end,
#   so an interrupted build is never taken for a cached one.
# Runtime state and logs:
#   ${DATAPIPELINE_RUN:-/tmp/datapipeline-services}/<name>/  (<name>.log, <name>.pid, data)
#   ${DATAPIPELINE_RUN}/env is rewritten on every `up`.
#
# Everything comes from the package registries only (Maven Central, the Go module
# proxy); see e2e/services/*.sh for each recipe and what differs from
# shared/real-services.md.
# shellcheck source-path=SCRIPTDIR
# Functions are called indirectly ("${name}_${verb}"), which shellcheck cannot see:
# shellcheck disable=SC2317
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SERVICES_DIR=$E2E_DIR/services

export GOTOOLCHAIN=local
DP_CACHE=${DATAPIPELINE_CACHE:-$HOME/.cache/datapipeline}
DP_RUN=${DATAPIPELINE_RUN:-/tmp/datapipeline-services}
ALL_SERVICES=(kafka opensearch s3 k8s)
# Known but not started by default: `node` needs root and changes the host's network
# (a bridge, iptables rules); `env` prints its lines too.
KNOWN_SERVICES=("${ALL_SERVICES[@]}" node)

# Ports (non-default ones, so nothing a user runs clashes).
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
OPENSEARCH_PORT=${OPENSEARCH_PORT:-19200}
S3_PORT=${S3_PORT:-19000}
K8S_APISERVER_PORT=${K8S_APISERVER_PORT:-16443}
ETCD_PORT=${ETCD_PORT:-12379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-12380}

# Java 17 for Kafka and OpenSearch 2.19 (OpenSearch 2.x is not meant for Java 24+,
# so an inherited JAVA_HOME pointing at Temurin 25 is not used unless asked for).
SERVICES_JAVA_HOME=${SERVICES_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
if [[ ! -x $SERVICES_JAVA_HOME/bin/java ]]; then
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
    SERVICES_JAVA_HOME=$JAVA_HOME
  elif command -v java >/dev/null; then
    SERVICES_JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
  fi
fi
export JAVA_HOME=$SERVICES_JAVA_HOME
JAVA=$JAVA_HOME/bin/java
# Builds run at low priority so a developer's machine stays usable.
NICE=(nice -n 10)

# ---------------------------------------------------------------- helpers

log() { printf '[services %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Debian's Maven 3.8.7 prints stray colour codes even in batch mode.
strip_ansi() { sed -u 's/\x1b\[[0-9;]*m//g'; }

# cache_dir COMPONENT VERSION -> path of the final cache entry
cache_dir() { printf '%s/%s-%s' "$DP_CACHE" "$1" "$2"; }

# cache_build COMPONENT VERSION FUNCTION [ARGS...]
# Runs FUNCTION TMPDIR ARGS... to fill a fresh temp dir, then renames it to the cache
# entry. Skips everything if the entry exists. Serialised per entry with flock, so two
# concurrent installs do not build the same thing twice.
cache_build() {
  local comp=$1 ver=$2 fn=$3
  shift 3
  local final tmp lock
  final=$(cache_dir "$comp" "$ver")
  [[ -d $final ]] && return 0
  mkdir -p "$DP_CACHE"
  lock=$DP_CACHE/.$comp-$ver.lock
  exec {lockfd}>"$lock"
  flock "$lockfd"
  if [[ -d $final ]]; then
    exec {lockfd}>&-
    return 0
  fi
  # Leftovers of an interrupted build of this entry.
  rm -rf "$DP_CACHE/.tmp-$comp-$ver."*
  tmp=$(mktemp -d "$DP_CACHE/.tmp-$comp-$ver.XXXXXX")
  log "building $comp $ver (cache: $final)"
  local t0=$SECONDS
  if ! "$fn" "$tmp" "$@"; then
    exec {lockfd}>&-
    die "building $comp $ver failed (partial build left in $tmp)"
  fi
  chmod 755 "$tmp"
  mv -T "$tmp" "$final"
  exec {lockfd}>&-
  log "built $comp $ver in $((SECONDS - t0)) s"
}

run_dir() { printf '%s/%s' "$DP_RUN" "$1"; }

# pid_alive PIDFILE: the pid in PIDFILE is a live process started by us (its command
# line mentions our run dir, which guards against pid reuse).
pid_alive() {
  local pidfile=$1 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DP_RUN" || return 1
}

# start_bg NAME PIDFILE LOGFILE CMD...: starts CMD detached (own session, no stdin),
# appending to LOGFILE, and records its pid. The command line must mention $DP_RUN
# somewhere (see pid_alive).
start_bg() {
  local name=$1 pidfile=$2 logfile=$3
  shift 3
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  printf '\n==== %s starting %s ====\n' "$(date -Is)" "$name" >>"$logfile"
  setsid "$@" </dev/null >>"$logfile" 2>&1 &
  local pid=$! i
  echo "$pid" >"$pidfile"
  disown "$pid" 2>/dev/null || true
  # Until the exec has happened /proc/PID/cmdline is still our own shell's: wait for
  # it, so that pid_alive does not take a starting server for a dead one.
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pidfile" && return 0
    [[ -e /proc/$pid ]] || return 0
    sleep 0.1
  done
}

# proc_running PID: exists and is not a zombie (a zombie is as good as gone).
proc_running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# stop_pid NAME PIDFILE [TIMEOUT]: SIGTERM, wait up to TIMEOUT s, then SIGKILL.
stop_pid() {
  local name=$1 pidfile=$2 timeout=${3:-${STOP_TIMEOUT:-30}} pid i
  if pid_alive "$pidfile"; then
    pid=$(<"$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 5; i++)); do
      proc_running "$pid" || break
      sleep 0.2
    done
    if proc_running "$pid"; then
      log "$name did not stop in ${timeout}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$pidfile"
}

# wait_for NAME TIMEOUT LOGFILE PIDFILE CHECK_FN [ARGS...]: polls CHECK_FN until it
# succeeds. Fails (with the last 80 lines of LOGFILE) on timeout or when the process
# in PIDFILE dies (PIDFILE may be empty to skip that check).
wait_for() {
  local name=$1 timeout=$2 logfile=$3 pidfile=$4 fn=$5
  shift 5
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if "$fn" "$@" >/dev/null 2>&1; then
      return 0
    fi
    # pid_alive can miss a process in the middle of its exec (its cmdline is briefly
    # empty, or still the starting shell's): only a pid that is gone counts as exited.
    if [[ -n $pidfile ]] && ! pid_alive "$pidfile" && ! proc_running "$(cat "$pidfile" 2>/dev/null || echo 0)"; then
      log "$name exited while starting; last 80 lines of $logfile:"
      tail -n 80 "$logfile" >&2 || true
      return 1
    fi
    sleep 1
  done
  log "$name not ready after ${timeout}s; last 80 lines of $logfile:"
  tail -n 80 "$logfile" >&2 || true
  return 1
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

require_port_free() {
  local name=$1 port=$2
  if port_open "$port"; then
    die "$name: port 127.0.0.1:$port is already taken by another process (set the port env var)"
  fi
}

# ---------------------------------------------------------------- services

# shellcheck source=services/kafka.sh
source "$SERVICES_DIR/kafka.sh"
# shellcheck source=services/opensearch.sh
source "$SERVICES_DIR/opensearch.sh"
# shellcheck source=services/s3.sh
source "$SERVICES_DIR/s3.sh"
# shellcheck source=services/k8s.sh
source "$SERVICES_DIR/k8s.sh"
# shellcheck source=services/node.sh
source "$SERVICES_DIR/node.sh"

env_lines() {
  local n
  for n in "${KNOWN_SERVICES[@]}"; do
    "${n}_env"
  done
}

write_env_file() {
  mkdir -p "$DP_RUN"
  env_lines >"$DP_RUN/env.tmp"
  mv -f "$DP_RUN/env.tmp" "$DP_RUN/env"
}

# run_parallel VERB NAME...: runs VERB_NAME for each NAME concurrently, output prefixed.
run_parallel() {
  local verb=$1
  shift
  local -a pids=() names=()
  local n rc=0 i
  for n in "$@"; do
    ( "${n}_${verb}" 2>&1 | sed -u "s/^/[$n] /" >&2; exit "${PIPESTATUS[0]}" ) &
    pids+=($!)
    names+=("$n")
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      log "${names[$i]}: $verb FAILED"
      rc=1
    fi
  done
  return "$rc"
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  local -a names=("$@")
  local n
  if [[ ${#names[@]} -eq 0 ]]; then
    names=("${ALL_SERVICES[@]}")
  fi
  for n in "${names[@]}"; do
    case " ${KNOWN_SERVICES[*]} " in
      *" $n "*) ;;
      *) die "unknown service '$n' (known: ${KNOWN_SERVICES[*]})" ;;
    esac
  done
  case $cmd in
    install)
      # Sequential: the builds are CPU-bound and the machine has 2 cores.
      for n in "${names[@]}"; do
        "${n}_install"
      done
      ;;
    up)
      for n in "${names[@]}"; do
        "${n}_install"
      done
      mkdir -p "$DP_RUN"
      write_env_file
      run_parallel up "${names[@]}"
      log "ready: ${names[*]} (endpoints: $DP_RUN/env)"
      ;;
    down)
      run_parallel down "${names[@]}"
      ;;
    stop | start)
      for n in "${names[@]}"; do
        case $n in
          kafka | s3) ;;
          *) die "$cmd keeps the data of kafka and s3 only, not $n" ;;
        esac
      done
      # The same verbs as down/up, with the data directories left in place.
      export DP_KEEP_DATA=1
      if [[ $cmd == stop ]]; then
        run_parallel down "${names[@]}"
      else
        run_parallel up "${names[@]}"
        log "restarted: ${names[*]}"
      fi
      ;;
    status)
      local rc=0
      for n in "${names[@]}"; do
        "${n}_status" || rc=1
      done
      return "$rc"
      ;;
    env)
      env_lines
      ;;
    smoke)
      for n in "${names[@]}"; do
        "${n}_smoke"
      done
      ;;
    *)
      sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
      exit 2
      ;;
  esac
}

main "$@"; exit $?
