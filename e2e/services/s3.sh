# shellcheck shell=bash disable=SC2317
# S3 server: versitygw (Apache-2.0) with its posix backend; sourced by e2e/services.sh.
#
#   go install github.com/versity/versitygw/cmd/versitygw@$S3_VERSITYGW_VERSION  (GOBIN in the cache)
#   ROOT_ACCESS_KEY=.. ROOT_SECRET_KEY=.. versitygw --port 127.0.0.1:19000 posix --sidecar META DATA
#
# Fallback, only if versitygw cannot be built: s3s-fs from crates.io
#   cargo install s3s-fs --version 0.14.1 --features binary --locked --root CACHE
# (force it with S3_IMPL=s3s-fs).
#
# Changes vs shared/real-services.md (found by running it here):
#  - v1.7.0 is served by the Go proxy (although `go list -m -versions` only lists
#    v1.8.0) and builds with Go 1.26 in ~2.5 min on 2 cores; main.Version is set by
#    ldflags (otherwise it reports "git").
#  - --keep-alive is passed: versitygw closes every connection after one request by
#    default, which makes SDK clients reconnect for each call.
#  - --region is passed explicitly (S3_REGION, default us-east-1); clients must sign
#    for the same region and use path-style addressing.
#  - Fallback checked here too (S3_IMPL=s3s-fs): builds in ~3.5 min, same smoke test
#    passes. It stops only on SIGINT gracefully; SIGTERM just ends it (fine for tests).
#  - curl 7.88's --aws-sigv4 sends no x-amz-content-sha256 header, which versitygw
#    requires: send `x-amz-content-sha256: UNSIGNED-PAYLOAD` (see s3_curl below).

S3_IMPL=${S3_IMPL:-versitygw}
S3_VERSITYGW_VERSION=${S3_VERSITYGW_VERSION:-v1.7.0}
S3_S3SFS_VERSION=${S3_S3SFS_VERSION:-0.14.1}
S3_READY_TIMEOUT=${S3_READY_TIMEOUT:-60}
# Test-only credentials.
S3_ACCESS_KEY=${S3_ACCESS_KEY:-datapipeline}
S3_SECRET_KEY=${S3_SECRET_KEY:-datapipeline-secret}
S3_REGION=${S3_REGION:-us-east-1}

S3_RUN=$(run_dir s3)
S3_LOG=$S3_RUN/s3.log
S3_PID=$S3_RUN/s3.pid
S3_ENDPOINT=http://127.0.0.1:$S3_PORT

_s3_build_versitygw() {
  local out=$1
  mkdir -p "$out/bin"
  GOBIN=$out/bin CGO_ENABLED=0 "${NICE[@]}" go install -trimpath \
    -ldflags "-s -w -X main.Version=$S3_VERSITYGW_VERSION -X main.Build=go-install" \
    "github.com/versity/versitygw/cmd/versitygw@$S3_VERSITYGW_VERSION"
  "$out/bin/versitygw" --version >&2 || true
}

_s3_build_s3sfs() {
  local out=$1
  "${NICE[@]}" cargo install s3s-fs --version "$S3_S3SFS_VERSION" --features binary --locked --root "$out"
}

_s3_impl() {
  # versitygw unless forced, or unless only the fallback is cached.
  if [[ $S3_IMPL == versitygw && ! -d $(cache_dir versitygw "$S3_VERSITYGW_VERSION") &&
    -d $(cache_dir s3s-fs "$S3_S3SFS_VERSION") ]]; then
    echo s3s-fs
  else
    echo "$S3_IMPL"
  fi
}

s3_install() {
  case $(_s3_impl) in
    versitygw)
      if ! (cache_build versitygw "$S3_VERSITYGW_VERSION" _s3_build_versitygw); then
        log "s3: versitygw could not be built; falling back to s3s-fs $S3_S3SFS_VERSION"
        cache_build s3s-fs "$S3_S3SFS_VERSION" _s3_build_s3sfs
      fi
      ;;
    s3s-fs) cache_build s3s-fs "$S3_S3SFS_VERSION" _s3_build_s3sfs ;;
    *) die "s3: unknown S3_IMPL=$S3_IMPL" ;;
  esac
}

