"""Many models in one worker (the routed core), driven in memory: routing by prefix, each
series scored by its own model, cold starts that wait or dead-letter, route changes between
batches that lose nothing, a bounded number of lanes, and the Kafka loop over fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from worker.ops.http_server import Health
from worker.ops.settings import Settings
from worker.stream.core import CoreOptions, InRecord, OutRecord
from worker.stream.core_settings import core_options
from worker.stream.envelopes import ERROR_HEADER
from worker.stream.kafka_loop import RunLimits, StreamWorker
from worker.stream.messages import AnomalyRecord
from worker.stream.routed import RoutedCore, RoutingOptions
from worker.stream.routing import RouteTable
from worker.stream.testing import CallLog, FakeConsumer, FakeModel, FakeProducer, fake_clients

RAW = "ts.raw"


class Feed:
    """Records of chunk messages, offsets counted per partition."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}
        self.t: dict[str, float] = {}

    def __call__(self, sid: str, values: list[float], partition: int = 0) -> InRecord:
        start = self.t.get(sid, 0.0)
        self.t[sid] = start + len(values)
        body = {"series_id": sid, "start": start, "interval": 1, "values": values}
        off = self.next.get(partition, 0)
        self.next[partition] = off + 1
        return InRecord(RAW, partition, off, sid.encode(), json.dumps(body).encode())


def routed(
    table: RouteTable, **routing: object
) -> tuple[RoutedCore, list[str], list[str], dict[str, RouteTable]]:
    wanted: list[str] = []
    released: list[str] = []
    holder = {"table": table}
    core = RoutedCore(
        lambda: holder["table"],
        CoreOptions(linger_s=0.0, max_windows=64),
        RoutingOptions(**routing),  # type: ignore[arg-type]
        want=wanted.append,
        release=released.append,
    )
    return core, wanted, released, holder


def drain(core: RoutedCore) -> list[OutRecord]:
    out: list[OutRecord] = []
    while core.backlog():
        out += core.score_batch()
    return out


def anomalies(out: list[OutRecord]) -> list[AnomalyRecord]:
    return [AnomalyRecord.model_validate_json(r.value) for r in out if r.topic == "ts.anomalies"]


def two_models() -> tuple[FakeModel, FakeModel]:
    return FakeModel(name="links", length=4, hop=4), FakeModel(name="cpu", length=6, hop=6)


TABLE = RouteTable().with_rule("core-", "links").with_rule("*.cpu", "cpu")


def test_each_series_is_scored_by_its_routed_model_as_offline() -> None:
    core, wanted, _, _ = routed(TABLE)
    links, cpu = two_models()
    for m in (links, cpu):
        core.swap_model(m)
    feed = Feed()
    a = np.arange(12.0)
    b = np.arange(100.0, 112.0)
    dead = core.ingest([feed("core-1", a[:5].tolist()), feed("sw.cpu", b.tolist())])
    dead += core.ingest([feed("core-1", a[5:].tolist())])
    assert dead == [] and wanted == []
    recs = anomalies(drain(core))
    by_model = {(r.model.name, r.series_id) for r in recs}
    assert by_model == {("links", "core-1"), ("cpu", "sw.cpu")}
    # offline: the same windows scored by each model alone
    assert [len(w) for w in links.scored] == [4, 4, 4] and [len(w) for w in cpu.scored] == [6, 6]
    assert links.calls == [3] and cpu.calls == [2]  # one batch each: a batch holds one model
    want = links.score([a[i : i + 4].reshape(-1, 1) for i in (0, 4, 8)])
    got = [r.energy for r in recs if r.model.name == "links"]
    assert got == [s.energy for s in want]


def test_no_route_and_no_default_is_dead_lettered_with_the_reason() -> None:
    core, _, _, _ = routed(TABLE)
    core.swap_model(two_models()[0])
    dead = core.ingest([Feed()("edge-7", [1.0, 2.0])])
    assert len(dead) == 1 and dead[0].topic == "ts.raw.dlq"
    reason = dict(dead[0].headers)[ERROR_HEADER].decode()
    assert "no route for series 'edge-7'" in reason and "seq2gmm routes" in reason
    assert core.dead_letters["no_route"] == 1
    assert core.committable() == {0: 1}  # handled: dead-lettered


