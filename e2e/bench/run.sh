#!/usr/bin/env bash
# Benchmarks of the design brief §9, on this machine, against the harness's real servers;
# writes BENCHMARKS.md at the repository root (machine, date, commit; per row the median of
# RUNS runs with min and max, and the 1-minute load average at each measurement).
#
#   e2e/services.sh up kafka opensearch s3 k8s      # the servers (left running)
#   e2e/bench/run.sh                                # all stages, RUNS=3
#   STAGES="ingest run" RUNS=5 e2e/bench/run.sh      # some stages
#
# Stages (STAGES, default all, in this order):
#   ingest   CSV -> Kafka (acks=all): `pipeline-runtime ingest` of the 885,129-event file
#            to a fresh topic vs e2e/bench/producer.py (Python confluent-kafka, same work,
#            same broker, same file, same producer settings); events/s and the ratio.
#   process  Kafka -> profiles -> Parquet (S3) + search: 1 and 2 `process` members on a
#            pre-filled topic; time from start until the group's committed offsets reach
#            the end (e2e/bench/OffsetWatch.java, Kafka's Admin client, polled every 100 ms).
#   searchfloor  the search engine alone: every profile of the reference run bulk-indexed
#            once into a fresh index (e2e/bench/search_floor.py; mapping copy
#            e2e/bench/profiles-index.json, kept current by a runtime unit test); docs/s and
#            OpenSearch CPU seconds: the least search work any process run needs.
#   e2e      885,129 events: ingest and process started together; wall time until the
#            index's _count equals the embedded run's profile count and the committed
#            offsets reach the accepted-event count (offsets are committed only after the
#            lake write, so the lake is complete then).
#   run      embedded `run` vs DuckDB (e2e/bench/profiles.sql via duckdb_run.py) on the
#            same CSV, both writing events + profiles Parquet; the ratio; the profiles are
#            compared row by row (compare_profiles.py). On two files: the generator's tidy
#            885,129-event file and a RAW_EVENTS (887,767) file of `generate --shape raw`
#            (19-digit user ids, 158 days out of time order, brands that need quoting).
#   big      10,000,000 events: embedded `run`, wall time and peak RSS (/usr/bin/time -v);
#            then, if BIG_DISTRIBUTED=1, ingest + process end to end with each process's
#            peak RSS.
#   operator the release operator against the local control plane: apply -> all children
#            created and status written, for one pipeline (RUNS times) and for 50 at once;
#            then idle CPU over 60 s and RSS with the 50 applied.
#
# Environment: APPEND=1 adds to the previous results instead of starting over; KEEP=1 keeps the run's topics and indices; RUNS (3), STAGES, WORK (/tmp/datapipeline-bench: data and scratch),
# LOAD_TARGET (1.5) and LOAD_WAIT_MAX (120 s): before each stage the script waits up to
# LOAD_WAIT_MAX for the 1-minute load to fall below LOAD_TARGET (the machine is shared);
# CARGO_TARGET_DIR (~/.cache/datapipeline/cargo-target); BENCH_BIN_DIR: take the release
# binaries from there instead of building; EVENTS (885129): size of the main file (smaller
# only to try the script out). Python tools live in a venv at
# ~/.cache/datapipeline/bench-venv (confluent-kafka, duckdb), created when missing.
# Raw results: $WORK/results.tsv (stage, metric, run, value, load); rendered by report.py.
# A stage that fails is recorded as "not measured: <reason>" and the others still run.
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
RUNS=${RUNS:-3}
STAGES=${STAGES:-"ingest process searchfloor e2e run big operator"}
WORK=${WORK:-/tmp/datapipeline-bench}
LOAD_TARGET=${LOAD_TARGET:-1.5}
LOAD_WAIT_MAX=${LOAD_WAIT_MAX:-120}
BIG_EVENTS=${BIG_EVENTS:-10000000}
BIG_DISTRIBUTED=${BIG_DISTRIBUTED:-0}
EVENTS=${EVENTS:-885129}
RAW_EVENTS=${RAW_EVENTS:-887767}
SEED=42
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/datapipeline/cargo-target}
VENV=$HOME/.cache/datapipeline/bench-venv
PY=$VENV/bin/python
JAVA=${BENCH_JAVA:-/usr/lib/jvm/java-17-openjdk-amd64/bin/java}
JAVAC=$(dirname "$JAVA")/javac
RESULTS=$WORK/results.tsv
RUN_ID=$(date +%s)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# record STAGE METRIC RUN VALUE [LOAD]
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-$(load1)}" >>"$RESULTS"; }
# not_measured STAGE REASON
not_measured() { log "not measured ($1): $2"; printf '%s\tNOT_MEASURED\t-\t%s\t-\n' "$1" "$2" >>"$RESULTS"; }
note() { printf '%s\tNOTE\t-\t%s\t-\n' "$1" "$2" >>"$RESULTS"; }

