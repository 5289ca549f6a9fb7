"""How long the embedded broker holds a consumer's fetch: one record every ``--gap-ms`` from a
producer (linger 5 ms, the paced producer's), read by a consumer polling all the while; each
record's latency is its receipt time minus its CreateTime (one clock). Once per
``fetch_max_wait_ms`` given, each on its own topic; prints the quantiles, ``--out`` the JSON.

    .venv/bin/python bench/throughput_fetch_wait.py [--waits 500 50] [--records 60]
        [--gap-ms 100] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from throughput_clients import PACED_LINGER_MS, embedded_services
from throughput_measures import quantiles_ms

from worker.ops.settings import KafkaSettings
from worker.stream.topics import ensure_topics


def held_ms(bootstrap: str, wait_ms: int, records: int, gap_s: float) -> list[float]:
    """Latency of each of ``records`` records sent ``gap_s`` apart, ``fetch_max_wait_ms``
    being ``wait_ms`` (fetch_min_bytes: kafka-python's default, 1)."""
    topic = f"fetch-wait-{wait_ms}-{time.monotonic_ns()}"
    ensure_topics(bootstrap, KafkaSettings(), [topic])
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{topic}",
        fetch_max_wait_ms=wait_ms,
        auto_offset_reset="earliest",
    )
    deadline = time.monotonic() + 60
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=PACED_LINGER_MS)

    def send() -> None:
        for i in range(records):
            producer.send(topic, key=str(i % 4).encode(), value=b"{}")
            time.sleep(gap_s)
        producer.flush()

    sender = threading.Thread(target=send)
    sender.start()
    latencies: list[float] = []
    deadline = time.monotonic() + records * gap_s + 30
    while len(latencies) < records and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=1_000).values():
            now_ms = time.time() * 1000
            latencies += [now_ms - m.timestamp for m in batch]
    sender.join()
    consumer.close()
    producer.close()
    return latencies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--waits", type=int, nargs="+", default=[500, 50], help="fetch_max_wait_ms")
    ap.add_argument("--records", type=int, default=60)
    ap.add_argument("--gap-ms", type=float, default=100.0, help="between two sends")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "loadavg_before": os.getloadavg(),
        "records": args.records,
        "gap_ms": args.gap_ms,
        "producer_linger_ms": PACED_LINGER_MS,
        "runs": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="seq2gmm-fetch-wait-") as tmp,
        embedded_services(Path(tmp)) as (kafka_url, _),
    ):
        for wait in args.waits:
            q = quantiles_ms(held_ms(kafka_url, wait, args.records, args.gap_ms / 1000))
            result["runs"].append({"fetch_max_wait_ms": wait, **q})
            print(
                f"fetch_max_wait_ms {wait}: {q['n']} records, p50 {q['p50_ms']:.0f},"
                f" p90 {q['p90_ms']:.0f}, p99 {q['p99_ms']:.0f}, max {q['max_ms']:.0f} ms"
            )
    result["loadavg_after"] = os.getloadavg()
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
