#!/usr/bin/env python3
"""Runs profiles.sql with DuckDB on one CSV and prints {"seconds": ..., "profiles": ...}.

usage: duckdb_run.py CSV OUT_DIR [THREADS]
"""
import json
import os
import pathlib
import sys
import time

import duckdb


def main():
    csv_path, out = sys.argv[1], sys.argv[2]
    sql = pathlib.Path(__file__).with_name("profiles.sql").read_text()
    sql = sql.replace("{input}", csv_path).replace("{out}", out)
    os.makedirs(os.path.join(out, "profiles"), exist_ok=True)
    started = time.perf_counter()
    con = duckdb.connect()
    if len(sys.argv) > 3:
        con.execute(f"SET threads = {int(sys.argv[3])}")
    con.execute(sql)
    seconds = time.perf_counter() - started
    profiles = con.execute("SELECT count(*) FROM profiles").fetchone()[0]
    events = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    print(json.dumps({"seconds": round(seconds, 3), "profiles": profiles, "events": events}))


if __name__ == "__main__":
    main()