def test_a_cold_start_waits_uncommitted_then_is_scored_when_the_model_arrives() -> None:
    core, wanted, _, _ = routed(TABLE.with_default("links"))
    feed = Feed()
    dead = core.ingest([feed("x-1", [1.0, 2.0, 3.0]), feed("x-1", [4.0, 5.0])])
    assert dead == [] and wanted == ["links"]
    assert core.committable() == {0: 0}  # nothing past the waiting records
    assert core.stats()["waiting_records"] == 2
    links = FakeModel(name="links", length=4, hop=4)
    core.swap_model(links)
    assert core.ingest([]) == []
    recs = anomalies(drain(core))
    assert [r.series_id for r in recs] == ["x-1"] and recs[0].window.n_samples == 4
    assert core.committable() == {0: 1}  # the second record's 5th sample is buffered


def test_a_cold_start_dead_letters_when_configured_or_when_the_queue_is_full() -> None:
    core, _, _, _ = routed(TABLE, cold_start="dead_letter")
    dead = core.ingest([Feed()("core-1", [1.0])])
    assert "no active version yet" in dict(dead[0].headers)[ERROR_HEADER].decode()
    core, _, _, _ = routed(TABLE, max_waiting_records=1)
    feed = Feed()
    dead = core.ingest([feed("core-1", [1.0]), feed("core-1", [2.0])])
    assert len(dead) == 1 and json.loads(dead[0].value)["values"] == [2.0]  # bytes kept
    assert "queue is full" in dict(dead[0].headers)[ERROR_HEADER].decode()
    assert core.committable() == {0: 0}


def test_a_route_change_moves_buffered_samples_and_loses_nothing() -> None:
    core, _, _, holder = routed(TABLE)
    links, cpu = two_models()
    core.swap_model(links)
    core.swap_model(cpu)
    feed = Feed()
    x = np.arange(30.0)
    core.ingest([feed("core-9", x[:6].tolist())])  # links: one window of 4, 2 buffered
    out = drain(core)
    holder["table"] = RouteTable(TABLE.with_rule("core-9", "cpu", position=0).rules, None, 7)
    core.ingest([feed("core-9", x[6:].tolist())])  # now cpu: windows of 6 from sample 4 on
    out += drain(core)
    recs = anomalies(out)
    assert [(r.model.name, r.window.start, r.window.n_samples) for r in recs] == [
        ("links", 0.0, 4),
        ("cpu", 4.0, 6),
        ("cpu", 10.0, 6),
        ("cpu", 16.0, 6),
        ("cpu", 22.0, 6),
    ]
    assert core.table.revision == 7
    assert core.committable() == {0: 1}  # samples 28, 29 of the second record are buffered


def test_lanes_are_bounded_and_only_an_idle_one_is_unloaded() -> None:
    table = TABLE.with_rule("dev-", "devices")
    core, wanted, released, _ = routed(table, max_models=2)
    links, cpu = two_models()
    core.swap_model(links)
    core.swap_model(cpu)
    feed = Feed()
    core.ingest([feed("core-1", [1.0, 2.0, 3.0, 4.0]), feed("a.cpu", [1.0, 2.0])])
    drain(core)  # links idle now (its window scored); cpu holds 2 samples
    dead = core.ingest([feed("dev-1", [5.0])])
    assert dead == [] and released == ["links"] and wanted == ["devices"]
    dead = core.ingest([feed("core-2", [1.0])])  # links again: cpu busy, devices wanted
    assert released == ["links"] and wanted == ["devices"]
    assert core.stats()["waiting_records"] == 2
    assert dead == []  # it waits (cold start) for a slot
    core2, _, _, _ = routed(table, max_models=1, cold_start="dead_letter")
    core2.swap_model(links)
    core2.ingest([Feed()("core-1", [1.0])])  # links busy
    dead = core2.ingest([Feed()("dev-1", [1.0], partition=1)])
    assert "at most 1 models" in dict(dead[0].headers)[ERROR_HEADER].decode()