wait_for_low_load() {
  local waited=0
  while awk -v l="$(load1)" -v t="$LOAD_TARGET" 'BEGIN { exit !(l >= t) }'; do
    if ((waited >= LOAD_WAIT_MAX)); then
      log "load $(load1) still >= $LOAD_TARGET after ${waited}s; measuring anyway"
      return
    fi
    sleep 10
    waited=$((waited + 10))
  done
}

# ------------------------------------------------------------------ setup

setup() {
  mkdir -p "$WORK/data"
  [[ ${APPEND:-0} == 1 ]] || : >"$RESULTS"
  # shellcheck disable=SC1090
  source <("$REPO/e2e/services.sh" env)
  export DP_KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP DP_SEARCH_URL=$OPENSEARCH_URL
  export DP_S3_ENDPOINT=$S3_ENDPOINT DP_S3_REGION=$S3_REGION
  export DP_S3_ACCESS_KEY_ID=$S3_ACCESS_KEY DP_S3_SECRET_ACCESS_KEY=$S3_SECRET_KEY DP_HTTP_PORT=0
  if [[ ! -x $PY ]] || ! "$PY" -c 'import confluent_kafka, duckdb' 2>/dev/null; then
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q confluent-kafka duckdb
  fi
  local bin_dir=${BENCH_BIN_DIR:-}
  if [[ -z $bin_dir ]]; then
    log "building (release)"
    (cd "$REPO" && cargo build --release -p pipeline-runtime -p datapipeline-operator) || {
      log "release build failed"; exit 1; }
    bin_dir=$CARGO_TARGET_DIR/release
  fi
  # Copies, so a rebuild by someone else does not swap the binary mid-run.
  cp "$bin_dir/pipeline-runtime" "$WORK/pipeline-runtime"
  cp "$bin_dir/datapipeline-operator" "$WORK/datapipeline-operator" 2>/dev/null || true
  PR=$WORK/pipeline-runtime
  mkdir -p "$WORK/classes"
  "$JAVAC" -nowarn -cp "$KAFKA_LIB/*" -d "$WORK/classes" "$BENCH_DIR/OffsetWatch.java" || exit 1
  CSV=$WORK/data/events-$EVENTS.csv
  [[ -s $CSV ]] || "$PR" generate --events $EVENTS --seed $SEED --output "$CSV" 2>/dev/null
  # The reference result (profiles expected in the index, events expected in the lake).
  rm -rf "$WORK/ref"
  "$PR" run --input "$CSV" --out "$WORK/ref" --quiet 2>/dev/null
  EXPECTED_PROFILES=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["profiles"])' "$WORK/ref/summary.json")
  EXPECTED_EVENTS=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["events_accepted"])' "$WORK/ref/summary.json")
  log "reference: $EXPECTED_EVENTS events, $EXPECTED_PROFILES profiles"
}

