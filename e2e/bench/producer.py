#!/usr/bin/env python3
"""Baseline for the ingest benchmark: the seed's approach (a Python confluent-kafka
producer) doing the same work as `pipeline-runtime ingest` on the same file and broker.

Per row: parse with the csv module (columns by header name), validate the required fields
the way the runtime does (integer ids, known type, price >= 0), build the same JSON event
(RFC 3339 time, price as a decimal string, nulls for empty optionals), key by user_id.
Producer settings match the runtime's (idempotent, acks=all, lz4, linger 20 ms, large
batches). Rejected rows are only counted (the runtime sends them to a dead-letter topic;
generated files have none).

usage: producer.py BOOTSTRAP TOPIC CSV_FILE   -> prints one JSON line with counts and seconds
"""
import csv
import json
import sys
import time
from decimal import Decimal, InvalidOperation

from confluent_kafka import Producer

TYPES = {"view", "cart", "remove_from_cart", "purchase"}


def event_time(text):
    # "YYYY-MM-DD HH:MM:SS UTC" -> RFC 3339 "YYYY-MM-DDTHH:MM:SSZ"; RFC 3339 kept as is.
    if text.endswith(" UTC") and len(text) == 23:
        return text[:10] + "T" + text[11:19] + "Z"
    return text


def main():
    bootstrap, topic, path = sys.argv[1:4]
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1000000,
        "batch.num.messages": 100000,
        "queue.buffering.max.messages": 500000,
        "queue.buffering.max.kbytes": 262144,
        "partitioner": "murmur2_random",  # Java-compatible, as the runtime partitions
    })
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))

    started = time.perf_counter()
    accepted = rejected = 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader)
        col = {name: i for i, name in enumerate(header)}
        t_col = col.get("event_time", col.get("timestamp"))
        width = len(header)
        get = lambda row, name: row[col[name]] if name in col else ""
        for row in reader:
            if not row:
                continue
            try:
                if len(row) != width:
                    raise ValueError("field count")
                etype = row[col["event_type"]]
                if etype not in TYPES:
                    raise ValueError("event_type")
                user_id = int(row[col["user_id"]])
                product_id = int(row[col["product_id"]])
                if user_id <= 0 or product_id <= 0:
                    raise ValueError("id")
                price = Decimal(row[col["price"]])
                if not price.is_finite() or price < 0:
                    raise ValueError("price")
                cat = get(row, "category_id")
                event = {
                    "event_time": event_time(row[t_col]),
                    "event_type": etype,
                    "product_id": product_id,
                    "category_id": int(cat) if cat else None,
                    "category_code": get(row, "category_code") or None,
                    "brand": get(row, "brand") or None,
                    "price": f"{price.quantize(Decimal('0.01'))}",
                    "user_id": user_id,
                    "user_session": get(row, "user_session") or None,
                }
            except (ValueError, InvalidOperation, KeyError):
                rejected += 1
                continue
            value = json.dumps(event, separators=(",", ":")).encode()
            key = str(user_id).encode()
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            accepted += 1
            if accepted % 10000 == 0:
                producer.poll(0)
    producer.flush()
    seconds = time.perf_counter() - started
    print(json.dumps({"accepted": accepted, "rejected": rejected, "errors": len(errors),
                      "seconds": round(seconds, 3),
                      "events_per_second": round(accepted / seconds, 1)}))
    if errors:
        sys.exit(f"{len(errors)} delivery errors, first: {errors[0]}")


if __name__ == "__main__":
    main()
