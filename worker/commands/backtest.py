"""``seq2gmm backtest``: what a model version would have flagged on past or offline data.

The data (a CSV series, a UCR file, or a topic's history between two times) is replayed as
``ts.raw`` records through the worker's streaming core offline
(:func:`worker.stream.backtest.replay`: no consumer group, nothing published), so the
energies are those the worker publishes for the same records. Reported: the windows that would
be flagged (count, rate, the top ones by energy), precision / recall / F1 when the data has
labels, and with ``--compare`` where another version's flags differ.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model.evaluation.data import load_series_csv, load_ucr, normal_class, ucr_windows
from worker.dev.endpoints import resolve_kafka
from worker.dev.replay import Message, csv_messages, rows_as_windows
from worker.errors import ConfigError
from worker.ops.settings import Settings
from worker.registry.loader import DetectorModel, RegistryModels, pick_device
from worker.registry.records import ACTIVE, parse_ref
from worker.stream.backtest import Replay, compare, metrics, replay, window_labels
from worker.stream.core import InRecord
from worker.stream.core_settings import core_options, incident_options
from worker.stream.history import parse_time_ms, read_history

Points = dict[str, tuple[np.ndarray, np.ndarray]]  # series id -> (timestamps, 0/1 labels)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    b = sub.add_parser(
        "backtest",
        help="replay data through the streaming core offline: what a model version would flag",
    )
    b.add_argument(
        "--model",
        required=True,
        metavar="REF",
        help="NAME (its active version), NAME:VERSION, NAME:ALIAS, or a checkpoint directory",
    )
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, help="CSV series: timestamp,value[,...][,label]")
    src.add_argument("--ucr", type=Path, help="UCR TSV: each row one window, its class a label")
    src.add_argument("--topic", help="a topic's history (e.g. ts.raw), with --since")
    b.add_argument("--since", metavar="WHEN", help="--topic: a duration ago (7d) or a time")
    b.add_argument("--until", metavar="WHEN", help="--topic: end of the range (default: now)")
    b.add_argument("--series-id", help="--csv: the series id; --ucr: its prefix")
    b.add_argument(
        "--compare",
        metavar="REF",
        help="another version on the same data: VERSION or ALIAS (of --model's name) or a REF",
    )
    b.add_argument("--top", type=int, default=10, help="windows listed by energy (default 10)")
    b.add_argument("--list-windows", action="store_true", help="--json: every scored window")
    b.add_argument("--json", action="store_true", help="exactly one JSON object on stdout")
    b.set_defaults(handler=_backtest)


# ------------------------------------------------------------------ models


def _load(ref: str, settings: Settings) -> DetectorModel:
    """The model ``ref`` names: a checkpoint directory, else a registry version."""
    device = pick_device(settings.device)
    path = Path(ref)
    if (path / "metadata.json").is_file():
        from model.checkpoint import load_checkpoint

        metadata = json.loads((path / "metadata.json").read_text())
        return DetectorModel(path.name, 1, load_checkpoint(path), metadata, device)
    from worker.commands.models import open_registry

    name, target = parse_ref(ref)
    with open_registry(settings) as registry:
        if isinstance(target, int):
            record = registry.get(name, target)
        else:
            record = registry.get(name, alias=target or ACTIVE)
    model: DetectorModel = RegistryModels.loader(device)(record)
    return model


def _other_ref(ref: str, base: str) -> str:
    """``--compare``: a full REF, or a version / alias of ``--model``'s name."""
    if ":" in ref or Path(ref, "metadata.json").is_file():
        return ref
    return f"{base.partition(':')[0]}:{ref}"


# ------------------------------------------------------------------ data


def _as_records(messages: Iterator[Message]) -> list[InRecord]:
    return [
        InRecord("backtest", 0, i, sid.encode(), json.dumps(msg).encode())
        for i, (sid, msg) in enumerate(messages)
    ]


def _ucr(path: Path, prefix: str, model: DetectorModel) -> tuple[list[InRecord], Points]:
    """Row i as the i-th window of series ``PREFIX-0`` (timestamps 0, 1, ...); a row's points
    are anomalous when its class is not the normal one (the model's training class when it was
    trained on a UCR file, else the file's most frequent)."""
    labels, x = load_ucr(path)
    rows = ucr_windows(x)
    normal = (getattr(model.detector, "training_summary", None) or {}).get("normal_label")
    if normal is None:
        normal = normal_class(labels)
    lengths = [len(r) for r in rows]
    points = np.repeat((labels != normal).astype(np.int64), lengths)
    sid = f"{prefix}-0"
    records = _as_records(rows_as_windows(rows, prefix=prefix))
    return records, {sid: (np.arange(len(points), dtype=np.float64), points)}


def _csv(path: Path, series_id: str) -> tuple[list[InRecord], Points]:
    """One sample a record with the file's own timestamps; point labels when it has them."""
    series = load_series_csv(path)
    records = _as_records(csv_messages(path, series_id, chunk=1))
    if series.labels is None:
        return records, {}
    return records, {series_id: (series.timestamps, series.labels)}