# CPU accounting, to show what bounds a stage: CPU seconds used by each server during it.
DP_RUN=${DATAPIPELINE_RUN:-/tmp/datapipeline-services}
HZ=$(getconf CLK_TCK)
pid_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
svc_ticks() { # -> "kafka opensearch s3" ticks
  local s pid out=()
  for s in kafka opensearch s3; do
    pid=$(cat "$DP_RUN/$s/$s.pid" 2>/dev/null)
    out+=("$( [[ -n $pid ]] && pid_ticks "$pid" || echo 0)")
  done
  echo "${out[*]}"
}
# record_svc_cpu STAGE PREFIX RUN "TICKS_BEFORE" LOAD
record_svc_cpu() {
  local after i names=(kafka opensearch s3) before
  read -r -a before <<<"$4"
  read -r -a after <<<"$(svc_ticks)"
  for i in 0 1 2; do
    record "$1" "cpu_${2}_${names[$i]}" "$3" "$(awk -v a="${before[$i]}" -v b="${after[$i]}" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')" "$5"
  done
}

offset_watch() { "$JAVA" -cp "$WORK/classes:$KAFKA_LIB/*" OffsetWatch "$@" 2>/dev/null; }

kafka_topic_create() { # NAME PARTITIONS
  "$JAVA" -cp "$KAFKA_LIB/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --create --if-not-exists --topic "$1" --partitions "$2" --replication-factor 1 >/dev/null 2>&1
}

# The pipeline's topics exist before the runtime starts, as in a deployment (the operator
# creates them). Also sidesteps a race in the runtime: an ingest that creates the topics
# itself can fail at once with "fetch watermarks: NotLeaderForPartition".
pipeline_topics() { kafka_topic_create "$1-events" 6 && kafka_topic_create "$1-events-dlq" 6; }

first_error() { grep -m1 -E '^Error|ERROR' "$1" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300; }

search_count() { # INDEX -> document count (or -1)
  curl -s "$OPENSEARCH_URL/$1/_count" | "$PY" -c 'import json,sys
try: print(json.load(sys.stdin)["count"])
except Exception: print(-1)'
}

# ingest_file PIPELINE CSV -> prints events/s; progress records in bucket = PIPELINE
ingest_file() {
  local p=$1 csv=$2 log_file=$WORK/logs/ingest-$1.log out
  out=$(/usr/bin/time -o "$WORK/logs/ingest-$p.time" -f '%U %S %M' "$PR" ingest --pipeline "$p" --s3-bucket "$p" --input "$csv" 2>"$log_file") || {
    tail -5 "$log_file" >&2; return 1; }
  "$PY" -c 'import json,sys; s=json.loads(sys.argv[1]); print(round((s["rows_accepted"]+s["rows_rejected"])/s["seconds"],1), s["rows_accepted"], s["seconds"])' "$out"
}

# ------------------------------------------------------------------ stages

stage_ingest() {
  wait_for_low_load
  local i p line eps l ticks secs
  for ((i = 1; i <= RUNS; i++)); do
    p=bench-ing-$RUN_ID-$i
    pipeline_topics "$p"
    l=$(load1); ticks=$(svc_ticks)
    line=$(ingest_file "$p" "$CSV") || { not_measured ingest "ingest run $i failed: $(first_error "$WORK/logs/ingest-$p.log")"; return; }
    record_svc_cpu ingest ours "$i" "$ticks" "$l"
    read -r eps _ secs <<<"$line"
    log "ingest ours run $i: $eps ev/s (${secs}s, load $l)"
    record ingest ours_eps "$i" "$eps" "$l"
    record ingest ours_seconds "$i" "$secs" "$l"
    record ingest cpu_ours_runtime "$i" "$(awk '{ printf "%.2f", $1 + $2 }' "$WORK/logs/ingest-$p.time")" "$l"
  done
  for ((i = 1; i <= RUNS; i++)); do
    p=bench-py-$RUN_ID-$i
    kafka_topic_create "$p" 6
    l=$(load1); ticks=$(svc_ticks)
    line=$(/usr/bin/time -o "$WORK/logs/python-$p.time" -f '%U %S %M' "$PY" "$BENCH_DIR/producer.py" "$KAFKA_BOOTSTRAP" "$p" "$CSV") || { not_measured ingest "python run $i failed"; return; }
    record_svc_cpu ingest python "$i" "$ticks" "$l"
    record ingest cpu_python_producer "$i" "$(awk '{ printf "%.2f", $1 + $2 }' "$WORK/logs/python-$p.time")" "$l"
    eps=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["events_per_second"])' "$line")
    secs=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["seconds"])' "$line")
    log "ingest python run $i: $eps ev/s (${secs}s, load $l)"
    record ingest python_eps "$i" "$eps" "$l"
    record ingest python_seconds "$i" "$secs" "$l"
  done
}

