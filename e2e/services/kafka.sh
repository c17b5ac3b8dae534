# shellcheck shell=bash disable=SC2317
# Apache Kafka, KRaft, one combined broker+controller node; sourced by e2e/services.sh.
#
# Jars come from Maven Central through a throwaway pom (e2e/services/kafka/pom.xml):
#   mvn -B -q dependency:copy-dependencies -DoutputDirectory=lib
#
# Changes vs shared/real-services.md (found by running it here):
#  - kafka_2.13 drags in slf4j-api 1.7.36; with slf4j-simple 2.x alone nothing is logged
#    (1.7 does not see 2.x providers). The pom pins slf4j-api to the binding's 2.x version.
#  - org.apache.kafka:kafka-tools is added to the pom so TopicCommand, ConsoleProducer,
#    ConsoleConsumer etc. are on the same classpath (health check, tests, debugging):
#      java -cp "$KAFKA_LIB/*" org.apache.kafka.tools.TopicCommand --bootstrap-server ...
#  - Ports are 19092 (PLAINTEXT) / 19093 (CONTROLLER) by default.
#  - auto.create.topics.enable=true, num.partitions=1 (explicit).

KAFKA_VERSION=${KAFKA_VERSION:-4.3.1}
KAFKA_SLF4J_VERSION=${KAFKA_SLF4J_VERSION:-2.0.17}
KAFKA_READY_TIMEOUT=${KAFKA_READY_TIMEOUT:-120}
KAFKA_HEAP=${KAFKA_HEAP:-1g}

KAFKA_HOME=$(cache_dir kafka "$KAFKA_VERSION")
KAFKA_LIB=$KAFKA_HOME/lib
KAFKA_RUN=$(run_dir kafka)
KAFKA_LOG=$KAFKA_RUN/kafka.log
KAFKA_PID=$KAFKA_RUN/kafka.pid

_kafka_build() {
  local out=$1
  command -v mvn >/dev/null || { log "kafka: mvn is required"; return 1; }
  sed -e "s/@KAFKA_VERSION@/$KAFKA_VERSION/g" -e "s/@SLF4J_VERSION@/$KAFKA_SLF4J_VERSION/g" \
    "$SERVICES_DIR/kafka/pom.xml" >"$out/pom.xml"
  (cd "$out" && "${NICE[@]}" mvn -B -q -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory=lib) \
    2>&1 | strip_ansi >&2
  ls "$out/lib/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
}

kafka_install() {
  cache_build kafka "$KAFKA_VERSION" _kafka_build
}

# kafka_java CLASS ARGS...: runs one of Kafka's own tool classes on the broker classpath.
kafka_java() {
  "$JAVA" -Xmx256m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$KAFKA_LIB/*" "$@"
}

_kafka_write_config() {
  cat >"$KAFKA_RUN/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_RUN/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
default.replication.factor=1
group.initial.rebalance.delay.ms=0
log.retention.hours=1
EOF
}

_kafka_ready() {
  port_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "$KAFKA_LOG"
}

kafka_up() {
  mkdir -p "$KAFKA_RUN"
  if pid_alive "$KAFKA_PID"; then
    wait_for kafka "$KAFKA_READY_TIMEOUT" "$KAFKA_LOG" "$KAFKA_PID" _kafka_ready
    log "kafka already running at 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  require_port_free kafka "$KAFKA_PORT"
  require_port_free kafka "$KAFKA_CONTROLLER_PORT"
  if [[ -n ${DP_KEEP_DATA:-} && -f $KAFKA_RUN/data/meta.properties ]]; then
    # A restart (services.sh start): the log directory and its cluster id stay.
    log "kafka: restarting on the kept data"
    # The readiness check reads the log: the first start's lines go aside.
    mv -f "$KAFKA_LOG" "$KAFKA_LOG.before-restart"
    : >"$KAFKA_LOG"
  else
    rm -rf "$KAFKA_RUN/data"
    mkdir -p "$KAFKA_RUN/data"
    : >"$KAFKA_LOG"
    _kafka_write_config
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$KAFKA_LOG" | tail -n1)
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_RUN/server.properties" \
      --ignore-formatted >>"$KAFKA_LOG" 2>&1 || {
      tail -n 80 "$KAFKA_LOG" >&2
      die "kafka: storage format failed"
    }
  fi
  start_bg kafka "$KAFKA_PID" "$KAFKA_LOG" \
    "$JAVA" "-Xmx$KAFKA_HEAP" -Xms256m -XX:+UseG1GC -Djava.awt.headless=true \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_RUN/server.properties"
  wait_for kafka "$KAFKA_READY_TIMEOUT" "$KAFKA_LOG" "$KAFKA_PID" _kafka_ready || {
    kafka_down
    die "kafka failed to start"
  }
  # A real metadata round trip through the broker (not just the log line).
  kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list \
    >/dev/null 2>>"$KAFKA_LOG" || {
    tail -n 80 "$KAFKA_LOG" >&2
    kafka_down
    die "kafka: metadata request failed"
  }
  log "kafka ready at 127.0.0.1:$KAFKA_PORT"
}

kafka_down() {
  stop_pid kafka "$KAFKA_PID" "${KAFKA_STOP_TIMEOUT:-30}"
  [[ -n ${DP_KEEP_DATA:-} ]] || rm -rf "$KAFKA_RUN/data"
}

kafka_status() {
  if pid_alive "$KAFKA_PID" && port_open "$KAFKA_PORT"; then
    echo "kafka      running  127.0.0.1:$KAFKA_PORT (pid $(<"$KAFKA_PID"))"
  else
    echo "kafka      stopped  127.0.0.1:$KAFKA_PORT"
    return 1
  fi
}

# Functional check: create a topic, produce 3 records, consume them back.
kafka_smoke() {
  local topic=smoke-$$-$RANDOM out
  kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --create --topic "$topic" --partitions 2 --replication-factor 1 >/dev/null
  printf 'a\nb\nc\n' | kafka_java org.apache.kafka.tools.ConsoleProducer \
    --bootstrap-server "127.0.0.1:$KAFKA_PORT" --topic "$topic" >/dev/null
  out=$(timeout 60 "$JAVA" -Xmx256m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$KAFKA_LIB/*" \
    org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --topic "$topic" --from-beginning --max-messages 3 --timeout-ms 30000 2>/dev/null | sort | tr '\n' ' ')
  [[ $out == "a b c " ]] || die "kafka smoke: consumed '$out'"
  kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --delete --topic "$topic" >/dev/null
  log "kafka smoke ok (topic create, produce, consume)"
}

kafka_env() {
  echo "export KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT KAFKA_LIB=$KAFKA_LIB KAFKA_JAVA=$JAVA"
}