def test_forgetting_a_partition_drops_its_waiting_records() -> None:
    core, _, _, _ = routed(TABLE)
    feed = Feed()
    core.ingest([feed("core-1", [1.0], 0), feed("core-2", [1.0], 1)])
    core.forget_partitions([1])
    assert core.stats()["waiting_records"] == 1
    assert core.committable() == {0: 0}


# ---------------------------------------------------------------------- the loop over fakes
class FakeRoutedModels:
    """A routed model source: a wanted model is loaded by the next poll."""

    def __init__(self, table: RouteTable, models: dict[str, FakeModel]) -> None:
        self.table, self.models = table, models
        self.wanted: list[str] = []
        self._loading: list[str] = []

    def current(self) -> None:
        return None

    def want(self, name: str) -> None:
        self.wanted.append(name)
        self._loading.append(name)

    def poll(self) -> FakeModel | None:
        while self._loading:
            name = self._loading.pop(0)
            if name in self.models:
                return self.models[name]
        return None

    def core(self, options: CoreOptions) -> RoutedCore:
        return RoutedCore(lambda: self.table, options, RoutingOptions(), want=self.want)


@pytest.fixture
def loop_rig() -> Iterator[tuple[FakeConsumer, FakeProducer, FakeRoutedModels, StreamWorker]]:
    calls = CallLog()
    consumer = FakeConsumer(RAW, 2, calls)
    producer = FakeProducer(calls)
    source = FakeRoutedModels(TABLE, dict(zip(("links", "cpu"), two_models(), strict=True)))
    settings = Settings(batching={"scoring_thread": False})
    worker = StreamWorker(
        settings,
        "unused:9092",
        source,  # type: ignore[arg-type]
        core_options(settings, linger_s=0.0),
        RunLimits(stop_at_end=True, at_end_settle_s=0.0),
        health=Health(stuck_after_s=60),
        clients=fake_clients(consumer, producer),
        core_factory=source.core,
    )
    yield consumer, producer, source, worker


def test_the_loop_serves_two_routed_models_and_commits_everything(loop_rig) -> None:  # type: ignore[no-untyped-def]
    consumer, producer, source, worker = loop_rig
    for i in range(3):
        for sid, p in (("core-1", 0), ("sw.cpu", 1), ("lost", 1)):
            body = {"series_id": sid, "start": 12 * i, "interval": 1, "values": list(range(12))}
            consumer.append(p, sid.encode(), json.dumps(body).encode())
    summary = worker.run()
    sent = [c.args[0] for c in producer.calls.calls if c.method == "send"]
    models = sorted(
        {json.loads(r.value)["model"]["name"] for r in sent if r.topic == "ts.anomalies"}
    )
    assert models == ["cpu", "links"] and source.wanted == ["links", "cpu"]
    assert sum(1 for r in sent if r.topic == "ts.raw.dlq") == 3  # "lost": no route
    assert summary["scored"] == 3 * 3 + 3 * 2 and summary["waiting_records"] == 0
    commits = [c.args[0] for c in producer.calls.calls if c.method == "commit"]
    last: dict[int, int] = {}
    for c in commits:
        last.update(c)
    assert last == {0: 3, 1: 6}  # everything handled: scored or dead-lettered


def test_the_series_homes_stay_bounded() -> None:
    core = RoutedCore(
        lambda: TABLE,
        CoreOptions(linger_s=0.0, max_series=10, idle_timeout_s=0.0),
        RoutingOptions(),
    )
    core.swap_model(two_models()[0])
    feed = Feed()
    for i in range(3000):
        core.ingest([feed(f"core-{i}", [1.0])])
        core.windower.evict_idle()
    assert len(core._home) <= 2 * 10 + 1024 + 1