def _data(args: argparse.Namespace, settings: Settings, model: DetectorModel) -> Any:
    """(records, point labels per series, a description of the source)."""
    if (args.since or args.until) and args.topic is None:
        raise ConfigError("--since and --until go with --topic")
    if args.ucr is not None:
        prefix = args.series_id or args.ucr.stem.split("_")[0].lower()
        return (*_ucr(args.ucr, prefix, model), {"ucr": str(args.ucr)})
    if args.csv is not None:
        sid = args.series_id or args.csv.stem
        return (*_csv(args.csv, sid), {"csv": str(args.csv), "series_id": sid})
    if args.since is None:
        raise ConfigError("--topic needs --since (a duration ago such as 7d, or a time)")
    since_ms = parse_time_ms(args.since)
    until_ms = parse_time_ms(args.until) if args.until else None
    history = read_history(resolve_kafka(settings), settings.kafka, args.topic, since_ms, until_ms)
    records = [r.in_record() for r in history]
    source = {"topic": args.topic, "since": _iso(since_ms), "until": _iso(until_ms)}
    return records, {}, source


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


# ------------------------------------------------------------------ the command


def _backtest(args: argparse.Namespace, settings: Settings) -> int:
    if args.top < 0:
        raise ConfigError("--top takes a number of windows >= 0")
    model = _load(args.model, settings)
    records, points, source = _data(args, settings, model)
    w = settings.worker
    options = core_options(
        settings,
        gap_factor=w.gap_factor,
        idle_timeout_s=w.series_idle_timeout_s,
        **incident_options(settings),  # the incidents that would open (SEQ2GMM_INCIDENTS__*)
    )
    result = replay(model, records, options)
    doc: dict[str, Any] = {"source": source, **result.summary(args.top)}
    if points:
        doc["metrics"] = metrics(result, window_labels(result.windows, points))
    if args.compare:
        other = replay(_load(_other_ref(args.compare, args.model), settings), records, options)
        doc["compare"] = compare(result, other, listed=args.top)
    if args.json:
        if args.list_windows:
            doc["all_windows"] = [x.to_dict() for x in result.windows]
        print(json.dumps(doc))
        return 0
    _print(doc, result)
    return 0


def _print(doc: dict[str, Any], result: Replay) -> None:
    m = doc["model"]
    rate = f" ({100 * doc['rate']:.1f}%)" if doc["rate"] is not None else ""
    dead = sum(doc["dead_letters"].values())
    print(
        f"backtest of {m['name']}:{m['version']} (threshold {m['threshold']:.4g}) on"
        f" {doc['records']} records: {doc['windows']} windows, {doc['flagged']} flagged{rate},"
        f" {dead} dead-lettered, {len(doc['incidents'])} incidents"
    )
    for inc in doc["incidents"]:
        print(
            f"  incident {inc['series_id']}  {_when(inc['first_window_start'])} .."
            f" {_when(inc['last_window_start'])}  {inc['anomalous_windows']} anomalous windows"
            f"  ({inc['state']})"
        )
    if doc["top"]:
        print("  top windows by energy (score = energy / threshold):")
        for w in doc["top"]:
            flag = "ANOMALOUS" if w["anomalous"] else "normal"
            quality = f"  [{', '.join(w['quality'])}]" if w["quality"] else ""
            print(
                f"    {w['series_id']}  {_when(w['start'])}  energy {w['energy']:.4g}"
                f"  score {w['score']:.3f}  {flag}{quality}"
            )
    if "metrics" in doc:
        k = doc["metrics"]
        print(
            f"  labels: {k['anomalous_windows']} anomalous of {k['labelled_windows']} windows;"
            f" precision {k['precision']:.3f} recall {k['recall']:.3f} F1 {k['f1']:.3f}"
            f" (tp {k['tp']}, fp {k['fp']}, fn {k['fn']})"
        )
    if "compare" in doc:
        c = doc["compare"]
        a, b = (f"{c[x]['name']}:{c[x]['version']}" for x in ("a", "b"))
        agreement = "-" if c["agreement"] is None else f"{100 * c['agreement']:.1f}%"
        print(
            f"  against {b}: agreement {agreement} over {c['common_windows']} windows;"
            f" flagged by {a} only {c['flagged_by_a_only']}, by {b} only {c['flagged_by_b_only']}"
        )
        for side, who in (("a_only", a), ("b_only", b)):
            for w in c[side]:
                print(f"    only {who}: {w['series_id']}  {_when(w['start'])}  {w['energy']:.4g}")


def _when(t: float) -> str:
    """A window start: ISO time for epoch timestamps, the plain number for sample indices."""
    if t > 1e8:
        return datetime.fromtimestamp(t, UTC).isoformat()
    return f"{t:g}"
