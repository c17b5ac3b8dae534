#!/usr/bin/env python3
"""Compares the profiles Parquet of `pipeline-runtime run` with DuckDB's (profiles.sql).
Prints {"ours": n, "duckdb": n, "mismatched": n, "examples": [...]}; exit 1 on a difference.

usage: compare_profiles.py OURS_DIR DUCKDB_DIR
"""
import json
import sys

import duckdb

COLUMNS = """user_id, total_events, views, carts, removals, purchases,
    CAST(revenue AS DECIMAL(20,2)) AS revenue, CAST(avg_order_value AS DECIMAL(18,2)) AS aov,
    CAST(max_purchase_price AS DECIMAL(18,2)) AS max_price,
    distinct_sessions, distinct_products, active_days,
    epoch_us(CAST(first_seen AS TIMESTAMP)) AS first_us, epoch_us(CAST(last_seen AS TIMESTAMP)) AS last_us,
    favorite_category, favorite_brand,
    round(conversion_rate, 12) AS conv, round(cart_to_purchase_rate, 12) AS c2p, segment"""


def main():
    ours, duck = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW a AS SELECT {COLUMNS} FROM read_parquet('{ours}/profiles/**/*.parquet')")
    con.execute(f"CREATE VIEW b AS SELECT {COLUMNS} FROM read_parquet('{duck}/profiles/**/*.parquet')")
    n_a = con.execute("SELECT count(*) FROM a").fetchone()[0]
    n_b = con.execute("SELECT count(*) FROM b").fetchone()[0]
    diff = con.execute("SELECT * FROM ((SELECT * FROM a EXCEPT ALL SELECT * FROM b) "
                       "UNION ALL (SELECT * FROM b EXCEPT ALL SELECT * FROM a)) ORDER BY user_id").fetchall()
    print(json.dumps({"ours": n_a, "duckdb": n_b, "mismatched_rows": len(diff),
                      "examples": [str(r) for r in diff[:4]]}))
    sys.exit(0 if n_a == n_b and not diff else 1)


if __name__ == "__main__":
    main()
