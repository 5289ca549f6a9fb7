"""``seq2gmm produce`` (replay data into ts.raw) and ``seq2gmm tail`` (print ts.anomalies, or
ts.incidents with ``--incidents``)."""

from __future__ import annotations

import argparse
import json
import time
from itertools import islice
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from model.evaluation.synthetic import SyntheticConfig
from worker.dev.endpoints import resolve_endpoints
from worker.dev.replay import (
    Message,
    csv_messages,
    message_time,
    rows_as_windows,
    sample_messages,
    synthetic_messages,
    ucr_rows,
)
from worker.errors import ConfigError
from worker.ops.progress import Progress
from worker.ops.settings import Settings
from worker.stream.incident_record import IncidentRecord
from worker.stream.kafka_clients import make_consumer, make_producer
from worker.stream.messages import AnomalyRecord
from worker.stream.topics import ensure_topics


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "produce", help="replay a dataset (UCR, CSV, MIT-BIH or synthetic) into ts.raw"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ucr", type=Path, help="UCR TSV file: each row becomes one window")
    src.add_argument("--csv", type=Path, help="CSV series: timestamp,value[,value...][,label]")
    src.add_argument("--synthetic", action="store_true", help="quasi-periodic series + anomalies")
    src.add_argument(
        "--mitdb",
        type=Path,
        metavar="PATH/RECORD",
        help="MIT-BIH record (e.g. ../shared/data/mitdb/100: its .hea/.dat) as single-sample"
        " messages of one lead, a continuous ECG the worker cuts into beats itself",
    )
    p.add_argument("--lead", default="MLII", help="--mitdb: the lead to replay (default MLII)")
    p.add_argument(
        "--one-class-train", type=Path, help="with --ucr: replay the one-class test split"
    )
    p.add_argument("--series", type=int, default=1, help="spread rows / synthetic over N series")
    p.add_argument("--series-id", default=None, help="series id (CSV) or id prefix (UCR)")
    p.add_argument("--cycles", type=int, default=60, help="synthetic: cycles per series")
    p.add_argument("--period", type=int, default=64, help="synthetic: mean cycle length")
    p.add_argument("--features", type=int, default=1, help="synthetic: values per sample")
    p.add_argument("--anomaly-rate", type=float, default=0.05, help="synthetic: anomalous cycles")
    p.add_argument(
        "--episode-cycles",
        type=int,
        default=1,
        help="synthetic: consecutive anomalous cycles per anomaly (--anomaly-rate: per cycle,"
        " the chance that one starts)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=float, default=None, help="first timestamp (default: now)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    p.add_argument("--chunk", type=int, default=64, help="CSV/synthetic samples per message")
    p.add_argument("--rate", type=float, default=0.0, help="messages per second (0 = max)")
    p.add_argument(
        "--speedup",
        type=float,
        default=0.0,
        help="pace by the samples' own timestamps, X times faster than real time (0 = max);"
        " e.g. 10 replays a 360 Hz ECG at 3,600 samples a second",
    )
    p.add_argument("--limit", type=int, default=None, help="stop after N messages")
    p.add_argument("--topic", default=None, help="default: SEQ2GMM_KAFKA__RAW_TOPIC")
    p.set_defaults(handler=_produce)

    t = sub.add_parser("tail", help="print alerts from ts.anomalies (or ts.incidents)")
    t.add_argument("--json", action="store_true", help="one JSON record per line")
    t.add_argument(
        "--incidents",
        action="store_true",
        help="print incidents (SEQ2GMM_INCIDENTS__TOPIC) instead of windows",
    )
    t.add_argument("--only-anomalous", action="store_true")
    t.add_argument("--from-beginning", action="store_true", help="read the topic from the start")
    t.add_argument("--max", type=int, default=None, help="exit after N records")
    t.add_argument("--timeout", type=float, default=None, help="exit after N idle seconds")
    t.set_defaults(handler=_tail)


def _messages(args: argparse.Namespace, start: float) -> tuple[list[Message] | Any, int | None]:
    if args.ucr is not None:
        rows = ucr_rows(args.ucr, args.one_class_train)
        prefix = args.series_id or args.ucr.stem.split("_")[0].lower()
        msgs = rows_as_windows(
            rows, n_series=args.series, prefix=prefix, start=start, interval=args.interval
        )
        return msgs, len(rows)
    if args.one_class_train is not None:
        raise ConfigError("--one-class-train only goes with --ucr")
    if args.csv is not None:
        return csv_messages(args.csv, args.series_id or args.csv.stem, chunk=args.chunk), None
    if args.mitdb is not None:
        return _mitdb_messages(args.mitdb, args.lead, args.series_id, start)
    cfg = SyntheticConfig(
        n_series=args.series,
        n_cycles=args.cycles,
        period=args.period,
        n_features=args.features,
        anomaly_rate=args.anomaly_rate,
        episode_cycles=args.episode_cycles,
        seed=args.seed,
    )
    return synthetic_messages(cfg, start=start, interval=args.interval, chunk=args.chunk), None


def _mitdb_messages(path: Path, lead: str, series_id: str | None, start: float) -> tuple[Any, int]:
    """One lead of an MIT-BIH record as single-sample messages, timestamps from ``start``."""
    try:  # the evaluation's reader, loaded on use
        from model.evaluation.mitdb import read_record
    except ImportError as exc:
        raise ConfigError(
            f"--mitdb needs the MIT-BIH reader model.evaluation.mitdb ({exc}); update"
            " seq2gmm-worker, or export the lead as CSV and use --csv PATH --chunk 1"
        ) from exc
    record = read_record(path.parent, path.name)
    values = record.lead(lead)
    sid = series_id or f"mitdb-{path.name}-{lead}"
    return sample_messages(record.timestamps, values, sid, start=start), len(values)


def _pace(args: argparse.Namespace, began: float, sent: int, first: float, t: float) -> None:
    """Wait for the message's turn: ``--rate`` messages a second, or ``--speedup`` times the
    pace of the samples' timestamps."""
    if args.rate > 0:
        due = began + sent / args.rate
    elif args.speedup > 0:
        due = began + (t - first) / args.speedup
    else:
        return
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)  # rate control: pace the messages


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    endpoints = resolve_endpoints(settings)
    topic = args.topic or settings.kafka.raw_topic
    ensure_topics(endpoints.kafka_bootstrap, settings.kafka, [topic])
    start = time.time() if args.start is None else args.start
    msgs, total = _messages(args, start)
    if args.limit is not None:
        msgs = islice(msgs, args.limit)
        total = min(total, args.limit) if total is not None else args.limit
    producer = make_producer(endpoints.kafka_bootstrap, settings.kafka)
    sent = 0
    began = time.monotonic()
    first: float | None = None
    with Progress(total, f"produce -> {topic}") as bar:
        for series_id, message in msgs:
            t = message_time(message)
            first = t if first is None else first
            _pace(args, began, sent, first, t)
            producer.send(topic, key=series_id.encode(), value=json.dumps(message).encode())
            sent += 1
            bar.update()
    producer.flush()
    producer.close()
    print(
        json.dumps(
            {"topic": topic, "messages": sent, "seconds": round(time.monotonic() - began, 3)}
        )
    )
    return 0


