#!/usr/bin/env python3
"""Renders BENCHMARKS.md from the raw results of e2e/bench/run.sh.

usage: report.py RESULTS_TSV OUTPUT_MD "STAGES"

RESULTS_TSV lines: stage, metric, run, value, load (1-minute load average when the run
started). Per metric: median, min, max over the runs; goals from design brief §9. Hand
written analysis in e2e/bench/where-the-time-goes.md is appended when present.
"""
import datetime
import os
import pathlib
import platform
import statistics
import subprocess
import sys

# metric -> (row label, unit, goal text, goal check on the median or None)
METRICS = {
    ("ingest", "ours_eps"): ("ingest CSV -> Kafka (acks=all): `pipeline-runtime ingest`", "events/s", ">= 400,000", lambda v: v >= 400_000),
    ("ingest", "python_eps"): ("ingest CSV -> Kafka (acks=all): Python confluent-kafka producer", "events/s", "(baseline; seed: 8,209)", None),
    ("process", "eps_1"): ("process Kafka -> profiles -> Parquet (S3) + search, 1 process", "events/s", ">= 200,000", lambda v: v >= 200_000),
    ("process", "eps_2"): ("process Kafka -> profiles -> Parquet (S3) + search, 2 processes", "events/s", ">= 200,000", lambda v: v >= 200_000),
    ("searchfloor", "docs_per_second"): ("search engine alone: bulk-index every profile of the 885,129-event run once (OpenSearch, 2 requests in flight)", "docs/s", "(what bounds process)", None),
    ("searchfloor", "allows_eps"): ("search engine alone: events/s a process run could reach if indexing each profile once were its only cost (events / floor seconds)", "events/s", "", None),
    ("searchfloor", "cpu_seconds"): ("search engine alone: OpenSearch CPU to index every profile once", "CPU s", "", None),
    ("e2e", "searchable_seconds"): ("885,129 events CSV -> all profiles searchable", "s", "<= 15", lambda v: v <= 15),
    ("e2e", "complete_seconds"): ("885,129 events CSV -> profiles searchable and lake complete (offsets committed)", "s", "<= 15", lambda v: v <= 15),
    ("run", "ours_seconds"): ("embedded `run`, 885,129 events, tidy file (events + profiles Parquet)", "s", "<= 0.8 x DuckDB", None),
    ("run", "duckdb_seconds"): ("DuckDB, same job (e2e/bench/profiles.sql), tidy file", "s", "(baseline)", None),
    ("run", "ours_seconds_raw"): ("embedded `run`, 887,767 events, raw file (`generate --shape raw`: 19-digit ids, 158 days out of order, quoted brands)", "s", "<= 0.8 x DuckDB", None),
    ("run", "duckdb_seconds_raw"): ("DuckDB, same job, raw file", "s", "(baseline)", None),
    ("big", "run_seconds"): ("10M events, embedded `run`: wall time", "s", "<= 150", lambda v: v <= 150),
    ("big", "run_rss_mib"): ("10M events, embedded `run`: peak RSS", "MiB", "<= 1024", lambda v: v <= 1024),
    ("big", "distributed_seconds"): ("10M events, ingest + process through Kafka/S3/OpenSearch: wall time", "s", "<= 150", lambda v: v <= 150),
    ("big", "ingest_rss_mib"): ("10M events distributed: ingest peak RSS", "MiB", "<= 1024", lambda v: v <= 1024),
    ("big", "process_rss_mib"): ("10M events distributed: process peak RSS", "MiB", "<= 1024", lambda v: v <= 1024),
    ("operator", "apply_one_seconds"): ("operator: apply one DataPipeline -> all children created + status written", "s", "<= 2", lambda v: v <= 2),
    ("operator", "children_per_pipeline"): ("operator: children per all-managed pipeline", "objects", "", None),
    ("operator", "apply_batch_seconds"): ("operator: apply the remaining pipelines (50 minus the single ones) in one kubectl apply -> all 50 reconciled", "s", "", None),
    ("operator", "idle_cpu_percent"): ("operator idle CPU with 50 DataPipelines (60 s)", "% of one core", "~0", lambda v: v < 1.0),
    ("operator", "rss_mib"): ("operator RSS with 50 DataPipelines (idle)", "MiB", "<= 64", lambda v: v <= 64),
    ("operator", "peak_rss_mib"): ("operator peak RSS (VmHWM) during the 50 applies", "MiB", "<= 64", lambda v: v <= 64),
}


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def machine():
    model = cores = ""
    for line in sh("lscpu").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model = value.strip()
        if key.strip() == "CPU(s)":
            cores = value.strip()
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return f"{model}, {cores} CPUs, {mem_kib / 1024 / 1024:.1f} GiB RAM, {platform.system()} {platform.release()}"


def fmt(v, unit):
    if unit in ("events/s", "docs/s"):
        return f"{v:,.0f}"
    if unit in ("objects",):
        return f"{v:,.0f}"
    if unit.startswith("%"):
        return f"{v:.3f}"
    return f"{v:,.2f}"