# Plain HTTP answer from the port (any status: an unauthenticated request gets 403).
_s3_ready() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$S3_ENDPOINT/") || return 1
  [[ $code != 000 ]]
}

s3_up() {
  mkdir -p "$S3_RUN"
  if pid_alive "$S3_PID"; then
    wait_for s3 "$S3_READY_TIMEOUT" "$S3_LOG" "$S3_PID" _s3_ready || die "s3 is running but not answering"
    log "s3 already running at $S3_ENDPOINT"
    return 0
  fi
  require_port_free s3 "$S3_PORT"
  if [[ -z ${DP_KEEP_DATA:-} ]]; then
    rm -rf "$S3_RUN/data" "$S3_RUN/meta"
    : >"$S3_LOG"
  fi
  mkdir -p "$S3_RUN/data" "$S3_RUN/meta"
  case $(_s3_impl) in
    versitygw)
      # versitygw reads the root credentials from the environment.
      start_bg s3 "$S3_PID" "$S3_LOG" env \
        ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" \
        "$(cache_dir versitygw "$S3_VERSITYGW_VERSION")/bin/versitygw" \
        --port "127.0.0.1:$S3_PORT" --region "$S3_REGION" --keep-alive \
        posix --sidecar "$S3_RUN/meta" "$S3_RUN/data"
      ;;
    s3s-fs)
      start_bg s3 "$S3_PID" "$S3_LOG" \
        "$(cache_dir s3s-fs "$S3_S3SFS_VERSION")/bin/s3s-fs" \
        --host 127.0.0.1 --port "$S3_PORT" \
        --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$S3_RUN/data"
      ;;
  esac
  wait_for s3 "$S3_READY_TIMEOUT" "$S3_LOG" "$S3_PID" _s3_ready || {
    s3_down
    die "s3 failed to start"
  }
  log "s3 ready at $S3_ENDPOINT ($(_s3_impl))"
}

s3_down() {
  stop_pid s3 "$S3_PID" "${S3_STOP_TIMEOUT:-15}"
  [[ -n ${DP_KEEP_DATA:-} ]] || rm -rf "$S3_RUN/data" "$S3_RUN/meta"
}

s3_status() {
  if pid_alive "$S3_PID" && _s3_ready; then
    echo "s3         running  $S3_ENDPOINT (pid $(<"$S3_PID"), $(_s3_impl))"
  else
    echo "s3         stopped  $S3_ENDPOINT"
    return 1
  fi
}

# s3_curl CURL_ARGS...: curl signed with the test credentials, e.g.
#   s3_curl -XPUT "$S3_ENDPOINT/bucket"; s3_curl --data-binary @f -XPUT "$S3_ENDPOINT/bucket/key"
s3_curl() {
  curl -sS --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}

# Functional check: bucket create, object PUT/GET/list/DELETE, bucket delete.
s3_smoke() {
  local b=smoke-$$-$RANDOM got
  s3_curl -f -XPUT "$S3_ENDPOINT/$b" >/dev/null
  printf 'hello s3' | s3_curl -f -XPUT --data-binary @- "$S3_ENDPOINT/$b/dir/obj.txt" >/dev/null
  got=$(s3_curl -f "$S3_ENDPOINT/$b/dir/obj.txt")
  [[ $got == "hello s3" ]] || die "s3 smoke: GET returned '$got'"
  s3_curl -f "$S3_ENDPOINT/$b?list-type=2&prefix=dir%2F" | grep -q '<Key>dir/obj.txt</Key>' ||
    die "s3 smoke: object not listed"
  s3_curl -f -XDELETE "$S3_ENDPOINT/$b/dir/obj.txt" >/dev/null
  s3_curl -f -XDELETE "$S3_ENDPOINT/$b" >/dev/null
  log "s3 smoke ok (bucket, put, get, list, delete)"
}

s3_env() {
  echo "export S3_ENDPOINT=$S3_ENDPOINT S3_ACCESS_KEY=$S3_ACCESS_KEY S3_SECRET_KEY=$S3_SECRET_KEY S3_REGION=$S3_REGION"
  # The server binary itself, for tests that start their own instance (over TLS).
  if [[ $(_s3_impl) == versitygw ]]; then
    echo "export S3_VERSITYGW=$(cache_dir versitygw "$S3_VERSITYGW_VERSION")/bin/versitygw"
  fi
}
