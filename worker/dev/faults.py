"""Fault injection around real worker processes (the fault suite and its soak bench).

:class:`FaultServices` runs a private tansu broker and private valkey servers that can be
restarted, stopped, or frozen with SIGSTOP (as in a network partition: connections hang instead
of being refused) without touching anyone else's. A :class:`Lane` is one deployment on them: its
own topics, consumer group, registry prefix and model, and ``seq2gmm worker`` processes started
as real subprocesses, so ``kill -9`` and SIGTERM are the real thing. Input windows are
deterministic (:func:`window_messages`), so every published record maps back to the window it
scores: :func:`tally` counts windows lost and duplicates.

Used by ``tests/test_faults.py`` (``make faults``) and ``bench/faults_soak.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from worker.dev.services import TansuBroker, ValkeyServer, free_port
from worker.errors import ServiceError
from worker.ops.settings import KafkaSettings
from worker.registry.connection import connect
from worker.registry.store import ModelRegistry
from worker.stream.kafka_clients import MAX_REQUEST_BYTES
from worker.stream.topics import ensure_topics

PARTITIONS = 4
MODEL = "faults"
Message = tuple[bytes | None, bytes | None]  # (key, value)


# ------------------------------------------------------------------------------- the input


def window_messages(
    series: int, first: int, count: int, length: int, prefix: str = "s"
) -> list[Message]:
    """Windows ``first .. first+count-1`` of series ``prefix-0 .. prefix-{series-1}``, one
    chunk message per window, interleaved across series; window ``j`` of a series starts at
    ``j * length`` (seconds), so a record's (series, start) names its window."""
    base = np.sin(np.linspace(0.0, 2 * np.pi, length, endpoint=False))
    out: list[Message] = []
    for j in range(first, first + count):
        noise = np.random.default_rng(j).standard_normal((series, length)) * 0.05
        for k in range(series):
            sid = f"{prefix}-{k}"
            body = {
                "series_id": sid,
                "start": float(j * length),
                "interval": 1.0,
                "values": [round(float(v), 6) for v in base + noise[k]],
            }
            out.append((sid.encode(), json.dumps(body).encode()))
    return out


def window_ids(series: int, first: int, count: int, length: int, prefix: str = "s") -> set[str]:
    """The (series, window start) names of :func:`window_messages`' windows."""
    return {
        f"{prefix}-{k}@{j * length}" for j in range(first, first + count) for k in range(series)
    }


def record_window(value: bytes) -> str:
    """The (series, window start) name of a published anomaly record."""
    rec = json.loads(value)
    return f"{rec['series_id']}@{round(float(rec['window']['start']))}"


@dataclass(frozen=True)
class Tally:
    """Published records against the windows that were sent."""

    expected: int
    published: int  # records on the output topic
    lost: int  # windows sent, never published
    duplicates: int  # records beyond the first of their window (at-least-once)
    unexpected: int  # records of windows never sent (must be 0)

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items()}


def tally(expected: set[str], values: Iterable[bytes]) -> Tally:
    seen = [record_window(v) for v in values]
    unique = set(seen)
    return Tally(
        expected=len(expected),
        published=len(seen),
        lost=len(expected - unique),
        duplicates=len(seen) - len(unique),
        unexpected=len(unique - expected),
    )


class Feeder:
    """Produces window after window of ``series`` series at ``rate`` windows a second (all
    series together) to some raw topics, on a thread, until :meth:`stop`."""

    def __init__(
        self, bootstrap: str, topics: list[str], series: int, length: int, rate: float
    ) -> None:
        self.bootstrap, self.topics = bootstrap, topics
        self.series, self.length, self.rate = series, length, rate
        self.rounds = 0  # windows produced per series so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def _run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        began = time.monotonic()
        try:
            while not self._stop.is_set():
                batch = window_messages(self.series, self.rounds, 1, self.length)
                for topic in self.topics:
                    for key, value in batch:
                        producer.send(topic, key=key, value=value)
                producer.flush()
                self.rounds += 1
                due = began + self.rounds * self.series / self.rate
                self._stop.wait(max(0.0, due - time.monotonic()))
        finally:
            producer.close(timeout=5)

    def stop(self) -> set[str]:
        """Stop; the names of every window produced."""
        self._stop.set()
        self._thread.join(30)
        return window_ids(self.series, 0, self.rounds, self.length)


# ---------------------------------------------------------------------------- the services


MOTO_SERVER = """
import sys, time
import boto3
from moto.server import ThreadedMotoServer
port = int(sys.argv[1])
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
server.start()
boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
             aws_access_key_id="x", aws_secret_access_key="x").create_bucket(Bucket="tansu")
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def moto_python() -> str | None:
    """A Python that can run moto's S3 server (this one, else ``python3`` on PATH), or None."""
    for candidate in (sys.executable, "python3"):
        probe = subprocess.run(
            [candidate, "-c", "import moto.server, boto3, flask"], capture_output=True
        )
        if probe.returncode == 0:
            return candidate
    return None


