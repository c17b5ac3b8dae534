"""The search engine's share of the process stage, measured alone: bulk-index every profile
of the reference run (one document per user, the least any pipeline must send) into a fresh
index with the runtime's mapping, 5,000 documents per request and 2 requests in flight, the
responses trimmed to each item's status and error (as the runtime sends them), then refresh. Prints JSON: docs, seconds, and the CPU seconds the
OpenSearch process used meanwhile.

    search_floor.py OPENSEARCH_URL PROFILES_GLOB OPENSEARCH_PID_FILE INDEX MAPPING_JSON
"""
import json
import os
import sys
import threading
import time
import urllib.request

import duckdb

url, profiles, pid_file, index, mapping_file = sys.argv[1:6]


def request(method, path, body=None, content_type="application/json"):
    req = urllib.request.Request(url + path, data=body, method=method,
                                 headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=300) as response:
        return json.loads(response.read())


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The documents as the runtime writes them: money in units with cents, times in RFC 3339.
rows = duckdb.sql(f"""
  select user_id, to_json({{
    user_id: user_id, total_events: total_events, views: views, carts: carts,
    removals: removals, purchases: purchases, revenue: revenue::double,
    avg_order_value: avg_order_value::double, max_purchase_price: max_purchase_price::double,
    distinct_sessions: distinct_sessions, distinct_products: distinct_products,
    active_days: active_days,
    first_seen: strftime(first_seen, '%Y-%m-%dT%H:%M:%SZ'),
    last_seen: strftime(last_seen, '%Y-%m-%dT%H:%M:%SZ'),
    favorite_category: favorite_category, favorite_brand: favorite_brand,
    conversion_rate: conversion_rate, cart_to_purchase_rate: cart_to_purchase_rate,
    segment: segment}})::varchar
  from '{profiles}'""").fetchall()
bodies = []
for start in range(0, len(rows), 5000):
    lines = []
    for user_id, doc in rows[start:start + 5000]:
        lines.append('{"index":{"_id":"%d"}}' % user_id)
        lines.append(doc)
    bodies.append(("\n".join(lines) + "\n").encode())

request("PUT", f"/{index}", json.dumps(json.load(open(mapping_file))).encode())
pid = int(open(pid_file).read().strip())
next_body = iter(bodies)
lock = threading.Lock()
errors = []


def sender():
    while True:
        with lock:
            body = next(next_body, None)
        if body is None:
            return
        # The response trimmed to what the runtime reads (src/search.rs, BULK_RESPONSE_FIELDS).
        answer = request("POST", f"/{index}/_bulk?filter_path=errors,items.*.status,items.*.error",
                         body, "application/x-ndjson")
        if answer.get("errors"):
            errors.append(json.dumps(answer)[:300])


cpu0, t0 = cpu_seconds(pid), time.time()
threads = [threading.Thread(target=sender) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
request("POST", f"/{index}/_refresh")
seconds, cpu = time.time() - t0, cpu_seconds(pid) - cpu0
count = request("GET", f"/{index}/_count")["count"]
request("DELETE", f"/{index}")
if errors or count != len(rows):
    sys.exit(f"indexed {count} of {len(rows)}; first error: {errors[:1]}")
print(json.dumps({"docs": count, "seconds": round(seconds, 3),
                  "opensearch_cpu_seconds": round(cpu, 2)}))