# process_run PIPELINE GROUP_TAG MEMBERS -> seconds until committed == end (pre-filled topic)
process_run() {
  local p=$1 tag=$2 members=$3 group=$1-g-$2 watch_out=$WORK/logs/watch-$1-$2.txt t0 done_ms j pids=()
  offset_watch "$KAFKA_BOOTSTRAP" "$group" "$p-events" 300 >"$watch_out" &
  local watch_pid=$!
  while ! grep -q '^end=' "$watch_out" 2>/dev/null; do
    kill -0 $watch_pid 2>/dev/null || { log "offset watch failed"; return 1; }
    sleep 0.1
  done
  t0=$(now)
  for ((j = 1; j <= members; j++)); do
    "$PR" process --pipeline "$p" --consumer-group "$group" --search-index "$p-$tag" \
      --s3-bucket "$p-$tag" --exit-when-idle >/dev/null 2>"$WORK/logs/process-$p-$tag-$j.log" &
    pids+=($!)
  done
  # Stop waiting when every member has exited (a member that gives up would otherwise
  # leave the watch running until its timeout).
  while kill -0 $watch_pid 2>/dev/null; do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    if ((alive == 0)); then sleep 2; kill $watch_pid 2>/dev/null; break; fi
    sleep 0.2
  done
  wait $watch_pid
  local rc=$? ticks=0
  for pid in "${pids[@]}"; do ticks=$((ticks + $(pid_ticks "$pid"))); done
  echo "$ticks" >"$WORK/logs/process-$p-$tag.ticks"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  ((rc == 0)) || { log "committed offsets did not reach the end: $(cat "$watch_out")"; return 1; }
  done_ms=$(sed -n 's/^done_epoch_ms=\([0-9]*\).*/\1/p' "$watch_out")
  elapsed "$t0" "$(awk -v m="$done_ms" 'BEGIN { printf "%.3f", m / 1000 }')"
}

stage_process() {
  local p=bench-proc-$RUN_ID line members i secs l eps ticks
  pipeline_topics "$p"
  line=$(ingest_file "$p" "$CSV") || { not_measured process "pre-filling the topic failed"; return; }
  for members in 1 2; do
    wait_for_low_load
    for ((i = 1; i <= RUNS; i++)); do
      l=$(load1); ticks=$(svc_ticks)
      secs=$(process_run "$p" "m$members-r$i" "$members") || {
        not_measured process "$members member(s), run $i: the group's committed offsets never reached the end ($(tr '\n' ' ' <"$WORK/logs/watch-$p-m$members-r$i.txt")) and the members exited; first warning: $(grep -h -m1 -E 'WARN|ERROR' "$WORK"/logs/process-"$p"-m"$members"-r"$i"-*.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-260 | tr '\t\n' '  ')"
        continue 2; }
      eps=$(awk -v n="$EXPECTED_EVENTS" -v s="$secs" 'BEGIN { printf "%.1f", n / s }')
      log "process $members member(s) run $i: ${secs}s = $eps ev/s (load $l)"
      record process "eps_${members}" "$i" "$eps" "$l"
      record process "seconds_${members}" "$i" "$secs" "$l"
      record_svc_cpu process "m${members}" "$i" "$ticks" "$l"
      record process "cpu_m${members}_runtime" "$i" "$(awk -v t="$(cat "$WORK/logs/process-$p-m$members-r$i.ticks")" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')" "$l"
    done
  done
}

