"""bench/throughput.py's pure helpers: the message forms, the worker's log span, the latency
join and the report (nothing is timed); and its paced producer, with either client, on the
embedded broker."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.errors import DataError
from worker.errors import ServiceError
from worker.ops.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO / "bench"))  # bench scripts import each other by module name
import throughput_measures as tm  # noqa: E402


def _rows(n_series: int, n_windows: int, length: int) -> list[np.ndarray]:
    """Row j * n_series + k = window j of series k, with values 1000 k + sample index."""
    return [
        1000.0 * k + np.arange(j * length, (j + 1) * length, dtype=np.float64)
        for j in range(n_windows)
        for k in range(n_series)
    ]


def _samples(messages: list[tuple[str, bytes]]) -> dict[str, list[tuple[float, float]]]:
    """(timestamp, value) per series, in message order, from either message form."""
    out: dict[str, list[tuple[float, float]]] = {}
    for key, value in messages:
        m = json.loads(value)
        assert key == m["series_id"]
        if "values" in m:
            pairs = [(m["start"] + i * m["interval"], v) for i, v in enumerate(m["values"])]
        else:
            pairs = [(m["timestamp"], m["value"])]
        out.setdefault(key, []).extend(pairs)
    return out


def test_both_message_forms_carry_the_same_samples_per_series() -> None:
    rows = _rows(n_series=3, n_windows=2, length=5)
    chunks = list(tm.chunk_messages(rows, 3, "s"))
    samples = list(tm.sample_messages(rows, 3, "s"))
    assert len(chunks) == 6 and len(samples) == 30
    assert _samples(chunks) == _samples(samples)
    by_series = _samples(samples)
    assert by_series["s-2"][:3] == [(0.0, 2000.0), (1.0, 2001.0), (2.0, 2002.0)]
    assert by_series["s-0"][-1] == (9.0, 9.0)
    # interleaved sample by sample: sample t of every series before sample t + 1
    assert [k for k, _ in samples[:6]] == ["s-0", "s-1", "s-2", "s-0", "s-1", "s-2"]


def test_staggered_series_skip_a_growing_head_so_windows_complete_apart() -> None:
    rows = _rows(n_series=4, n_windows=2, length=8)
    by_series = _samples(list(tm.sample_messages(rows, 4, "s", stagger=True)))
    first = {sid: pairs[0][0] for sid, pairs in by_series.items()}
    assert first == {"s-0": 0.0, "s-1": 2.0, "s-2": 4.0, "s-3": 6.0}
    assert all(pairs[-1][0] == 15.0 for pairs in by_series.values())
    # series 0 keeps both windows, series 1-3 lose their head and so their second window
    assert tm.complete_windows(4, 2, 8, stagger=True) == 2 + 1 + 1 + 1
    assert tm.complete_windows(4, 2, 8, stagger=False) == 8
    assert sum(len(p) for p in by_series.values()) == 4 * 16 - (2 + 4 + 6)
    with pytest.raises(DataError, match="do not split"):
        list(tm.sample_messages(rows[:-1], 4, "s"))


def test_windows_per_series_keeps_about_the_samples_of_82() -> None:
    assert tm.windows_per_series(82, 20) == 20
    assert tm.windows_per_series(288, 20) == 6
    assert tm.windows_per_series(1000, 20) == 2
    assert tm.windows_per_series(1000, 4) == 1


def test_worker_span_reads_the_json_log_lines() -> None:
    lines = [
        "WARNING kafka.coordinator: heartbeat failed\n",
        '{"event": "serving_model", "timestamp": "2025-01-01T00:00:00.000000Z"}\n',
        '{"event": "partitions_assigned", "partitions": [0, 1],'
        ' "timestamp": "2025-01-01T00:00:01.250000Z", "level": "info"}\n',
        "{not json\n",
        '{"event": "caught_up", "timestamp": "2025-01-01T00:00:04.000000Z"}\n',
        '{"event": "worker_stopped", "consumed": 10, "scored": 2, "model": "m",'
        ' "timestamp": "2025-01-01T00:00:04.500000Z", "level": "info"}\n',
    ]
    events = tm.log_events(lines)
    assert tm.event_counts(lines) == {
        "serving_model": 1,
        "partitions_assigned": 1,
        "caught_up": 1,
        "worker_stopped": 1,
    }
    assert [e["event"] for e in events] == [
        "serving_model",
        "partitions_assigned",
        "caught_up",
        "worker_stopped",
    ]
    span = tm.worker_span(events)
    assert span.seconds == pytest.approx(3.25)
    assert span.caught_up is not None and span.caught_up - span.assigned == pytest.approx(2.75)
    assert span.summary == {"consumed": 10, "scored": 2}
    with pytest.raises(ServiceError, match="no worker_stopped line"):
        tm.worker_span(events[:3])


def test_latency_join_subtracts_the_input_create_time_at_last_offset() -> None:
    produced = {(0, 10): 1_000, (0, 11): 1_020, (1, 5): 7_000}
    published = [(0, 11, 1_100), (1, 5, 7_250), (2, 3, 9_999)]  # the last has no input
    joined, missing = tm.join_latencies(produced, published)
    assert joined == [(1_020, 80.0), (7_000, 250.0)]
    assert missing == 1
    summary = tm.latency_summary(joined, start_ms=1_000, warmup_s=5.0)
    assert summary["all"]["n"] == 2 and summary["all"]["max_ms"] == 250.0
    assert summary["after_warmup"]["n"] == 1 and summary["after_warmup"]["p50_ms"] == 250.0
    assert tm.quantiles_ms([])["p99_ms"] is None


def test_latency_timeline_buckets_by_input_time() -> None:
    joined = [(1_000, 10.0), (3_900, 30.0), (6_000, 500.0), (6_500, 700.0), (12_000, 5.0)]
    timeline = tm.latency_timeline(joined, start_ms=1_000, bucket_s=5.0)
    assert [(b["from_s"], b["n"], b["max_ms"]) for b in timeline] == [
        (0.0, 2, 30.0),
        (5.0, 2, 700.0),
        (10.0, 1, 5.0),
    ]
    assert timeline[1]["p50_ms"] == 600.0


def test_flatten_env_is_what_the_settings_read(monkeypatch: pytest.MonkeyPatch) -> None:
    nested = {"kafka": {"raw_topic": "r", "max_poll_interval_ms": 10_000}, "torch_threads": 2}
    env = tm.flatten_env(nested)
    assert env == {
        "SEQ2GMM_KAFKA__RAW_TOPIC": "r",
        "SEQ2GMM_KAFKA__MAX_POLL_INTERVAL_MS": "10000",
        "SEQ2GMM_TORCH_THREADS": "2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.kafka.raw_topic == "r" and settings.kafka.max_poll_interval_ms == 10_000
    assert settings.torch_threads == 2


def test_report_flags_an_incomplete_or_re_read_worker_run() -> None:
    worker = {"msg_per_s": 50.0, "windows_per_s": 1.0, "samples_per_s": 50.0, "span_s": 2.0,
              "peak_rss_mb": 300.0, "complete": False, "consumed": 90, "published": 1}  # fmt: skip
    bare = {"msg_per_s": 1000.0, "msg_per_s_from_first": 2000.0}
    case = {"length": 82, "form": "sample", "messages": 100, "windows": 1,
            "bare": bare, "worker": worker}  # fmt: skip
    setup = {"mode": "quick", "device": "cpu", "threads": 2, "series": 1, "linger_ms": 50,
             "max_windows": 256, "settle_s": 1.0, "epochs": {"82": 3}, "train_windows": {},
             "data": "d"}  # fmt: skip
    text = tm.markdown({"setup": setup, "cases": [case]})
    row = next(line for line in text.splitlines() if line.startswith("| 82 "))
    assert "50 msg/s (1.0 windows/s)" in row and "| 0.050 |" in row
    assert "1,000 msg/s (2,000 from its 1st record)" in row
    assert "**incomplete**: 90/100 consumed" in row
    worker.update(consumed=300, events={"partitions_revoked": 1})
    text = tm.markdown({"setup": setup, "cases": [case]})
    assert "**re-read**: 300 consumed for 100 (1 revocations)" in text


def test_each_scoring_variant_is_paced_at_half_its_own_rate() -> None:
    def case(scoring: str | None, form: str, rate: float, length: int = 82) -> dict:  # type: ignore[type-arg]
        return {"length": length, "form": form, "scoring": scoring, "worker": {"msg_per_s": rate}}

    cases = [case("thread", "sample", 20_000.0), case("process", "sample", 30_000.0),
             case("thread", "sample", 24_000.0), case("thread", "chunk", 1_000.0),
             case("process", "sample", 90_000.0, length=288)]  # fmt: skip
    assert tm.half_rates(cases, 82) == {"thread": 11_000.0, "process": 15_000.0}
    assert tm.half_rates([case(None, "sample", 8_000.0)], 82) == {None: 4_000.0}
    assert tm.half_rates([case("thread", "chunk", 1.0)], 82) == {}


def test_pacing_counts_records_per_bucket_of_create_time() -> None:
    even = tm.pacing_summary(range(1_000, 1_100))  # one record per ms
    assert (even["mean"], even["sd"], even["max"], even["empty_share"]) == (10.0, 0.0, 10, 0.0)
    bursty = tm.pacing_summary([0] * 30 + [25] * 10)  # buckets 30, 0, 10
    assert bursty["max"] == 30 and bursty["empty_share"] == pytest.approx(1 / 3)
    assert tm.pacing_summary([])["mean"] is None


def test_report_has_one_latency_line_per_scoring_variant() -> None:
    q = {"n": 3, "p50_ms": 200.0, "p90_ms": 250.0, "p99_ms": 290.0, "max_ms": 300.0}
    lat = {"series": 100, "target_msg_per_s": 11_000.0, "achieved_msg_per_s": 10_990.0,
           "seconds": 20.0, "unjoined": 0, "linger_ms": 50, "max_windows": 256,
           "producer_linger_ms": 5, "peak_rss_mb": 400.0, "timeline_s": 5.0,
           "timeline": [{"p50_ms": 200.0, "max_ms": 300.0}],
           "latency": {"all": q, "after_warmup": q, "warmup_s": 5.0}}  # fmt: skip
    setup = {"mode": "full", "device": "cpu", "threads": 1, "series": 100, "linger_ms": 50,
             "max_windows": 256, "settle_s": 1.0, "epochs": {"82": 3}, "train_windows": {},
             "data": "d"}  # fmt: skip
    old = tm.markdown({"setup": setup, "cases": [], "latency": lat})  # a record from before
    assert "p99 290 ms" in old and "fetch_max_wait_ms" not in old
    pacing = {"bucket_ms": 10, "mean": 110.0, "sd": 13.0, "max": 169, "empty_share": 0.0}
    variants = [
        {**lat, "scoring": s, "fetch_max_wait_ms": 50, "pacing": pacing, "producer_cpu_share": 0.4}
        for s in ("thread", "process")
    ]
    text = tm.markdown({"setup": setup, "cases": [], "latency": variants})
    lines = [line for line in text.splitlines() if line.startswith("End-to-end latency")]
    assert len(lines) == 2 and "scoring thread" in lines[0] and "scoring process" in lines[1]
    assert (
        "fetch_max_wait_ms 50" in lines[0] and "110 +- 13 (max 169) records per 10 ms" in lines[0]
    )
    assert "its CPU 40 % of a core" in lines[1]
    rss = {"series": 100_000, "samples_per_series": 4, "peak_rss_mb": 480.0, "tracked": 100_000,
           "msg_per_s": 18_000.0, "children_peak_rss_mb": 350.0}  # fmt: skip
    text = tm.markdown({"setup": setup, "cases": [], "rss": rss})
    assert "480 MB + 350 MB (scoring process);" in text
    text = tm.markdown({"setup": setup, "cases": [], "rss": {**rss, "children_peak_rss_mb": 0}})
    assert "480 MB;" in text and "scoring process" not in text


@pytest.mark.integration
@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_paced_producer_delivers_every_message_keyed_as_kafka_python_does(
    client: str, services: Any, unique: str
) -> None:
    """The latency run's producer, either client, on the embedded broker: every message
    arrives with its CreateTime, each series in the partition kafka-python's murmur2 picks
    (so the worker sees the same partitioning whichever client paced it)."""
    if client == "confluent":
        pytest.importorskip("confluent_kafka", reason="the bench extra: pip install -e '.[bench]'")
    from kafka.partitioner.default import murmur2
    from throughput_clients import paced_send, read_topic

    from worker.stream.topics import ensure_topics

    kafka = load_settings(kafka={"bootstrap_servers": services.kafka_bootstrap}).kafka
    topic = f"{unique}-raw"
    ensure_topics(services.kafka_bootstrap, kafka, [topic])
    messages = iter([(f"s-{i % 17}", f'{{"i": {i}}}'.encode()) for i in range(400)])
    sent, _, _ = paced_send(services.kafka_bootstrap, topic, messages, 4000, 0.5, client)
    assert sent == 400  # all it was given (0.5 s at 4,000 msg/s would be 2,001)
    got = read_topic(services.kafka_bootstrap, topic, kafka.num_partitions, sent)
    assert sorted(json.loads(m.value)["i"] for m in got) == list(range(400))
    assert all(m.timestamp_type == 0 and m.timestamp > 0 for m in got)  # CreateTime
    for m in got:
        assert m.partition == (murmur2(m.key) & 0x7FFFFFFF) % kafka.num_partitions, m.key