def main():
    results, output, stages = sys.argv[1], sys.argv[2], sys.argv[3]
    repo = pathlib.Path(output).resolve().parent
    values, loads, notes, missing = {}, {}, [], []
    for line in open(results):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 5:
            continue
        stage, metric, run, value, load = parts
        if metric == "NOT_MEASURED":
            missing.append((stage, value))
        elif metric == "NOTE":
            notes.append((stage, value))
        else:
            values.setdefault((stage, metric), []).append(float(value))
            loads.setdefault((stage, metric), []).append(load)

    commit = sh("git", "-C", str(repo), "rev-parse", "--short", "HEAD")
    # BENCHMARKS.md itself is rewritten after every stage; it does not make the tree dirty.
    dirty = sh("git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no",
               "--", ".", ":!BENCHMARKS.md")
    out = []
    out.append("# Benchmarks\n")
    out.append("Measured by `e2e/bench/run.sh` (see its header), on the harness's real servers "
               "(`e2e/services.sh up kafka opensearch s3 k8s`), all on this one machine.\n")
    out.append(f"- Machine: {machine()}")
    out.append(f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    out.append(f"- Commit: `{commit}`" + (" with uncommitted changes in the work tree" if dirty else ""))
    measured = sorted({stage for stage, _ in values} | {stage for stage, _ in missing})
    out.append(f"- Stages in these results: `{' '.join(measured)}`; the last command was "
               f"`STAGES=\"{stages}\" RUNS={os.environ.get('RUNS', '3')}"
               + (" BIG_DISTRIBUTED=1" if os.environ.get("BIG_DISTRIBUTED") == "1" else "")
               + (" APPEND=1" if os.environ.get("APPEND") == "1" else "")
               + " e2e/bench/run.sh`" + (" (added to the previous run's results)" if os.environ.get("APPEND") == "1" else ""))
    out.append("- The 1-minute load average when each run started is given; with 2 cores, a load "
               "above 2 means the benchmark got less than the whole machine (the servers' own idle "
               "work, or other builds on a shared machine).\n")
    out.append("| what | unit | goal (brief §9) | median | min | max | runs | load at each run | goal |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    medians = {}
    for key, (label, unit, goal, check) in METRICS.items():
        if key not in values:
            continue
        vs = values[key]
        med = statistics.median(vs)
        medians[key] = med
        verdict = ""
        if check is not None:
            verdict = "met" if check(med) else "**missed**"
        out.append(f"| {label} | {unit} | {goal} | {fmt(med, unit)} | {fmt(min(vs), unit)} | "
                   f"{fmt(max(vs), unit)} | {len(vs)} | {', '.join(loads[key])} | {verdict} |")
    ratios = []
    if ("ingest", "ours_eps") in medians and ("ingest", "python_eps") in medians:
        r = medians[("ingest", "ours_eps")] / medians[("ingest", "python_eps")]
        ratios.append(f"| ingest: ours / Python (medians) | x | >= 10 | {r:.1f} | | | | | {'met' if r >= 10 else '**missed**'} |")
    if ("process", "eps_1") in medians and ("searchfloor", "allows_eps") in medians:
        r = medians[("process", "eps_1")] / medians[("searchfloor", "allows_eps")]
        ratios.append(f"| process, 1 member / what the search floor allows (medians, same run) | x | >= 0.8 | {r:.2f} | | | | | {'met' if r >= 0.8 else '**missed**'} |")
    for suffix, shape in (("", "tidy file"), ("_raw", "raw file")):
        ours, duck = ("run", "ours_seconds" + suffix), ("run", "duckdb_seconds" + suffix)
        if ours in medians and duck in medians:
            r = medians[ours] / medians[duck]
            ratios.append(f"| embedded run: our time / DuckDB time (medians), {shape} | x | <= 0.8 | {r:.2f} | | | | | {'met' if r <= 0.8 else '**missed**'} |")
    out.extend(ratios)
    out.append("")
    cpu = sorted(k for k in values if k[1].startswith("cpu_") and k not in METRICS)
    if cpu:
        out.append("### CPU seconds used during each measured run (what bounds the stage)\n")
        out.append("Runtime: user+system CPU of our process(es) (or the Python producer); servers: CPU "
                   "ticks of the broker, OpenSearch and versitygw processes over the same interval. "
                   "CPU seconds / wall seconds close to 2 means the 2 cores were the limit.\n")
        out.append("| stage | run of | CPU s: median | min | max | runs |")
        out.append("|---|---|---|---|---|---|")
        for key in cpu:
            vs = values[key]
            _, who = key[1].split("_", 1)
            out.append(f"| {key[0]} | {who.replace('_', ': ', 1)} | {statistics.median(vs):.2f} | {min(vs):.2f} | {max(vs):.2f} | {len(vs)} |")
        out.append("")
    if notes:
        out.append("## Checks\n")
        for stage, text in notes:
            out.append(f"- {stage}: {text}")
        out.append("")
    if missing:
        out.append("## Not measured\n")
        for stage, text in missing:
            out.append(f"- {stage}: not measured: {text}")
        out.append("")
    analysis = pathlib.Path(__file__).with_name("where-the-time-goes.md")
    if analysis.exists():
        out.append(analysis.read_text().rstrip() + "\n")
    pathlib.Path(output).write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
