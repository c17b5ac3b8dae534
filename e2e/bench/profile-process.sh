#!/usr/bin/env bash
# Where the process role's CPU goes: one `process` member on the benchmark's topic (the
# 885,129-event file, pre-filled by `ingest`) under `perf record`, against the harness's
# real Kafka, S3 and OpenSearch. Writes the flat profile (self time per function) and the
# profile by caller (time under each of the role's stages) next to perf.data.
#
#   e2e/services.sh up kafka opensearch s3
#   BENCH_BIN_DIR=target/release e2e/bench/profile-process.sh      # OUT=/tmp/process-profile
#
# Environment: BENCH_BIN_DIR (release binaries; built when unset), OUT (results), EVENTS
# (885129), FREQ (perf samples per second, 499). The topic, bucket and index carry the
# start time and are left behind for a look (delete the index when done).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
OUT=${OUT:-/tmp/process-profile}
EVENTS=${EVENTS:-885129}
FREQ=${FREQ:-499}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/datapipeline/cargo-target}
JAVA=${BENCH_JAVA:-/usr/lib/jvm/java-17-openjdk-amd64/bin/java}
log() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v perf >/dev/null || { log "perf is missing: apt-get install linux-perf"; exit 1; }
# shellcheck disable=SC1090
source <("$REPO/e2e/services.sh" env)
export DP_KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP DP_SEARCH_URL=$OPENSEARCH_URL
export DP_S3_ENDPOINT=$S3_ENDPOINT DP_S3_REGION=$S3_REGION
export DP_S3_ACCESS_KEY_ID=$S3_ACCESS_KEY DP_S3_SECRET_ACCESS_KEY=$S3_SECRET_KEY DP_HTTP_PORT=0
bin_dir=${BENCH_BIN_DIR:-}
if [[ -z $bin_dir ]]; then
  (cd "$REPO" && cargo build --release -p pipeline-runtime)
  bin_dir=$CARGO_TARGET_DIR/release
fi
mkdir -p "$OUT"
PR=$OUT/pipeline-runtime
cp "$bin_dir/pipeline-runtime" "$PR"
CSV=$OUT/events-$EVENTS.csv
[[ -s $CSV ]] || "$PR" generate --events "$EVENTS" --seed 42 --output "$CSV" 2>/dev/null

p=prof-$(date +%s)
for topic in "$p-events" "$p-events-dlq"; do
  "$JAVA" -cp "$KAFKA_LIB/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --create --topic "$topic" --partitions 6 --replication-factor 1 >/dev/null 2>&1
done
log "ingesting $CSV into $p-events"
"$PR" ingest --pipeline "$p" --s3-bucket "$p" --input "$CSV" >"$OUT/ingest.json" 2>"$OUT/ingest.log"
log "process under perf ($FREQ Hz)"
/usr/bin/time -o "$OUT/process.time" -f '%e s wall, %U s user, %S s system, %M KiB peak RSS' \
  perf record -q -F "$FREQ" -g --call-graph dwarf,16384 -o "$OUT/perf.data" -- \
  "$PR" process --pipeline "$p" --s3-bucket "$p" --exit-when-idle >"$OUT/process.json" 2>"$OUT/process.log"
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio --percent-limit 0.3 -g none \
  2>/dev/null | grep -v '^$' >"$OUT/flat.txt"
perf report -i "$OUT/perf.data" --children --sort symbol --stdio --percent-limit 2 -g none \
  2>/dev/null | grep -v '^$' >"$OUT/by-caller.txt"
perf report -i "$OUT/perf.data" --no-children --sort comm --stdio -g none \
  2>/dev/null | grep -v '^$' >"$OUT/threads.txt"
log "$(cat "$OUT/process.time"); summary $(cat "$OUT/process.json")"
log "wrote $OUT/flat.txt, $OUT/by-caller.txt and $OUT/threads.txt"