stage_e2e() {
  wait_for_low_load
  local i p t0 l count watch_out ingest_pid proc_pid done_ms t_search t_done
  for ((i = 1; i <= RUNS; i++)); do
    p=bench-e2e-$RUN_ID-$i
    pipeline_topics "$p"
    watch_out=$WORK/logs/watch-$p.txt
    offset_watch "$KAFKA_BOOTSTRAP" "$p-profiles" "$p-events" 600 "$EXPECTED_EVENTS" >"$watch_out" &
    local watch_pid=$!
    while ! grep -q '^end=' "$watch_out" 2>/dev/null; do sleep 0.1; done
    l=$(load1)
    t0=$(now)
    "$PR" ingest --pipeline "$p" --s3-bucket "$p" --input "$CSV" >/dev/null 2>"$WORK/logs/e2e-ingest-$p.log" &
    ingest_pid=$!
    "$PR" process --pipeline "$p" --s3-bucket "$p" >/dev/null 2>"$WORK/logs/e2e-process-$p.log" &
    proc_pid=$!
    t_search=""
    while :; do
      count=$(search_count "$p-profiles")
      if [[ $count == "$EXPECTED_PROFILES" ]]; then t_search=$(now); break; fi
      if ! kill -0 $proc_pid 2>/dev/null; then break; fi
      if (($(elapsed "$t0" "$(now)" | cut -d. -f1) > 600)); then break; fi
      sleep 0.2
    done
    wait $watch_pid
    local rc=$?
    wait $ingest_pid
    kill -TERM $proc_pid 2>/dev/null
    wait $proc_pid 2>/dev/null
    if [[ -z $t_search || $rc != 0 ]]; then
      not_measured e2e "run $i: index count $count of $EXPECTED_PROFILES, offsets: $(tr '\n' ' ' <"$watch_out")"
      return
    fi
    done_ms=$(sed -n 's/^done_epoch_ms=\([0-9]*\).*/\1/p' "$watch_out")
    t_done=$(awk -v m="$done_ms" -v s="$t_search" 'BEGIN { x = m / 1000; printf "%.3f", (x > s ? x : s) }')
    log "e2e run $i: searchable after $(elapsed "$t0" "$t_search")s, complete after $(elapsed "$t0" "$t_done")s (load $l)"
    record e2e searchable_seconds "$i" "$(elapsed "$t0" "$t_search")" "$l"
    record e2e complete_seconds "$i" "$(elapsed "$t0" "$t_done")" "$l"
  done
}

# run_pair SUFFIX CSV: RUNS alternating runs of ours and DuckDB on CSV, recorded as
# ours_seconds$SUFFIX and duckdb_seconds$SUFFIX; then the two results compared.
run_pair() {
  local suffix=$1 csv=$2 i l t0 secs out
  for ((i = 1; i <= RUNS; i++)); do
    rm -rf "$WORK/run-ours" "$WORK/run-duck"
    sync
    l=$(load1); t0=$(now)
    "$PR" run --input "$csv" --out "$WORK/run-ours" --quiet 2>/dev/null || { not_measured run "embedded run failed on $csv"; return; }
    secs=$(elapsed "$t0" "$(now)")
    log "run$suffix ours $i: ${secs}s (load $l)"
    record run "ours_seconds$suffix" "$i" "$secs" "$l"
    l=$(load1); t0=$(now)
    out=$("$PY" "$BENCH_DIR/duckdb_run.py" "$csv" "$WORK/run-duck") || { not_measured run "duckdb failed on $csv"; return; }
    secs=$(elapsed "$t0" "$(now)")
    log "run$suffix duckdb $i: ${secs}s (load $l) $out"
    record run "duckdb_seconds$suffix" "$i" "$secs" "$l"
  done
  out=$("$PY" "$BENCH_DIR/compare_profiles.py" "$WORK/run-ours" "$WORK/run-duck")
  log "profile comparison$suffix: $out"
  note run "profile comparison on $(basename "$csv") (ours vs DuckDB, every column of every profile): $out"
}

