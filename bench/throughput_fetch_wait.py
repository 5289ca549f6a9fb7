"""How long the embedded broker holds a consumer's fetch: one record every ``--gap-ms`` from a
producer (linger 5 ms, the paced producer's), or ``--rate`` records a second for ``--seconds``
from the latency run's paced producer (``--paced-client``), read by a bare kafka-python
consumer polling all the while; each record's latency is its receipt time minus its CreateTime
(one clock): the broker's and the client's share of the worker's end-to-end latency, with no
worker. Once per ``fetch_max_wait_ms`` given, each on its own topic; prints the quantiles,
``--out`` the JSON.

    .venv/bin/python bench/throughput_fetch_wait.py [--waits 500 50] [--records 60]
        [--gap-ms 100] [--rate 22500 --seconds 10 [--paced-client auto]] [--idle-seconds 10]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from throughput_clients import (
    PACED_CLIENTS,
    PACED_LINGER_MS,
    child_pids,
    cpu_seconds,
    embedded_services,
    paced_client,
    paced_send,
)
from throughput_measures import quantiles_ms

from worker.ops.settings import KafkaSettings
from worker.stream.topics import ensure_topics


def held_ms(
    bootstrap: str,
    wait_ms: int,
    records: int,
    gap_s: float,
    rate: float = 0.0,
    client: str = "kafka-python",
) -> list[float]:
    """Latency of each of ``records`` records sent ``gap_s`` apart, or paced at ``rate`` msg/s
    by ``client`` (100 keys, one-sample-sized values), ``fetch_max_wait_ms`` being ``wait_ms``
    (fetch_min_bytes: kafka-python's default, 1)."""
    topic = f"fetch-wait-{wait_ms}-{time.monotonic_ns()}"
    consumer = _joined_consumer(bootstrap, topic, wait_ms)
    sender = threading.Thread(target=_sender(bootstrap, topic, records, gap_s, rate, client))
    sender.start()
    latencies: list[float] = []
    deadline = time.monotonic() + records * gap_s + 30
    while len(latencies) < records and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=1_000).values():
            now_ms = time.time() * 1000
            latencies += [now_ms - m.timestamp for m in batch]
    sender.join()
    consumer.close()
    return latencies


def idle_cpu(bootstrap: str, wait_ms: int, seconds: float) -> dict[str, float]:
    """Share of a core that a consumer polling an empty topic, and the broker (tansu; not the
    idle valkey) answering it, take for ``seconds``: the price of a short ``fetch_max_wait_ms``
    while idle."""
    consumer = _joined_consumer(bootstrap, f"fetch-idle-{wait_ms}-{time.monotonic_ns()}", wait_ms)
    broker = [p for p in child_pids(os.getpid()) if "tansu" in _cmdline(p)]
    broker_cpu, own_cpu, started = _cpu(broker), time.process_time(), time.monotonic()
    while time.monotonic() - started < seconds:
        consumer.poll(timeout_ms=200)
    elapsed = time.monotonic() - started
    consumer.close()
    return {
        "consumer_core_share": (time.process_time() - own_cpu) / elapsed,
        "broker_core_share": (_cpu(broker) - broker_cpu) / elapsed,
    }


def _joined_consumer(bootstrap: str, topic: str, wait_ms: int) -> KafkaConsumer:
    """A consumer of the new ``topic`` (created here), in its group with partitions assigned."""
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
    return consumer


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) or 0.0 for p in pids)


def _sender(
    bootstrap: str, topic: str, records: int, gap_s: float, rate: float, client: str
) -> Callable[[], None]:
    if rate > 0:
        value = b'{"series_id": "s-00", "timestamp": 12345.0, "value": 0.123456789}'
        messages = ((f"s-{i % 100:02d}", value) for i in range(records))
        return lambda: paced_send(bootstrap, topic, messages, rate, records / rate, client)

    def send() -> None:
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=PACED_LINGER_MS)
        for i in range(records):
            producer.send(topic, key=str(i % 4).encode(), value=b"{}")
            time.sleep(gap_s)
        producer.flush()
        producer.close()

    return send


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--waits", type=int, nargs="+", default=[500, 50], help="fetch_max_wait_ms")
    ap.add_argument("--records", type=int, default=60)
    ap.add_argument("--gap-ms", type=float, default=100.0, help="between two sends")
    ap.add_argument("--rate", type=float, default=0.0, help="paced msg/s instead of --gap-ms")
    ap.add_argument("--seconds", type=float, default=10.0, help="paced run length (--rate)")
    ap.add_argument("--paced-client", choices=["auto", *PACED_CLIENTS], default="auto")
    ap.add_argument("--idle-seconds", type=float, default=0.0, help="also: CPU while idle")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    client = paced_client(args.paced_client)
    if args.rate > 0:
        args.records, args.gap_ms = int(args.rate * args.seconds), 0.0
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "loadavg_before": os.getloadavg(),
        "records": args.records,
        "gap_ms": args.gap_ms,
        "rate": args.rate or None,
        "paced_client": client if args.rate > 0 else "kafka-python",
        "producer_linger_ms": PACED_LINGER_MS,
        "runs": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="seq2gmm-fetch-wait-") as tmp,
        embedded_services(Path(tmp)) as (kafka_url, _),
    ):
        for wait in args.waits:
            held = held_ms(kafka_url, wait, args.records, args.gap_ms / 1000, args.rate, client)
            q = quantiles_ms(held)
            idle = idle_cpu(kafka_url, wait, args.idle_seconds) if args.idle_seconds else {}
            result["runs"].append({"fetch_max_wait_ms": wait, **q, **idle})
            print(
                f"fetch_max_wait_ms {wait}: {q['n']} records, p50 {q['p50_ms']:.0f},"
                f" p90 {q['p90_ms']:.0f}, p99 {q['p99_ms']:.0f}, max {q['max_ms']:.0f} ms"
                + "".join(f"; idle {k} {100 * v:.1f} %" for k, v in idle.items())
            )
    result["loadavg_after"] = os.getloadavg()
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
