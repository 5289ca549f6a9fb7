"""The pure part of bench/throughput.py: the two message forms of one data set, the worker's
span read from its JSON log lines, the end-to-end latency join, and the markdown report.

Nothing here touches Kafka, Redis or a process (tests/test_throughput_bench.py checks it).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from model.errors import DataError
from worker.dev.replay import rows_as_windows
from worker.errors import ServiceError

Encoded = tuple[str, bytes]  # (key = series id, JSON value)


# --------------------------------------------------------------------------- message forms


def windows_per_series(length: int, windows_at_82: int) -> int:
    """Windows per series for windows of ``length``: about as many samples as ``windows_at_82``
    windows of 82 (TwoLeadECG's length), at least one."""
    return max(1, round(windows_at_82 * 82 / length))


def chunk_messages(rows: Sequence[np.ndarray], n_series: int, prefix: str) -> Iterator[Encoded]:
    """One chunk message per window: row ``j * n_series + k`` is window j of series k
    (:func:`worker.dev.replay.rows_as_windows`, timestamps 0, 1, 2, ... per series)."""
    for sid, message in rows_as_windows(rows, n_series=n_series, prefix=prefix):
        yield sid, json.dumps(message).encode()


def stagger_heads(n_series: int, length: int, stagger: bool) -> list[int]:
    """Samples dropped at the head of each series by ``sample_messages(..., stagger=True)``."""
    return [k * length // n_series if stagger else 0 for k in range(n_series)]


def complete_windows(n_series: int, n_windows: int, length: int, stagger: bool) -> int:
    """Windows of ``length`` the worker can cut from ``sample_messages`` (a staggered series
    loses its head, so its last window is incomplete unless it lost nothing)."""
    heads = stagger_heads(n_series, length, stagger)
    return sum((n_windows * length - head) // length for head in heads)


def sample_messages(
    rows: Sequence[np.ndarray], n_series: int, prefix: str, *, stagger: bool = False
) -> Iterator[Encoded]:
    """The same samples as :func:`chunk_messages`, one message per sample, series interleaved
    sample by sample (many sensors sending at once): sample t of series 0, 1, ..., then t + 1.

    Unstaggered, every series completes a window at the same sample, so windows come in bursts
    of ``n_series``. ``stagger`` drops the first ``k * length // n_series`` samples of series k:
    its windows (cut from its first sample) then complete spread evenly over time."""
    if not rows or len(rows) % n_series:
        raise DataError(f"{len(rows)} rows do not split into {n_series} series")
    length = len(rows[0])
    ids = [f"{prefix}-{k}" for k in range(n_series)]
    skip = stagger_heads(n_series, length, stagger)
    t = 0
    for j in range(len(rows) // n_series):
        block = np.stack(
            [np.asarray(r, dtype=np.float64) for r in rows[j * n_series : (j + 1) * n_series]]
        )
        for column in block.T.tolist():  # (length, n_series): sample t of every series
            for sid, value, first in zip(ids, column, skip, strict=True):
                if t >= first:
                    message = {"series_id": sid, "timestamp": float(t), "value": value}
                    yield sid, json.dumps(message).encode()
            t += 1


def flatten_env(nested: dict[str, Any], prefix: str = "SEQ2GMM_") -> dict[str, str]:
    """Settings overrides as the environment variables that set them (``__`` between levels)."""
    env: dict[str, str] = {}
    for key, value in nested.items():
        name = prefix + key.upper()
        if isinstance(value, dict):
            env.update(flatten_env(value, name + "__"))
        else:
            env[name] = str(value)
    return env


# --------------------------------------------------------------------------- the worker's log


def log_events(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The JSON log lines (worker/ops/log.py, ``SEQ2GMM_LOGGING__FORMAT=json``) as dicts;
    other lines (kafka-python's stdlib warnings, tracebacks) are skipped."""
    events = []
    for line in lines:
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events


def event_counts(lines: Iterable[str]) -> dict[str, int]:
    """How often each event was logged (rebalances, pauses, dead letters show up here)."""
    return dict(Counter(str(e["event"]) for e in log_events(lines)))


def event_seconds(event: Mapping[str, Any]) -> float:
    """Unix seconds of a log event (structlog's ISO-8601 UTC ``timestamp``)."""
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


@dataclass(frozen=True)
class WorkerSpan:
    """One worker run, from its first ``partitions_assigned`` to its ``worker_stopped`` line."""

    assigned: float  # Unix seconds
    stopped: float
    caught_up: float | None  # the `caught_up` line (--stop-at-end), after the settle wait
    summary: dict[str, Any]  # the worker_stopped line's counters

    @property
    def seconds(self) -> float:
        return self.stopped - self.assigned


def worker_span(events: Sequence[Mapping[str, Any]]) -> WorkerSpan:
    """The measured span of a worker run; ServiceError when a line is missing."""

    def first(name: str) -> Mapping[str, Any] | None:
        return next((e for e in events if e.get("event") == name), None)

    assigned, stopped, caught_up = (
        first("partitions_assigned"),
        first("worker_stopped"),
        first("caught_up"),
    )
    if assigned is None or stopped is None:
        missing = "partitions_assigned" if assigned is None else "worker_stopped"
        raise ServiceError(
            f"the worker's log has no {missing} line; run with SEQ2GMM_LOGGING__FORMAT=json and"
            " look at its stderr (kept in the bench's JSON output) for why it stopped"
        )
    keep = {"event", "timestamp", "level", "model", "device"}
    return WorkerSpan(
        assigned=event_seconds(assigned),
        stopped=event_seconds(stopped),
        caught_up=event_seconds(caught_up) if caught_up is not None else None,
        summary={k: v for k, v in stopped.items() if k not in keep},
    )


# --------------------------------------------------------------------------- latency


def join_latencies(
    produced_ms: Mapping[tuple[int, int], int], published: Iterable[tuple[int, int, int]]
) -> tuple[list[tuple[int, float]], int]:
    """End-to-end latencies: for each published record ``(partition, last_offset,
    timestamp_ms)``, its Kafka timestamp minus the create time of the input record at
    ``last_offset`` of that partition (both stamped on this machine's clock). Returns
    ``(input create time ms, latency ms)`` per joined record, and how many published records
    had no input record to join."""
    joined: list[tuple[int, float]] = []
    missing = 0
    for partition, last_offset, ts_ms in published:
        source = produced_ms.get((partition, last_offset))
        if source is None:
            missing += 1
        else:
            joined.append((source, float(ts_ms - source)))
    return joined, missing


def latency_summary(
    joined: Sequence[tuple[int, float]], start_ms: int, warmup_s: float
) -> dict[str, Any]:
    """Quantiles of every joined latency, and of those whose input was produced at least
    ``warmup_s`` after ``start_ms`` (the worker's first batches are slower: both are shown)."""
    after = [lat for t, lat in joined if t >= start_ms + warmup_s * 1000]
    return {
        "all": quantiles_ms([lat for _, lat in joined]),
        "after_warmup": quantiles_ms(after),
        "warmup_s": warmup_s,
    }


def latency_timeline(
    joined: Sequence[tuple[int, float]], start_ms: int, bucket_s: float
) -> list[dict[str, Any]]:
    """Latency per ``bucket_s`` of input time (by the input's create time): a worker that keeps
    up shows flat buckets, one that falls behind shows them growing."""
    buckets: dict[int, list[float]] = {}
    for t, lat in joined:
        buckets.setdefault(int((t - start_ms) // (bucket_s * 1000)), []).append(lat)
    return [{"from_s": i * bucket_s, **quantiles_ms(buckets[i])} for i in sorted(buckets)]


def pacing_summary(create_ms: Iterable[int], bucket_ms: int = 10) -> dict[str, Any]:
    """How evenly the paced producer sent: records per ``bucket_ms`` of create time (mean, sd,
    max, and the share of empty buckets). Bursty pacing would inflate the latency measured."""
    ts = np.sort(np.fromiter(create_ms, dtype=np.int64))
    if not len(ts):
        return {"bucket_ms": bucket_ms, "mean": None, "sd": None, "max": None, "empty_share": None}
    counts = np.bincount((ts - ts[0]) // bucket_ms)
    return {
        "bucket_ms": bucket_ms,
        "mean": float(counts.mean()),
        "sd": float(counts.std()),
        "max": int(counts.max()),
        "empty_share": float((counts == 0).mean()),
    }


def half_rates(
    cases: Sequence[Mapping[str, Any]], length: int, form: str = "sample"
) -> dict[str | None, float]:
    """Per scoring variant (None: the default), half of the worker's mean message rate of
    ``form`` (one sample or one window a message) at ``length`` over that variant's runs: each
    latency run is paced at its own variant's half load, never at another variant's."""
    rates: dict[str | None, list[float]] = {}
    for c in cases:
        if c["length"] == length and c["form"] == form:
            rates.setdefault(c.get("scoring"), []).append(c["worker"]["msg_per_s"])
    return {scoring: 0.5 * sum(r) / len(r) for scoring, r in rates.items()}


def quantiles_ms(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50, p90, p99 and max of latencies (None when there are none)."""
    if not values:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    arr = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(arr, [50, 90, 99]))
    return {
        "n": len(values),
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": float(arr.max()),
    }


# --------------------------------------------------------------------------- report


def _rate(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.0f} {unit}" if value >= 10 else f"{value:,.1f} {unit}"


def _case_row(case: Mapping[str, Any]) -> str:
    bare, worker = case["bare"], case["worker"]
    form = "one sample per message" if case["form"] == "sample" else "one window per message"
    first, then = ("msg", "windows") if case["form"] == "sample" else ("windows", "samples")
    cell = f"{_rate(worker[f'{first}_per_s'], f'{first}/s')}"
    cell += f" ({_rate(worker[f'{then}_per_s'], f'{then}/s')})"
    bare_cell = f"{_rate(bare['msg_per_s'], 'msg/s')}"
    if bare.get("msg_per_s_from_first"):
        bare_cell += f" ({_rate(bare['msg_per_s_from_first'], 'from its 1st record')})"
    flags = []
    if worker["consumed"] < case["messages"]:
        flags.append(f"**incomplete**: {worker['consumed']}/{case['messages']} consumed")
    elif worker["consumed"] > case["messages"]:
        flags.append(
            f"**re-read**: {worker['consumed']} consumed for {case['messages']}"
            f" ({worker.get('events', {}).get('partitions_revoked', 0)} revocations)"
        )
    if worker["published"] != case["windows"]:
        flags.append(f"published {worker['published']}/{case['windows']} windows")
    ratio = worker["msg_per_s"] / bare["msg_per_s"] if bare["msg_per_s"] else float("nan")
    if case.get("scoring"):  # one of several variants read the same topic (--scoring)
        load = worker.get("loadavg_before")
        cell += f"; scoring {case['scoring']}" + (f", load {load[0]:.1f}" if load else "")
        if "cpu_s" in worker:
            child = worker.get("children_cpu_s") or 0.0
            cell += f", CPU s {worker['cpu_s']:.1f}" + (f" + {child:.1f} child" if child else "")
    rss = f"{worker['peak_rss_mb']:.0f}"
    if worker.get("children_peak_rss_mb"):
        rss += f" + {worker['children_peak_rss_mb']:.0f} (child)"
    return (
        f"| {case['length']} | {form} ({case['messages']:,} msgs, {case['windows']:,} windows)"
        f" | {bare_cell} | {cell} | {ratio:.3f}"
        f" | {worker.get('busy_s', worker['span_s']):.1f} / {worker['span_s']:.1f}"
        f" | {rss} | {'; '.join(flags) or 'ok'} |"
    )


def markdown(result: Mapping[str, Any]) -> str:
    """The printed report: the throughput table, then latency and memory lines."""
    s = result["setup"]
    phase = "staggered" if s.get("stagger") else "aligned"
    lines = [
        f"### Throughput ({s['mode']}; device {s['device']}, worker torch threads {s['threads']};"
        f" {s['series']} {phase} series; linger_ms {s['linger_ms']},"
        f" max_windows {s['max_windows']})",
        "",
        "| L | message form | bare kafka-python + json.loads | seq2gmm worker | ratio (msg/s)"
        " | worker busy / span s | worker peak RSS MB | check |",
        "|---|---|---|---|---|---|---|---|",
        *(_case_row(c) for c in result["cases"]),
        "",
        "Worker rates are over its busy time: from its `partitions_assigned` log line to the"
        " producer timestamp of its last published record. Its span (`partitions_assigned` ->"
        " `worker_stopped`) adds the --stop-at-end settle wait of"
        f" {s['settle_s']:.1f} s (RunLimits.at_end_settle_s) and the final drain and commit."
        " The bare consumer's rate is from its assignment to its last message."
        " Models: the default seq2gmm config with fewer epochs (the"
        " throughput measured does not need a converged model): "
        + "; ".join(_training(int(k), v, s["train_windows"]) for k, v in s["epochs"].items())
        + f". {s['data']}",
    ]
    latencies = result.get("latency") or []
    for lat in [latencies] if isinstance(latencies, Mapping) else latencies:
        lines += ["", _latency_line(lat)]
    rss = result.get("rss")
    if rss:
        lines += [
            "",
            f"Peak RSS with {rss['series']:,} series x {rss['samples_per_series']} samples"
            f" (one chunk each, model L = 82, no window completes): {rss['peak_rss_mb']:.0f} MB"
            f"{_child_mb(rss)};"
            f" series tracked at stop {rss['tracked']}, {_rate(rss['msg_per_s'], 'msg/s')}.",
        ]
    return "\n".join(lines)


def _latency_line(lat: Mapping[str, Any]) -> str:
    """One latency run (older records lack the scoring, fetch wait and pacing fields)."""
    q, w = lat["latency"]["all"], lat["latency"]["after_warmup"]
    scoring = f", scoring {lat['scoring']}" if lat.get("scoring") else ""
    load = lat.get("loadavg_before")
    text = (
        f"End-to-end latency at {lat.get('paced_at', 'half load')} (L = 82,"
        f" {'one window' if lat.get('form') == 'chunk' else 'one sample'} a message,"
        f" {lat['series']} series{scoring},"
        f" {lat['target_msg_per_s']:,.0f} msg/s target, {lat['achieved_msg_per_s']:,.0f}"
        f" achieved, {lat['seconds']:.0f} s{f', load {load[0]:.1f}' if load else ''}):"
        f" {_quantiles(q)}; after the first {lat['latency']['warmup_s']:.0f} s: {_quantiles(w)}."
        f" {lat['unjoined']} unjoined. Worker linger_ms {lat['linger_ms']}, max_windows"
        f" {lat['max_windows']}"
    )
    if lat.get("fetch_max_wait_ms") is not None:
        text += f", fetch_max_wait_ms {lat['fetch_max_wait_ms']}"
    client = lat.get("paced_client", "kafka-python")
    text += f"; producer {client}, linger_ms {lat['producer_linger_ms']}"
    pacing = lat.get("pacing")
    if pacing and pacing.get("mean") is not None:
        text += (
            f", {pacing['mean']:.0f} +- {pacing['sd']:.0f} (max {pacing['max']}) records per"
            f" {pacing['bucket_ms']} ms"
        )
    if lat.get("producer_cpu_share") is not None:
        text += f", its CPU {100 * lat['producer_cpu_share']:.0f} % of a core"
    return (
        text + f"; worker peak RSS {lat['peak_rss_mb']:.0f} MB. Per {lat['timeline_s']:.0f} s of"
        " input, p50 / max ms: "
        + ", ".join(f"{_ms(b['p50_ms'], '')}/{_ms(b['max_ms'], '')}" for b in lat["timeline"])
        + "."
    )


def _child_mb(run: Mapping[str, Any]) -> str:
    child = run.get("children_peak_rss_mb")
    return f" + {child:.0f} MB (scoring process)" if child else ""


def _training(length: int, epochs: int, train_windows: Mapping[Any, int]) -> str:
    n = train_windows.get(length, train_windows.get(str(length)))
    on = "TwoLeadECG's normal training rows" if n is None else f"{n} synthetic windows"
    return f"L = {length}: {epochs} epochs on {on}"


def _quantiles(q: Mapping[str, Any]) -> str:
    return (
        f"p50 {_ms(q['p50_ms'])}, p90 {_ms(q['p90_ms'])}, p99 {_ms(q['p99_ms'])},"
        f" max {_ms(q['max_ms'])} ({q['n']} windows)"
    )


def _ms(value: float | None, unit: str = " ms") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"