stage_run() {
  local raw=$WORK/data/events-raw-$RAW_EVENTS.csv
  [[ -s $raw ]] || "$PR" generate --events "$RAW_EVENTS" --seed $SEED --shape raw --output "$raw" 2>/dev/null
  wait_for_low_load
  run_pair "" "$CSV"
  wait_for_low_load
  run_pair "_raw" "$raw"
}

# peak_rss_kib TIME_V_LOG
peak_rss_kib() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }

stage_big() {
  local big=$WORK/data/events-$BIG_EVENTS.csv i l t0 secs rss
  [[ -s $big ]] || "$PR" generate --events "$BIG_EVENTS" --seed $SEED --output "$big" 2>/dev/null
  wait_for_low_load
  for ((i = 1; i <= RUNS; i++)); do
    rm -rf "$WORK/big-ours"
    l=$(load1); t0=$(now)
    /usr/bin/time -v "$PR" run --input "$big" --out "$WORK/big-ours" --quiet 2>"$WORK/logs/big-run-$i.log" >/dev/null ||
      { not_measured big "embedded run failed: $(tail -3 "$WORK/logs/big-run-$i.log" | tr '\n' ' ')"; return; }
    secs=$(elapsed "$t0" "$(now)")
    rss=$(peak_rss_kib "$WORK/logs/big-run-$i.log")
    log "big run $i: ${secs}s, peak RSS ${rss} KiB (load $l)"
    record big run_seconds "$i" "$secs" "$l"
    record big run_rss_mib "$i" "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')" "$l"
  done
  rm -rf "$WORK/big-ours"
  if [[ $BIG_DISTRIBUTED != 1 ]]; then
    not_measured big "distributed 10M (ingest + process through Kafka, S3, OpenSearch): skipped in this run (BIG_DISTRIBUTED=0)"
    return
  fi
  local p=bench-big-$RUN_ID expected watch_out
  expected=$("$PY" -c 'print(sum(1 for _ in open("'"$big"'")) - 1)')
  watch_out=$WORK/logs/watch-$p.txt
  offset_watch "$KAFKA_BOOTSTRAP" "$p-profiles" "$p-events" 1200 "$expected" >"$watch_out" &
  local watch_pid=$!
  pipeline_topics "$p"
  while ! grep -q '^end=' "$watch_out" 2>/dev/null; do sleep 0.1; done
  l=$(load1); t0=$(now)
  /usr/bin/time -v "$PR" ingest --pipeline "$p" --s3-bucket "$p" --input "$big" >/dev/null 2>"$WORK/logs/big-ingest.log" &
  local ingest_pid=$!
  /usr/bin/time -v "$PR" process --pipeline "$p" --s3-bucket "$p" >/dev/null 2>"$WORK/logs/big-process.log" &
  local proc_pid=$!
  wait $watch_pid
  local rc=$?
  secs=$(elapsed "$t0" "$(now)")
  wait $ingest_pid
  pkill -TERM -P $proc_pid 2>/dev/null
  wait $proc_pid 2>/dev/null
  if ((rc != 0)); then not_measured big "distributed 10M: offsets did not reach $expected: $(cat "$watch_out")"; return; fi
  record big distributed_seconds 1 "$secs" "$l"
  record big ingest_rss_mib 1 "$(awk -v k="$(peak_rss_kib "$WORK/logs/big-ingest.log")" 'BEGIN { printf "%.1f", k / 1024 }')" "$l"
  record big process_rss_mib 1 "$(awk -v k="$(peak_rss_kib "$WORK/logs/big-process.log")" 'BEGIN { printf "%.1f", k / 1024 }')" "$l"
  log "big distributed: ${secs}s"
}

