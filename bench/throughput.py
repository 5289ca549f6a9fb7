"""The streaming worker's throughput against a bare kafka-python consumer, in one run on the
embedded services (issue 18); prints a markdown report, ``--out`` writes the JSON record.

    .venv/bin/python bench/throughput.py [--quick] [--device cpu|cuda] [--threads 2]
        [--lengths 82 288 1000] [--series 100] [--windows 20] [--stagger]
        [--latency-seconds 25] [--latency-rate R] [--rss-series 100000] [--rss-samples 4] [--seed 0]
        [--scoring thread process] [--data ../shared/data] [--out FILE]

For each window length L and each message form (one sample per message; one window of L samples
per chunk message) the same pre-filled topic is read by a bare kafka-python consumer that
``json.loads`` every value (timed from its partition assignment to its last message), then by
``seq2gmm worker --stop-at-end`` (the real CLI in a subprocess, timed from its
``partitions_assigned`` line to its last published record), once per ``--scoring`` variant
(SEQ2GMM_BATCHING__SCORING; each its own group and output topic). Data: L = 82 is TwoLeadECG's
one-class test rows, cycled, as ``--series`` series x ``--windows`` windows; L = 288 and 1,000
are synthetic quasi-periodic series (period L) with about as many samples. One-sample messages
interleave the series sample by sample; all series complete a window at the same sample unless
``--stagger`` puts them out of phase. Models: the default seq2gmm config with fewer epochs,
trained here, published and promoted in the Redis registry.

Then: end-to-end latency (L = 82, one-sample messages paced at half of the worker's measured
one-sample rate, once per scoring variant at half of that variant's own rate) to a running
worker, joined by Kafka timestamps (the output record's minus the input record's at
``source.last_offset``; both stamped by producers on this machine), with how evenly the producer
paced and its CPU share (it shares the machine with the worker); and the worker's peak RSS with
``--rss-series`` series of ``--rss-samples`` samples each (one chunk per series, so no window
completes). Peak RSS of every worker run: its VmHWM (/proc/PID/status) sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from record import run_record  # bench/record.py (scripts run from bench/)
from throughput_args import TWOLEAD, parse_args
from throughput_clients import (
    PACED_LINGER_MS,
    REPO,
    WorkerProcess,
    bare_consume,
    embedded_services,
    paced_send,
    produce_all,
    read_topic,
)
from throughput_measures import (
    chunk_messages,
    complete_windows,
    event_counts,
    flatten_env,
    half_rates,
    join_latencies,
    latency_summary,
    latency_timeline,
    log_events,
    markdown,
    pacing_summary,
    sample_messages,
    windows_per_series,
    worker_span,
)

from model.checkpoint import save_checkpoint
from model.detectors.seq2gmm.config import default_config
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.errors import DataError
from model.evaluation.data import ucr_one_class_split
from model.evaluation.synthetic import SyntheticConfig, generate, synthetic_training_windows
from worker.errors import ServiceError
from worker.ops.settings import Settings, load_settings
from worker.registry.store import ModelRegistry
from worker.stream.kafka_loop import RunLimits
from worker.stream.topics import ensure_topics

# the latency run's worker stops this long after its last record (so it stops only once it has
# read everything); longer than a group join on tansu, which its idle clock also counts
IDLE_STOP_S = 20.0
WARMUP_S = 5.0  # latency quantiles are also shown without the run's first seconds
TIMELINE_S = 5.0  # latency p50 / max per this many seconds of input


def say(text: str) -> None:
    print(f"[throughput] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- services & setup


@dataclasses.dataclass
class Bench:
    """The services, the registry prefix and the options every worker run shares."""

    kafka_url: str
    redis_url: str
    device: str
    threads: int
    stagger: bool  # one-sample messages: series out of phase (sample_messages)
    scorings: tuple[str | None, ...] = (None,)  # None: the worker's default scoring
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:8])

    def overrides(self, tag: str, scoring: str | None = None, run: int = 0) -> dict[str, Any]:
        name = f"bench-{self.run_id}-{tag}"
        out = f"{name}-{run}{scoring}" if scoring else name  # variants read the same raw topic
        return {
            "kafka": {
                "bootstrap_servers": self.kafka_url,
                "raw_topic": f"{name}-raw",
                "anomalies_topic": f"{out}-anomalies",
                "dead_letter_topic": f"{out}-dlq",
                "group_id": f"{out}-worker",  # group timing: the worker's defaults
            },
            # own incidents topic: on assignment a worker reads its partitions back, and a shared
            # one would hand each run the incidents of the runs before it
            "incidents": {"topic": f"{out}-incidents"},
            **({"batching": {"scoring": scoring}} if scoring else {}),
            "redis": {"url": self.redis_url, "key_prefix": f"bench-{self.run_id}"},
            "logging": {"format": "json"},
            "device": self.device,
            "torch_threads": self.threads,
            "metrics": {"port": 0},
        }

    def settings(
        self, tag: str, scoring: str | None = None, run: int = 0
    ) -> tuple[Settings, dict[str, str]]:
        """The run's settings (the environment's SEQ2GMM_* plus the overrides, as the worker
        reads them) with its topics created, and the worker's environment."""
        nested = self.overrides(tag, scoring, run)
        settings = load_settings(**nested)
        k = settings.kafka
        topics = [k.raw_topic, k.anomalies_topic, k.dead_letter_topic, settings.incidents.topic]
        ensure_topics(self.kafka_url, k, topics)
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        return settings, {**os.environ, **flatten_env(nested), "PYTHONPATH": path}