class S3Server:
    """moto's S3 server on loopback with a bucket ``tansu``: durable storage for the broker
    (``--storage-engine s3://tansu/``) that outlives a broker restart."""

    def __init__(self, python: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [python, "-c", MOTO_SERVER, str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # moto says a line of its own first
            if line.strip() == "ready":
                return
        self.stop()
        raise ServiceError("moto's S3 server did not start")

    def env(self) -> list[str]:
        return [
            f"AWS_ENDPOINT=http://127.0.0.1:{self.port}",
            "AWS_ACCESS_KEY_ID=x",
            "AWS_SECRET_ACCESS_KEY=x",
            "AWS_DEFAULT_REGION=us-east-1",
            "AWS_ALLOW_HTTP=true",
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class DurableTansu(TansuBroker):
    """The embedded broker on S3 storage (an :class:`S3Server`) instead of memory."""

    def __init__(self, data_dir: Path, host: str, port: int, s3: S3Server) -> None:
        super().__init__(data_dir, host, port)
        self.s3 = s3

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--storage-engine") + 1] = "s3://tansu/"
        return ["env", *self.s3.env(), *cmd]  # env execs tansu: same pid, tansu's cmdline


class FaultServices:
    """A private broker and any number of private valkey servers, under ``root``."""

    def __init__(self, root: Path, s3: S3Server | None = None) -> None:
        """``s3``: durable broker storage (else memory: a restart loses everything)."""
        self.root = root
        self.s3 = s3
        port = free_port()
        self.broker: TansuBroker = (
            DurableTansu(root / "kafka", "127.0.0.1", port, s3)
            if s3 is not None
            else TansuBroker(root / "kafka", "127.0.0.1", port)
        )
        self.valkeys: list[ValkeyServer] = []

    def start(self) -> FaultServices:
        self.broker.start(timeout_s=30)
        return self

    def valkey(self) -> ValkeyServer:
        server = ValkeyServer(self.root / f"valkey-{len(self.valkeys)}", "127.0.0.1", free_port())
        server.start(timeout_s=30)
        self.valkeys.append(server)
        return server

    @property
    def bootstrap(self) -> str:
        return self.broker.url

    def restart_broker(self, down_s: float) -> None:
        """Stop the broker (SIGTERM), keep it down ``down_s``, start it on the same port. With
        memory storage it starts empty (topics, records and committed offsets are gone); with
        S3 storage it finds them again."""
        self.broker.stop()
        time.sleep(down_s)
        self.broker.start(timeout_s=30)

    def close(self) -> None:
        for server in self.valkeys:
            resume(server)
            server.stop()
        self.broker.stop()
        if self.s3 is not None:
            self.s3.stop()


def freeze(server: ValkeyServer) -> None:
    """SIGSTOP: the server keeps its sockets but answers nothing (a network partition)."""
    pid = server.pid()
    if pid is None:
        raise ServiceError(f"{server.name} on port {server.port} is not running")
    os.kill(pid, signal.SIGSTOP)


def resume(server: ValkeyServer) -> None:
    pid = server.pid()
    if pid is not None:
        os.kill(pid, signal.SIGCONT)


# -------------------------------------------------------------------------------- a lane


@dataclass
class WorkerRun:
    """One ``seq2gmm worker`` process and its log files."""

    proc: subprocess.Popen[bytes]
    started: float  # time.time() at launch
    out: Path
    err: Path
    summary: dict[str, Any] = field(default_factory=dict)

    def events(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines (stderr)."""
        lines = self.err.read_text(errors="replace").splitlines()
        return [json.loads(x) for x in lines if x.startswith("{")]


class Lane:
    """One deployment on the fault services: topics, group, registry prefix and model."""

    def __init__(
        self,
        services: FaultServices,
        name: str,
        model_dir: Path,
        redis: ValkeyServer,
        env: dict[str, str] | None = None,
    ) -> None:
        self.services, self.name, self.redis = services, name, redis
        self.raw, self.out, self.dlq = f"{name}.raw", f"{name}.anomalies", f"{name}.dlq"
        self.logs = services.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS": services.bootstrap,
            "SEQ2GMM_REDIS__URL": redis.url,
            "SEQ2GMM_REDIS__KEY_PREFIX": name,
            "SEQ2GMM_KAFKA__RAW_TOPIC": self.raw,
            "SEQ2GMM_KAFKA__ANOMALIES_TOPIC": self.out,
            "SEQ2GMM_KAFKA__DEAD_LETTER_TOPIC": self.dlq,
            "SEQ2GMM_INCIDENTS__TOPIC": f"{name}.incidents",
            "SEQ2GMM_KAFKA__GROUP_ID": f"g-{name}",
            "SEQ2GMM_KAFKA__NUM_PARTITIONS": str(PARTITIONS),
            "SEQ2GMM_WORKER__MODEL": MODEL,
            "SEQ2GMM_WORKER__MODEL_POLL_INTERVAL_S": "0.5",
            "SEQ2GMM_WORKER__MODEL_CACHE_DIR": str(services.root / f"cache-{name}"),
            "SEQ2GMM_LOGGING__FORMAT": "json",
            "SEQ2GMM_DEVICE": "cpu",
            "SEQ2GMM_TORCH_THREADS": "1",
            "SEQ2GMM_METRICS__PORT": "0",
            **(env or {}),
        }
        self.ensure_topics()
        with ModelRegistry(connect(redis.url), name) as registry:
            self.version = registry.publish_dir(model_dir, MODEL, promote=True)
        self.runs: list[WorkerRun] = []
        self._producer: KafkaProducer | None = None

    def ensure_topics(self) -> None:
        kafka = KafkaSettings(num_partitions=PARTITIONS)
        ensure_topics(self.services.bootstrap, kafka, [self.raw, self.out, self.dlq])

    def registry(self) -> ModelRegistry:
        return ModelRegistry(connect(self.redis.url), self.name)

    # -- workers -------------------------------------------------------------------------
    def start_worker(self, *args: str, env: dict[str, str] | None = None) -> WorkerRun:
        n = len(self.runs)
        out, err = self.logs / f"{self.name}-{n}.out", self.logs / f"{self.name}-{n}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "worker", *args],
                env={**self.env, **(env or {})},
                stdout=o,
                stderr=e,
            )
        run = WorkerRun(proc, time.time(), out, err)
        self.runs.append(run)
        return run

    def kill(self, run: WorkerRun) -> None:
        """kill -9: no drain, no flush, no commit, no leave."""
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait()

    def stop(self, run: WorkerRun, timeout_s: float = 60.0) -> dict[str, Any]:
        """SIGTERM and the run's summary; raises ServiceError when it did not exit cleanly."""
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
        return self.finish(run, timeout_s)

    def finish(self, run: WorkerRun, timeout_s: float = 120.0) -> dict[str, Any]:
        try:
            run.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait()
            raise ServiceError(f"worker {run.out.stem} did not exit in {timeout_s} s") from None
        if run.proc.returncode != 0:
            tail = run.err.read_text(errors="replace")[-3000:]
            raise ServiceError(f"worker {run.out.stem} exited {run.proc.returncode}:\n{tail}")
        run.summary = json.loads(run.out.read_text().strip().splitlines()[-1])
        return run.summary

    def close(self) -> None:
        for run in self.runs:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=1)

    # -- input and output ----------------------------------------------------------------
    def produce(self, messages: Sequence[Message], topic: str | None = None) -> None:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.services.bootstrap,
                linger_ms=5,
                max_request_size=MAX_REQUEST_BYTES,
            )
        for key, value in messages:
            self._producer.send(topic or self.raw, key=key, value=value)
        self._producer.flush()

    def reset_producer(self) -> None:
        """Drop the producer (after a broker restart its idempotence state is stale)."""
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=1)
        self._producer = None

    def read(self, topic: str, at_least: int = 0, timeout_s: float = 60.0) -> list[Any]:
        """Every record of ``topic``, once ``at_least`` arrived and the count held for 1 s."""
        return list(read_topic(self.services.bootstrap, topic, at_least, timeout_s))

    def first_output_after(self, since: float, timeout_s: float) -> float | None:
        """Seconds from ``since`` (time.time()) to the first output record created after it."""
        consumer = KafkaConsumer(bootstrap_servers=self.services.bootstrap)
        parts = [TopicPartition(self.out, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=100).values():
                    stamps = [m.timestamp / 1000 for m in batch if m.timestamp / 1000 >= since]
                    if stamps:
                        return min(stamps) - since
        finally:
            consumer.close()
        return None


def read_topic(bootstrap: str, topic: str, at_least: int, timeout_s: float) -> Iterator[Any]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    last_growth = time.monotonic()
    try:
        while time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=200)
            for batch in polled.values():
                got.extend(batch)
            if polled:
                last_growth = time.monotonic()
            if len(got) >= at_least and time.monotonic() - last_growth > 1.0:
                break
    finally:
        consumer.close()
    return iter(got)


def created_between(records: Iterable[Any], start: float, end: float) -> int:
    """How many records the producer created in [start, end) (time.time() seconds)."""
    return sum(1 for m in records if start <= m.timestamp / 1000 < end)


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ServiceError(f"no VmRSS for pid {pid}")