# ------------------------------------------------------------------ search floor

# The search engine alone: every profile of the reference run bulk-indexed once, as the
# runtime sends them. The least work any process run must make the engine do; with its CPU
# seconds it bounds the process stage on this machine.
stage_searchfloor() {
  local i l out
  wait_for_low_load
  for ((i = 1; i <= RUNS; i++)); do
    l=$(load1)
    out=$("$PY" "$BENCH_DIR/search_floor.py" "$OPENSEARCH_URL" "$WORK/ref/profiles/*.parquet" \
      "$DP_RUN/opensearch/opensearch.pid" "bench-floor-$RUN_ID-$i" "$BENCH_DIR/profiles-index.json" \
      2>"$WORK/logs/searchfloor-$i.log") || { not_measured searchfloor "run $i: $(tail -1 "$WORK/logs/searchfloor-$i.log")"; return; }
    record searchfloor docs_per_second "$i" "$("$PY" -c 'import json,sys; s=json.loads(sys.argv[1]); print(round(s["docs"]/s["seconds"]))' "$out")" "$l"
    record searchfloor cpu_seconds "$i" "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["opensearch_cpu_seconds"])' "$out")" "$l"
    # The events/s a process run could reach if only the engine's floor cost time.
    record searchfloor allows_eps "$i" "$("$PY" -c 'import json,sys; print(round(int(sys.argv[2])/json.loads(sys.argv[1])["seconds"]))' "$out" "$EXPECTED_EVENTS")" "$l"
    log "search floor run $i: $out (load $l)"
  done
}

# ------------------------------------------------------------------ operator

k() { "$KUBECTL" "$@"; }

# pipeline_yaml NAME -> an all-managed DataPipeline (examples/shop-events.yaml, renamed)
pipeline_yaml() {
  sed -e "s/^  name: shop$/  name: $1/" -e "s/bucket: shop-lake/bucket: $1-lake/" \
    -e "s/index: shop-profiles/index: $1-profiles/" "$REPO/examples/shop-events.yaml"
}

# observed NAMESPACE -> how many DataPipelines have a status written for generation 1
observed_count() {
  k -n "$1" get dp -o jsonpath='{range .items[*]}{.status.observedGeneration}{"\n"}{end}' 2>/dev/null | grep -c '^1$'
}