# --------------------------------------------------------------------------- data and models


def twolead_rows(data: Path, count: int) -> list[np.ndarray]:
    """``count`` TwoLeadECG one-class test rows, cycled (1,139 distinct rows)."""
    test = ucr_one_class_split(data / "ucr", "TwoLeadECG").test
    return [test[i % len(test)] for i in range(count)]


def synthetic_rows(length: int, n_series: int, n_windows: int, seed: int) -> list[np.ndarray]:
    """Quasi-periodic series (period ``length``) cut into windows, row j * n_series + k being
    window j of series k (the order of chunk_messages / sample_messages)."""
    cfg = SyntheticConfig(n_series=n_series, n_cycles=n_windows + 2, period=length, seed=seed)
    values = [s.values[:, 0] for s in generate(cfg)]
    if min(len(v) for v in values) < n_windows * length:
        raise DataError(
            f"synthetic series shorter than {n_windows} windows of {length}; pass fewer --windows"
        )
    return [
        values[k][j * length : (j + 1) * length] for j in range(n_windows) for k in range(n_series)
    ]


def train_and_publish(
    bench: Bench, length: int, data: Path, epochs: int, n_windows: int, seed: int, out: Path
) -> tuple[str, float]:
    """Train a default-config Seq2GMM for windows of ``length``, publish and promote it."""
    if length == TWOLEAD:
        windows = ucr_one_class_split(data / "ucr", "TwoLeadECG").train
    else:
        every = synthetic_training_windows(length, seed)
        windows = every[:: max(1, len(every) // n_windows)][:n_windows]
    started = time.perf_counter()
    cfg = default_config()
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, epochs=epochs))
    detector = Seq2GMMDetector(cfg).fit(windows, seed=seed)
    if not detector.has_threshold:
        detector.infer_threshold(fpr=0.01)
    path = save_checkpoint(detector, out / f"L{length}")
    name = f"bench-{length}"
    with ModelRegistry.from_url(bench.redis_url, f"bench-{bench.run_id}") as registry:
        registry.publish_dir(path, name, promote=True)
    return name, time.perf_counter() - started


# --------------------------------------------------------------------------- the measurements


