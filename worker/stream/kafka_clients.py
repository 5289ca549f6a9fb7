"""Kafka clients built from the settings (security options and group membership included).

Group membership is dynamic by default. ``SEQ2GMM_KAFKA__GROUP_INSTANCE_ID`` makes the worker's
consumer a *static* member (KIP-345): a worker restarted under the same ``group.instance.id``
takes its partitions back without waiting for the dead member's session timeout. ``auto``
derives the id from the hostname and a per-host slot held with a file lock
(:func:`group_instance`), so it is stable across container restarts and two workers on one host
never share it. A clean close leaves the group even as a static member (:class:`GroupConsumer`),
so a scale-down or a rolling update rebalances at once. Why dynamic is the default (the embedded
broker makes every static join take >= 6 s) and the measured recovery times:
docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from worker.errors import ServiceError
from worker.ops.settings import KafkaSettings
from worker.stream.messages import MAX_MESSAGE_BYTES

MAX_REQUEST_BYTES = MAX_MESSAGE_BYTES + 64 * 1024  # topics need max.message.bytes >= this
#: how many workers of one group on one host get an ``auto`` static id (more: dynamic)
MAX_SLOTS = 64
#: how long the worker's lag check waits for the broker (kafka-python's default: 30 s)
END_OFFSETS_TIMEOUT_MS = 2_000

log = structlog.get_logger()


def make_producer(bootstrap: str, kafka: KafkaSettings, **overrides: Any) -> RecoveringProducer:
    """Idempotent producer, acks=all: a retried send never duplicates or reorders records. It
    replaces itself when the broker lost its state (see :class:`RecoveringProducer`)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": f"{kafka.client_id}-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        # a dead letter is an input record (<= 1 MiB, the schema's limit) plus headers
        "max_request_size": MAX_REQUEST_BYTES,
        **kafka.client_options(),
    }
    opts.update(overrides)

    def connect() -> KafkaProducer:
        try:
            return KafkaProducer(**opts)
        except KafkaError as exc:
            raise ServiceError(f"cannot connect a producer to Kafka at {bootstrap}: {exc}") from exc

    return RecoveringProducer(connect)


class _Send:
    """One send: its arguments (to send again) and the delivery future of its latest try.
    ``exception`` is the latest try's error, as of the last :meth:`failed`."""

    __slots__ = ("args", "exception", "future")

    def __init__(self, args: tuple[Any, ...], future: Any) -> None:
        self.args = args
        self.future = future
        self.exception: Any = None

    def failed(self) -> bool:
        self.exception = self.future.exception
        return bool(self.future.failed())

    def delivered(self) -> bool:
        return bool(self.future.is_done and self.future.succeeded())


class RecoveringProducer:
    """A KafkaProducer that a broker restart does not break for good.

    An idempotent producer whose broker lost its state (a restarted broker with memory storage,
    or a producer id expired) gets UnknownProducerId; kafka-python then asks for a new epoch, and
    a broker that refuses (tansu answers UnknownError) leaves the producer fatally failed: every
    later send fails. :meth:`flush` therefore replaces a producer whose records failed with a
    fresh one (a new producer id) and sends those records again, in their order, up to
    ``attempts`` times; what still fails is reported failed as before (nothing is committed past
    it: at-least-once). Logged as ``producer_replaced``."""

    PRUNE_EVERY = 1024  # sends between drops of delivered records from the resend list

    def __init__(
        self, connect: Callable[[], KafkaProducer], attempts: int = 3, backoff_s: float = 1.0
    ) -> None:
        self._connect = connect
        self._producer = connect()
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.replaced = 0  # producers replaced so far
        self._sent: list[_Send] = []

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> _Send:
        args = (topic, value, key, headers, partition)
        sent = _Send(
            args,
            self._producer.send(topic, value=value, key=key, headers=headers, partition=partition),
        )
        self._sent.append(sent)
        if len(self._sent) % self.PRUNE_EVERY == 0:
            self._sent = [s for s in self._sent if not s.delivered()]
        return sent

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout)
        for attempt in range(1, self.attempts + 1):
            failed = [s for s in self._sent if s.failed()]
            if not failed:
                break
            log.warning(
                "producer_replaced",
                failed_records=len(failed),
                error=str(failed[0].exception),
                attempt=attempt,
                hint="the broker lost this producer's state (restarted?); sending them again",
            )
            time.sleep(self.backoff_s * (attempt - 1))
            self._replace()
            for s in failed:
                topic, value, key, headers, partition = s.args
                s.future = self._producer.send(
                    topic, value=value, key=key, headers=headers, partition=partition
                )
            self._producer.flush(timeout)
        self._sent.clear()

    def _replace(self) -> None:
        old, self._producer = self._producer, None
        with contextlib.suppress(Exception):  # a fatally failed producer may fail to close
            old.close(timeout=1)
        self._producer = self._connect()
        self.replaced += 1

    def close(self, timeout: float | None = None) -> None:
        if self._producer is not None:
            self._producer.close(timeout=timeout)