children_count() { # NAMESPACE INSTANCE
  k -n "$1" get statefulsets,deployments,services,configmaps,secrets,poddisruptionbudgets,jobs \
    -l "app.kubernetes.io/instance=$2" -o name 2>/dev/null | wc -l
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

stage_operator() {
  local ns=bench-op-$RUN_ID op_pid t0 l i n secs
  k get --raw /readyz >/dev/null 2>&1 || { not_measured operator "control plane not reachable (e2e/services.sh up k8s)"; return; }
  "$WORK/datapipeline-operator" crd | k apply --server-side --force-conflicts -f - >/dev/null || {
    not_measured operator "CRD install failed"; return; }
  k wait --for=condition=Established crd/datapipelines.datapipeline.io --timeout=60s >/dev/null
  k create namespace "$ns" >/dev/null
  "$WORK/datapipeline-operator" run --watch-namespace "$ns" --http-address 127.0.0.1:18089 \
    >"$WORK/logs/operator.log" 2>&1 &
  op_pid=$!
  sleep 3
  kill -0 $op_pid 2>/dev/null || { not_measured operator "operator exited: $(tail -3 "$WORK/logs/operator.log")"; return; }
  wait_for_low_load
  for ((i = 1; i <= RUNS; i++)); do
    l=$(load1); t0=$(now)
    pipeline_yaml "single-$i" | k -n "$ns" apply -f - >/dev/null
    while [[ $(k -n "$ns" get dp "single-$i" -o jsonpath='{.status.observedGeneration}' 2>/dev/null) != 1 ]]; do
      if (($(elapsed "$t0" "$(now)" | cut -d. -f1) > 120)); then
        not_measured operator "pipeline single-$i got no status within 120 s: $(tail -3 "$WORK/logs/operator.log")"
        kill $op_pid; return
      fi
      sleep 0.05
    done
    secs=$(elapsed "$t0" "$(now)")
    n=$(children_count "$ns" "single-$i")
    log "operator apply -> children ($n) + status: ${secs}s (load $l)"
    record operator apply_one_seconds "$i" "$secs" "$l"
    record operator children_per_pipeline "$i" "$n" "$l"
  done
  # 50 pipelines at once (the singles stay: 50 in total).
  l=$(load1); t0=$(now)
  local total=50 start=$((RUNS + 1))
  for ((i = start; i <= total; i++)); do pipeline_yaml "dp-$i"; echo '---'; done >"$WORK/fifty.yaml"
  k -n "$ns" apply -f "$WORK/fifty.yaml" >/dev/null
  while (($(observed_count "$ns") < total)); do
    if (($(elapsed "$t0" "$(now)" | cut -d. -f1) > 300)); then
      not_measured operator "only $(observed_count "$ns") of $total pipelines reconciled within 300 s"; break
    fi
    sleep 0.2
  done
  secs=$(elapsed "$t0" "$(now)")
  record operator apply_batch_seconds 1 "$secs" "$l"
  log "operator: $((total - RUNS)) pipelines applied together, all reconciled after ${secs}s"
  # Idle: let kwok settle pod readiness and the status updates it triggers, then measure.
  sleep 30
  local hz c0 c1 rss hwm
  hz=$(getconf CLK_TCK)
  l=$(load1)
  c0=$(cpu_ticks $op_pid); sleep 60; c1=$(cpu_ticks $op_pid)
  rss=$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' /proc/$op_pid/status)
  hwm=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' /proc/$op_pid/status)
  record operator idle_cpu_percent 1 "$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN { printf "%.3f", (b - a) / hz / 60 * 100 }')" "$l"
  record operator rss_mib 1 "$rss" "$l"
  record operator peak_rss_mib 1 "$hwm" "$l"
  log "operator idle: $(((c1 - c0))) ticks in 60 s, RSS ${rss} MiB, peak ${hwm} MiB"
  kill -TERM $op_pid; wait $op_pid 2>/dev/null
  k delete namespace "$ns" --wait=false >/dev/null
}

# ------------------------------------------------------------------ cleanup

# Removes what this run created on the shared servers (topics and indices carry RUN_ID;
# buckets are left: versitygw keeps them as directories, small). KEEP=1 keeps everything.
cleanup() {
  [[ ${KEEP:-0} == 1 ]] && return
  "$JAVA" -cp "$KAFKA_LIB/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --delete --topic "bench-.*-$RUN_ID.*" >/dev/null 2>&1
  curl -s -X DELETE "$OPENSEARCH_URL/bench-*-$RUN_ID*?expand_wildcards=open" >/dev/null
}

# ------------------------------------------------------------------ main

main() {
  mkdir -p "$WORK/logs"
  setup
  local stage
  for stage in $STAGES; do
    log "stage $stage (load $(load1))"
    "stage_$stage" || not_measured "$stage" "stage exited with an error (see $WORK/logs)"
    # After every stage, so an interrupted run still leaves what it measured.
    "$PY" "$BENCH_DIR/report.py" "$RESULTS" "$REPO/BENCHMARKS.md" "$STAGES"
  done
  cleanup
  log "wrote $REPO/BENCHMARKS.md"
}

main "$@"
