"""The throughput bench's side of the services: the embedded broker and valkey, producers
(bulk and paced by the clock), the bare kafka-python consumer, a topic reader, and the
``seq2gmm worker`` subprocess with its peak RSS."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from throughput_measures import Encoded

from worker.dev.services import TansuBroker, ValkeyServer, free_port
from worker.errors import ServiceError
from worker.ops.settings import KafkaSettings
from worker.stream.kafka_clients import make_consumer

REPO = Path(__file__).resolve().parent.parent
PAYLOAD_LINGER_MS = 20  # the bulk producer (pre-filling topics)
PACED_LINGER_MS = 5  # the paced producer of the latency run (the worker's own producer's)


@contextlib.contextmanager
def embedded_services(data_dir: Path) -> Iterator[tuple[str, str]]:
    """A private tansu broker and valkey server on free loopback ports (tests' `services`)."""
    kafka = TansuBroker(data_dir, "127.0.0.1", free_port())
    redis_srv = ValkeyServer(data_dir, "127.0.0.1", free_port())
    kafka.start(timeout_s=30)
    try:
        redis_srv.start(timeout_s=30)
        try:
            yield kafka.url, redis_srv.url
        finally:
            redis_srv.stop()
    finally:
        kafka.stop()


# --------------------------------------------------------------------------- kafka helpers


def produce_all(bootstrap: str, topic: str, messages: Iterable[Encoded]) -> float:
    """Send every message (key = series id) and flush; returns the seconds it took."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="bench-producer",
        linger_ms=PAYLOAD_LINGER_MS,
        batch_size=262_144,
    )
    started = time.perf_counter()
    for key, value in messages:
        producer.send(topic, key=key.encode(), value=value)
    producer.flush()
    seconds = time.perf_counter() - started
    producer.close()
    return seconds


class _FirstAssignment(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.at: float | None = None

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        if self.at is None:
            self.at = time.perf_counter()


def bare_consume(bootstrap: str, kafka: KafkaSettings, expected: int) -> dict[str, Any]:
    """A kafka-python consumer with the worker's settings but its own group: ``json.loads``
    of every value until all ``expected`` messages were read. Timed from its assignment (as
    the worker is) and, for comparison, from its first record."""
    consumer = make_consumer(bootstrap, kafka, group_id=f"{kafka.group_id}-bare", client_id="bare")
    listener = _FirstAssignment()
    consumer.subscribe([kafka.raw_topic], listener=listener)
    count, first = 0, None
    deadline = time.monotonic() + 120 + expected / 1_000
    while count < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            if first is None:
                first = time.perf_counter()
            for message in batch:
                json.loads(message.value)
                count += 1
    ended = time.perf_counter()
    consumer.close(autocommit=False)
    if listener.at is None or first is None:
        raise ServiceError("the bare consumer read nothing; is the broker up? (see its log)")
    seconds = ended - listener.at
    return {
        "messages": count,
        "seconds": seconds,
        "msg_per_s": count / seconds,
        "first_record_s": first - listener.at,
        "msg_per_s_from_first": count / (ended - first) if ended > first else None,
    }


def read_topic(
    bootstrap: str, topic: str, partitions: int, at_least: int, idle_s: float = 5.0
) -> list[Any]:
    """Every record of ``topic`` from the beginning: reads until ``at_least`` arrived and a poll
    comes back empty, or nothing came for ``idle_s`` (tansu's end offsets can lag its log)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="bench-reader")
    parts = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    got: list[Any] = []
    last_new = time.monotonic()
    while True:
        new = [m for batch in consumer.poll(timeout_ms=200).values() for m in batch]
        got += new
        if new:
            last_new = time.monotonic()
        elif len(got) >= at_least or time.monotonic() - last_new > idle_s:
            break
    consumer.close()
    return got


# --------------------------------------------------------------------------- the worker process


def vm_hwm_mb(pid: int) -> float | None:
    """The process's peak resident set so far (VmHWM of /proc/PID/status), None once gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of the process so far (/proc/PID/stat), None once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The process's children (/proc/PID/task/*/children), none once it is gone."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(p) for p in task.read_text().split()]
        except OSError:
            continue
    return out


class WorkerProcess:
    """``seq2gmm worker`` (``python -m worker worker``) with its output read by threads and its
    VmHWM sampled every ``SAMPLE_EVERY_S``. Not ``ru_maxrss`` from wait4: a child spawned from
    this (large) process carries the parent's high-water mark across exec."""

    SAMPLE_EVERY_S = 0.05

    def __init__(self, model: str, env: dict[str, str], *args: str) -> None:
        cmd = [sys.executable, "-m", "worker", "worker", "--model", model, *args]
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.assigned = threading.Event()
        self.peak_rss_mb = 0.0
        self._children_mb: dict[int, float] = {}  # e.g. the scoring process
        self.cpu_s = 0.0  # CPU seconds of the worker process, last sampled
        self._children_cpu: dict[int, float] = {}
        self.cpu_at_assigned: tuple[float, float] | None = None  # (worker, children)
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            if '"partitions_assigned"' in line:
                self.assigned.set()

    def wait_assigned(self, timeout_s: float) -> bool:
        """True once the worker logged its partitions_assigned; False when it exited first or
        ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.assigned.wait(timeout=0.2):
                return True
        return self.assigned.is_set()

    def kill(self) -> None:
        self.proc.kill()

    def _sample(self) -> None:
        while self.proc.poll() is None:
            hwm = vm_hwm_mb(self.proc.pid)
            if hwm is not None:
                self.peak_rss_mb = max(self.peak_rss_mb, hwm)
            self.cpu_s = cpu_seconds(self.proc.pid) or self.cpu_s
            for child in child_pids(self.proc.pid):
                hwm, cpu = vm_hwm_mb(child), cpu_seconds(child)
                if hwm is not None:
                    self._children_mb[child] = max(self._children_mb.get(child, 0.0), hwm)
                if cpu is not None:
                    self._children_cpu[child] = cpu
            if self.assigned.is_set() and self.cpu_at_assigned is None:
                self.cpu_at_assigned = (self.cpu_s, self.children_cpu_s())
            time.sleep(self.SAMPLE_EVERY_S)

    def children_cpu_s(self) -> float:
        """CPU seconds of the worker's child processes, last sampled (0 without any)."""
        return sum(self._children_cpu.values())

    def children_peak_rss_mb(self) -> float:
        """The sum of the peak RSS of the worker's child processes (0 without any)."""
        return sum(self._children_mb.values())

    def wait(self, timeout_s: float) -> float:
        """Wait for the worker to exit; returns its peak RSS in MB. ServiceError when it failed
        or ran past ``timeout_s`` (then it is killed)."""
        try:
            self.proc.wait(timeout=timeout_s)
            why = f"exit {self.proc.returncode}"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            why = f"ran past {timeout_s:.0f} s, killed"
        for t in self._threads:
            t.join(timeout=10)
        if self.proc.returncode != 0:
            tail = "".join(self.stderr[-20:])
            raise ServiceError(f"the worker failed ({why}); its last log lines:\n{tail}")
        return self.peak_rss_mb


PACED_CLIENTS = ("confluent", "kafka-python")


def paced_client(name: str) -> str:
    """``auto``: the librdkafka producer (confluent-kafka, the ``bench`` extra) when it is
    installed, else kafka-python; a named client is taken as asked."""
    if name != "auto":
        return name
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return "kafka-python"
    return "confluent"


def paced_send(
    bootstrap: str,
    topic: str,
    messages: Iterator[Encoded],
    rate: float,
    seconds: float,
    client: str = "kafka-python",
) -> tuple[int, float, float]:
    """Send at ``rate`` msg/s by the clock for ``seconds``; returns (sent, elapsed seconds,
    CPU seconds of this process meanwhile: the producer shares the machine with the worker).

    The messages are encoded before the clock starts, and ``client`` picks the producer:
    kafka-python took 56-69 % of a core at 18,700-23,700 msg/s on the 2-core box, librdkafka
    (``confluent``) 8-11 % at 17,600-25,000 (this loop included), so the latter leaves the
    worker most of the CPU that a producer on another host would (docs/benchmarks.md)."""
    count = int(rate * seconds) + 1
    wanted = [(key.encode(), value) for key, value in itertools.islice(messages, count)]
    send, flush = _paced_producer(bootstrap, topic, client)
    cpu_started = time.process_time()
    sent, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds and sent < len(wanted):
        due = min(int(elapsed * rate), len(wanted))
        while sent < due:
            send(*wanted[sent])
            sent += 1
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    flush()
    cpu_s = time.process_time() - cpu_started
    return sent, elapsed, cpu_s


def _paced_producer(
    bootstrap: str, topic: str, client: str
) -> tuple[Callable[[bytes, bytes], None], Callable[[], None]]:
    """(send(key, value), flush-and-close) of the paced producer: linger 5 ms, acks 1, keys
    partitioned by murmur2 as kafka-python and the Java client do."""
    if client == "kafka-python":
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, client_id="bench-paced", linger_ms=PACED_LINGER_MS
        )
        producer.partitions_for(topic)  # metadata before the clock (CreateTime is at send)

        def close() -> None:
            producer.flush()
            producer.close()

        def send(key: bytes, value: bytes) -> None:
            producer.send(topic, key=key, value=value)

        return send, close
    from confluent_kafka import Producer

    fast = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "bench-paced",
            "linger.ms": PACED_LINGER_MS,
            "acks": 1,
            "partitioner": "murmur2_random",
        }
    )

    fast.list_topics(topic, timeout=30)  # connected, with metadata, before the clock starts

    def produce(key: bytes, value: bytes) -> None:
        fast.produce(topic, key=key, value=value)
        fast.poll(0)

    def drain() -> None:
        if left := fast.flush(30):
            raise ServiceError(f"the paced producer could not deliver {left} messages in 30 s")

    return produce, drain