def throughput_case(
    bench: Bench, model: str, rows: list[np.ndarray], n_series: int, form: str
) -> list[dict[str, Any]]:
    """One message form of one data set: bare consumer, then the worker (once per scoring
    variant), on the same topic; one case per variant."""
    length = len(rows[0])
    settings, _ = bench.settings(f"{form}{length}")
    k = settings.kafka
    windows = len(rows)
    if form == "sample":
        messages = list(sample_messages(rows, n_series, f"s{length}", stagger=bench.stagger))
        windows = complete_windows(n_series, len(rows) // n_series, length, bench.stagger)
    else:
        messages = list(chunk_messages(rows, n_series, f"s{length}"))
    produce_s = produce_all(bench.kafka_url, k.raw_topic, messages)
    say(f"L={length} {form}: {len(messages):,} messages produced in {produce_s:.1f} s")
    bare = bare_consume(bench.kafka_url, k, len(messages))
    say(f"L={length} {form}: bare consumer {bare['msg_per_s']:,.0f} msg/s")
    case = {
        "length": length,
        "form": form,
        "series": n_series,
        "messages": len(messages),
        "samples": len(messages) if form == "sample" else len(rows) * length,
        "windows": windows,
        "produce_s": produce_s,
        "bare": bare,
    }
    cases = []
    for run, scoring in enumerate(bench.scorings):
        worker = worker_run(bench, model, f"{form}{length}", scoring, run, len(messages))
        say(
            f"L={length} {form} scoring={scoring or 'default'}: worker"
            f" {worker['msg_per_s']:,.0f} msg/s over {worker['span_s']:.1f} s"
        )
        cases.append({**case, "scoring": scoring, "worker": worker})
    return cases


def worker_run(
    bench: Bench, model: str, tag: str, scoring: str | None, run: int, n_messages: int
) -> dict[str, Any]:
    """``seq2gmm worker --stop-at-end`` over the pre-filled topic of ``tag`` (its ``run``-th
    reading: its own group and output topic)."""
    settings, env = bench.settings(tag, scoring, run)
    k = settings.kafka
    load = os.getloadavg()
    proc = WorkerProcess(model, env, "--stop-at-end")
    peak_rss_mb = proc.wait(timeout_s=300 + n_messages / 100)
    span = worker_span(log_events(proc.stderr))
    c = span.summary
    out = read_topic(bench.kafka_url, k.anomalies_topic, k.num_partitions, c["scored"])
    # busy: assignment -> the last record published (its producer timestamp, this machine's
    # clock like the log lines'): without the --stop-at-end settle wait and the shutdown
    busy_s = max(r.timestamp for r in out) / 1000 - span.assigned if out else span.seconds
    return {
        "scoring": settings.batching.scoring,
        "loadavg_before": load,
        "span_s": span.seconds,
        "busy_s": busy_s,
        "caught_up_s": None if span.caught_up is None else span.caught_up - span.assigned,
        "consumed": c["consumed"],
        "samples": c["samples"],
        "scored": c["scored"],
        "published": len(out),
        "dead_lettered": c["dead_lettered"],
        "complete": c["consumed"] == n_messages,
        "msg_per_s": c["consumed"] / busy_s,
        "windows_per_s": c["scored"] / busy_s,
        "samples_per_s": c["samples"] / busy_s,
        "peak_rss_mb": peak_rss_mb,
        "children_peak_rss_mb": proc.children_peak_rss_mb(),
        # CPU seconds from the assignment on (sampled every 50 ms): where the work went
        "cpu_s": proc.cpu_s - (proc.cpu_at_assigned or (0.0, 0.0))[0],
        "children_cpu_s": proc.children_cpu_s() - (proc.cpu_at_assigned or (0.0, 0.0))[1],
        "summary": c,
        "events": event_counts(proc.stderr),
    }


def latency_case(
    bench: Bench,
    model: str,
    data: Path,
    n_series: int,
    rate: float,
    seconds: float,
    scoring: str | None = None,
    form: str = "sample",
    client: str = "kafka-python",
) -> dict[str, Any]:
    """Messages of ``form`` (one sample, aligned unless --stagger; or one window) at ``rate``
    to a running worker (``scoring``: its variant, None = the default); latency per window."""
    settings, env = bench.settings(f"latency{scoring or ''}", scoring)
    k = settings.kafka
    per_window = TWOLEAD if form == "sample" else 1
    windows = math.ceil(rate * seconds / (n_series * per_window)) + 2
    rows = twolead_rows(data, n_series * windows)
    if form == "sample":
        messages = sample_messages(rows, n_series, "lat", stagger=bench.stagger)
    else:
        messages = chunk_messages(rows, n_series, "lat")
    proc = WorkerProcess(model, env, "--idle-timeout", str(IDLE_STOP_S))
    if not proc.wait_assigned(timeout_s=180):
        proc.kill()
        with contextlib.suppress(ServiceError):
            proc.wait(timeout_s=10)
        tail = "".join(proc.stderr[-20:])
        raise ServiceError(
            "the latency run's worker got no partition (within 180 s, or before its idle"
            f" timeout of {IDLE_STOP_S:.0f} s); its last log lines:\n{tail}"
        )
    say(f"latency (scoring {scoring or 'default'}): sending {rate:,.0f} msg/s for {seconds:.0f} s")
    load = os.getloadavg()
    sent, elapsed, producer_cpu_s = paced_send(
        bench.kafka_url, k.raw_topic, messages, rate, seconds, client
    )
    peak_rss_mb = proc.wait(timeout_s=300)
    summary = worker_span(log_events(proc.stderr)).summary
    inputs = read_topic(bench.kafka_url, k.raw_topic, k.num_partitions, sent)
    outputs = read_topic(bench.kafka_url, k.anomalies_topic, k.num_partitions, summary["scored"])
    produced_ms = {(m.partition, m.offset): m.timestamp for m in inputs}
    published = []
    for m in outputs:
        source = json.loads(m.value)["source"]
        published.append((source["partition"], source["last_offset"], m.timestamp))
    joined, unjoined = join_latencies(produced_ms, published)
    start_ms = min(produced_ms.values(), default=0)
    return {
        "scoring": settings.batching.scoring,
        "form": form,
        "loadavg_before": load,
        "series": n_series,
        "target_msg_per_s": rate,
        "achieved_msg_per_s": sent / elapsed,
        "seconds": elapsed,
        "sent": sent,
        "read_back": len(inputs),
        "published": len(outputs),
        "unjoined": unjoined,
        "not_create_time": sum(m.timestamp_type != 0 for m in [*inputs, *outputs]),
        "pacing": pacing_summary(produced_ms.values()),
        "producer_cpu_share": producer_cpu_s / elapsed,
        "paced_client": client,
        "fetch_max_wait_ms": k.fetch_max_wait_ms,
        "latency": latency_summary(joined, start_ms, WARMUP_S),
        "timeline": latency_timeline(joined, start_ms, TIMELINE_S),
        "timeline_s": TIMELINE_S,
        "linger_ms": settings.batching.linger_ms,
        "max_windows": settings.batching.max_windows,
        "producer_linger_ms": PACED_LINGER_MS,
        "peak_rss_mb": peak_rss_mb,
        "summary": summary,
        "events": event_counts(proc.stderr),
    }


def rss_case(bench: Bench, model: str, data: Path, n_series: int, samples: int) -> dict[str, Any]:
    """Many short series: one chunk of ``samples`` samples per series, so nothing completes."""
    settings, env = bench.settings("rss")
    k = settings.kafka
    rows = [row[:samples] for row in twolead_rows(data, n_series)]
    produce_s = produce_all(bench.kafka_url, k.raw_topic, chunk_messages(rows, n_series, "m"))
    say(f"rss: {n_series:,} series produced in {produce_s:.1f} s")
    proc = WorkerProcess(model, env, "--stop-at-end")
    peak_rss_mb = proc.wait(timeout_s=300 + n_series / 100)
    span = worker_span(log_events(proc.stderr))
    return {
        "series": n_series,
        "samples_per_series": samples,
        "peak_rss_mb": peak_rss_mb,
        "children_peak_rss_mb": proc.children_peak_rss_mb(),  # the scoring process, if any
        "tracked": span.summary["series"],
        "max_series": settings.worker.max_series,
        "msg_per_s": span.summary["consumed"] / span.seconds,
        "summary": span.summary,
        "events": event_counts(proc.stderr),
    }


# --------------------------------------------------------------------------- main


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rows_for(args: argparse.Namespace, length: int, factor: int = 1) -> list[np.ndarray]:
    n_windows = windows_per_series(length, args.windows) * factor
    if length == TWOLEAD:
        return twolead_rows(args.data, args.series * n_windows)
    return synthetic_rows(length, args.series, n_windows, args.seed)


def measure_all(args: argparse.Namespace, bench: Bench, tmp: Path) -> dict[str, Any]:
    models = {}
    for length, epochs in args.epochs.items():
        n_train = args.train_windows.get(length, 0)
        models[length], seconds = train_and_publish(
            bench, length, args.data, epochs, n_train, args.seed, tmp
        )
        say(f"model L={length}: {epochs} epochs, trained and published in {seconds:.1f} s")
    cases = [
        case
        for length in args.lengths
        for form in ("sample", "chunk")
        for case in throughput_case(
            bench,
            models[length],
            rows_for(args, length, 1 if form == "sample" else args.chunk_factor),
            args.series,
            form,
        )
    ]
    out: dict[str, Any] = {"cases": cases}
    halves = half_rates(cases, TWOLEAD, args.latency_form)
    if args.latency_rate:  # a fixed rate (to compare runs), each variant at it
        halves = {scoring: args.latency_rate for scoring in dict.fromkeys(bench.scorings)}
    if args.latency_seconds > 0 and halves:
        paced_at = "a fixed rate" if args.latency_rate else "half load"
        out["latency"] = [
            latency_case(
                bench,
                models[TWOLEAD],
                args.data,
                args.series,
                rate,
                args.latency_seconds,
                scoring,
                args.latency_form,
                args.paced_client,
            )
            | {"paced_at": paced_at}
            for scoring, rate in halves.items()
        ]
    elif args.latency_seconds > 0:
        say("latency run skipped: it needs the L = 82 case of its form (--lengths 82 ...)")
    if args.rss_series > 0:
        out["rss"] = rss_case(bench, models[TWOLEAD], args.data, args.rss_series, args.rss_samples)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed_everything(args.seed)
    torch.set_num_threads(1)  # training here: one thread is much faster on a small shared CPU
    started = time.perf_counter()
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="seq2gmm-throughput-") as tmp,
        embedded_services(Path(tmp) / "services") as (kafka_url, redis_url),
    ):
        scorings = tuple(args.scoring) if args.scoring else (None,)
        bench = Bench(kafka_url, redis_url, args.device, args.threads, args.stagger, scorings)
        measured = measure_all(args, bench, Path(tmp))
    defaults = load_settings()
    result = {
        **run_record(
            "throughput.py",
            started,
            device=args.device,
            worker_torch_threads=args.threads,
            loadavg_before=load_before,
            loadavg_after=os.getloadavg(),
        ),
        "setup": {
            "mode": "quick" if args.quick else "full",
            "device": args.device,
            "threads": args.threads,
            "series": args.series,
            "stagger": args.stagger,
            "scoring": args.scoring or [defaults.batching.scoring],
            "windows_at_82": args.windows,
            "chunk_factor": args.chunk_factor,
            "epochs": args.epochs,
            "train_windows": args.train_windows,
            "settle_s": RunLimits().at_end_settle_s,
            "linger_ms": defaults.batching.linger_ms,
            "max_windows": defaults.batching.max_windows,
            "data": "L = 82: TwoLeadECG one-class test rows (cycled); other L: synthetic"
            " quasi-periodic series (model.evaluation.synthetic, period L).",
        },
        **measured,
    }
    print(markdown(result))
    print(f"\nwall time {result['total_seconds']:.0f} s; command: {result['command']}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