@dataclass
class GroupInstance:
    """A consumer's ``group.instance.id`` (None: dynamic member) and the lock that reserves an
    ``auto`` id on this host while the process lives (the kernel drops it even on SIGKILL)."""

    id: str | None
    lock: IO[str] | None = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def _safe(text: str) -> str:
    """``text`` in the characters Kafka allows in ids and this project in file names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:180] or "worker"


def group_instance(
    kafka: KafkaSettings, group_id: str, lock_dir: Path | None = None
) -> GroupInstance:
    """The static id for ``kafka.group_instance_id`` (see the module docstring).

    ``auto``: ``HOSTNAME-SLOT`` where SLOT is the lowest free one of ``MAX_SLOTS`` lock files
    in ``lock_dir`` (default: the temp directory), so a restarted worker takes its old id back
    and a second worker on the host takes the next one. No writable lock directory, or every
    slot taken: dynamic membership, with a warning (slower recovery, never a shared id)."""
    value = kafka.group_instance_id
    if value in ("", "none"):
        return GroupInstance(None)
    if value != "auto":
        return GroupInstance(value)
    folder = lock_dir if lock_dir is not None else Path(tempfile.gettempdir())
    host = _safe(socket.gethostname())
    for slot in range(MAX_SLOTS):
        path = folder / f"seq2gmm-member-{_safe(group_id)}-{slot}.lock"
        try:
            handle = open(path, "a")  # noqa: SIM115 - held open for the process's lifetime
        except OSError as exc:
            log.warning(
                "static_membership_unavailable",
                reason=f"cannot write {path}: {exc}",
                hint="set SEQ2GMM_KAFKA__GROUP_INSTANCE_ID to an id unique per replica",
            )
            return GroupInstance(None)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return GroupInstance(f"{host}-{slot}", handle)
    log.warning(
        "static_membership_unavailable",
        reason=f"{MAX_SLOTS} workers of group {group_id} already run on this host",
        hint="set SEQ2GMM_KAFKA__GROUP_INSTANCE_ID to an id unique per replica",
    )
    return GroupInstance(None)


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; elsewhere 0: as if just started)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))


class GroupConsumer(KafkaConsumer):
    """A KafkaConsumer that leaves its group on :meth:`close` even as a static member.

    kafka-python, like the Java client, sends no LeaveGroup for a static member: its partitions
    would sit idle for a session timeout after every scale-down. A worker that closes cleanly
    (SIGTERM) is going away, so it leaves; one that crashes does not, and its restart under the
    same id takes the partitions straight back."""

    def __init__(self, instance: GroupInstance, **configs: Any) -> None:
        super().__init__(group_instance_id=instance.id, **configs)
        self.instance = instance
        self.broker_reachable = True  # the latest end_offsets() got an answer
        self._ends: dict[TopicPartition, int] = {}
        self._join_at: float | None = None
        if configs.get("group_id") and instance.id is None:
            session_s = configs.get("session_timeout_ms", 10_000) / 1000
            self._join_at = time.monotonic() + session_s / 2 + 0.5 - process_age_s()

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None, update_offsets: bool = True
    ) -> Any:
        """The first poll (the group join) waits until the process is ``session / 2 + 0.5 s``
        old. A dynamic member restarted after a crash that joins sooner finds its dead
        predecessor still in the group: on the embedded tansu its join then ends as a follower
        of the dead leader, whose SyncGroup fails and re-joins (11 s); joining later, the dead
        member has expired by the end of tansu's 3 s join pause (3 s). Measured:
        docs/reliability.md."""
        if self._join_at is not None:
            wait, self._join_at = self._join_at - time.monotonic(), None
            if wait > 0:
                time.sleep(wait)
        return super().poll(
            timeout_ms=timeout_ms, max_records=max_records, update_offsets=update_offsets
        )

    def end_offsets(
        self, partitions: list[TopicPartition], timeout_ms: int | None = None
    ) -> dict[TopicPartition, int]:
        """The log ends, or while the broker does not answer within ``END_OFFSETS_TIMEOUT_MS``
        the last ones known (the high watermark, else 0, for a partition never asked): the
        worker's periodic lag check must neither stop its loop for kafka-python's 30 s request
        timeout nor end it with a KafkaTimeoutError while a broker restarts. Logged once per
        outage (``broker_unreachable`` / ``broker_reachable_again``)."""
        try:
            ends: dict[TopicPartition, int] = super().end_offsets(
                partitions, timeout_ms=timeout_ms or END_OFFSETS_TIMEOUT_MS
            )
        except KafkaError as exc:
            if self.broker_reachable:
                log.warning(
                    "broker_unreachable",
                    error=str(exc),
                    hint="the worker keeps polling and reconnects when the broker is back",
                )
            self.broker_reachable = False
            return {tp: self._ends.get(tp, self.highwater(tp) or 0) for tp in partitions}
        if not self.broker_reachable:
            log.info("broker_reachable_again")
        self.broker_reachable = True
        self._ends.update(ends)
        return ends

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        if self.instance.id is not None and not self._closed:
            # the coordinator's close() leaves only when it takes itself for a dynamic member
            self._coordinator.is_dynamic_member = lambda: True
            log.info("leaving_group", group_instance_id=self.instance.id)
        try:
            super().close(autocommit=autocommit, timeout_ms=timeout_ms)
        finally:
            self.instance.release()


def make_consumer(bootstrap: str, kafka: KafkaSettings, **overrides: Any) -> KafkaConsumer:
    """Consumer with manual commits, the configured group timing and, in a group, the static
    membership of ``kafka.group_instance_id``."""
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": kafka.client_id,
        "group_id": kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": kafka.auto_offset_reset,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "max_poll_records": kafka.max_poll_records,
        "fetch_max_wait_ms": kafka.fetch_max_wait_ms,
        **kafka.client_options(),
    }
    opts.update(overrides)
    group_id = opts["group_id"]
    instance = group_instance(kafka, group_id) if group_id else GroupInstance(None)
    if instance.id is not None:
        log.info("static_group_member", group_id=group_id, group_instance_id=instance.id)
    try:
        return GroupConsumer(instance, **opts)
    except KafkaError as exc:
        instance.release()
        raise ServiceError(f"cannot connect a consumer to Kafka at {bootstrap}: {exc}") from exc
