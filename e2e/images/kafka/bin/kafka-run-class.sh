#!/usr/bin/env bash
# The e2e Kafka image's kafka-run-class.sh: runs a Java CLASS on the jars of /opt/kafka/libs.
#   kafka-run-class.sh CLASS [ARGS...]
# Environment (the variables Kafka's scripts read): JAVA_HOME; LOG_DIR (made if possible,
# passed as kafka.logs.dir; default /opt/kafka/logs); KAFKA_HEAP_OPTS (default -Xmx256M);
# KAFKA_JVM_PERFORMANCE_OPTS (default G1); KAFKA_GC_LOG_OPTS; KAFKA_JMX_OPTS;
# KAFKA_LOG4J_OPTS (default config/tools-log4j2.yaml: warnings to stderr); KAFKA_OPTS.
# No -daemon/-name/-loggc flags and no JMX unless KAFKA_JMX_OPTS asks for it.
set -eu
home=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 1 ]; then
  echo "usage: $0 CLASS [ARGS...]" >&2
  exit 1
fi
log_dir=${LOG_DIR:-$home/logs}
mkdir -p "$log_dir" 2>/dev/null || true # tools log to stderr: a read-only root is fine
# shellcheck disable=SC2086 # each *_OPTS is a list of words
exec "${JAVA_HOME:+$JAVA_HOME/bin/}java" \
  ${KAFKA_HEAP_OPTS:--Xmx256M} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true} \
  ${KAFKA_GC_LOG_OPTS:-} ${KAFKA_JMX_OPTS:-} \
  "-Dkafka.logs.dir=$log_dir" ${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$home/config/tools-log4j2.yaml} \
  -cp "$home/libs/*" ${KAFKA_OPTS:-} "$@"
