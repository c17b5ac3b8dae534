#!/usr/bin/env bash
# The e2e Kafka image's kafka-server-start.sh: runs the node (kafka.Kafka) on a properties
# file through kafka-run-class.sh, with the server's defaults where the variable is unset:
# KAFKA_HEAP_OPTS 1 GiB, KAFKA_LOG4J_OPTS config/log4j2.yaml (stdout), KAFKA_GC_LOG_OPTS a
# rotated GC log in LOG_DIR.
#   kafka-server-start.sh server.properties [--override NAME=VALUE]...
bin=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ]; then
  echo "usage: $0 server.properties [--override NAME=VALUE]..." >&2
  exit 1
fi
export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms1G -Xmx1G}
export KAFKA_LOG4J_OPTS=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$bin/../config/log4j2.yaml}
export KAFKA_GC_LOG_OPTS=${KAFKA_GC_LOG_OPTS:--Xlog:gc*:file=${LOG_DIR:-$bin/../logs}/server-gc.log:time,tags:filecount=4,filesize=20M}
exec "$bin/kafka-run-class.sh" kafka.Kafka "$@"