def format_alert(rec: AnomalyRecord) -> str:
    flag = "ANOMALY" if rec.anomalous else "normal "
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec.window.start))
    top = max(rec.segments, key=lambda s: s.energy) if rec.segments else None
    where = f" worst segment [{top.start_index}..{top.end_index}]" if top else ""
    quality = f" quality={','.join(rec.quality)}" if rec.quality else ""
    score = f"score {rec.score:.2f} = " if rec.score is not None else ""
    return (
        f"{flag} {rec.series_id} {when}Z  {score}energy {rec.energy:.3f} / threshold"
        f" {rec.threshold:.3f} (p{rec.percentile:.1f})  {rec.model.name}:v{rec.model.version}"
        f"{where}{quality}"
    )


def format_incident(rec: IncidentRecord) -> str:
    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))

    span = f"{when(rec.first_window.start)}Z..{when(rec.last_window.end)}Z"
    score = f" peak score {rec.peak_score:.2f}" if rec.peak_score is not None else ""
    why = f" ({rec.resolution.replace('_', ' ')})" if rec.resolution else ""
    return (
        f"INCIDENT {rec.state.upper():8} {rec.series_id} {span}  {rec.anomalous_count}"
        f" anomalous of {rec.window_count} windows, peak energy {rec.peak_energy:.3f}{score}"
        f"  {rec.model.name}:v{rec.model.version}  id {rec.id[:12]}{why}"
    )


def _shown(args: argparse.Namespace, value: bytes) -> str | None:
    """The line to print for one record, None to skip it."""
    if args.incidents:
        incident = IncidentRecord.model_validate_json(value)
        return value.decode() if args.json else format_incident(incident)
    rec = AnomalyRecord.model_validate_json(value)
    if args.only_anomalous and not rec.anomalous:
        return None
    return value.decode() if args.json else format_alert(rec)


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    endpoints = resolve_endpoints(settings)
    # No consumer group: assign every partition directly, so there is no join delay and
    # tailing never disturbs anybody's committed offsets.
    topic = settings.incidents.topic if args.incidents else settings.kafka.anomalies_topic
    ensure_topics(endpoints.kafka_bootstrap, settings.kafka, [topic])
    consumer = make_consumer(endpoints.kafka_bootstrap, settings.kafka, group_id=None)
    partitions = [
        TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
    ]
    consumer.assign(partitions)
    if args.from_beginning:
        consumer.seek_to_beginning(*partitions)
    else:
        consumer.seek_to_end(*partitions)
    shown = 0
    last = time.monotonic()
    try:
        while args.max is None or shown < args.max:
            polled = consumer.poll(timeout_ms=200)
            for batch in polled.values():
                for msg in batch:
                    last = time.monotonic()
                    line = _shown(args, msg.value)
                    if line is None:
                        continue
                    print(line, flush=True)
                    shown += 1
            if args.timeout is not None and time.monotonic() - last > args.timeout:
                break
    finally:
        consumer.close()
    return 0
