"""``seq2gmm models drift NAME``: has the model's live score distribution moved from training?

Reads the model's records on ``ts.anomalies`` over ``--since`` (``--until``) and, per version
scored in the range, computes the statistic the worker exports as
``seq2gmm_drift_statistic``: the PSI of the windows' percentiles over the training score
deciles (:mod:`model.evaluation.drift`), with the share of windows above the threshold, the
alert level and a verdict (``insufficient`` below 200 windows, ``stable`` < 0.1 <= ``watch``
< 0.25 <= ``drift``). When to retrain: docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from model.evaluation.drift import ALERT_LEVEL, MIN_WINDOWS, N_BINS, drift_report
from worker.dev.endpoints import resolve_kafka
from worker.ops.settings import Settings
from worker.registry.records import validate_name
from worker.stream.history import parse_time_ms
from worker.stream.scored_history import PublishedWindow, read_scored


def register(msub: argparse._SubParsersAction[Any]) -> None:
    help = "drift of the model's live window scores against its training scores"
    p = msub.add_parser("drift", help=help, description=help)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--since", default="1h", help="start: a duration ago (1h, 7d) or ISO time")
    p.add_argument("--until", default=None, help="end (default: now)")
    p.add_argument(
        "--min-windows",
        type=int,
        default=MIN_WINDOWS,
        help=f"fewer windows give no verdict (default {MIN_WINDOWS})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=_drift)


def version_drift(windows: list[PublishedWindow], min_windows: int) -> dict[str, Any]:
    """The drift report of one version's windows, with the share in each training decile."""
    pct = np.array([w.percentile for w in windows], dtype=np.float64)
    flags = np.array([w.anomalous for w in windows], dtype=bool)
    report = drift_report(pct, flags, min_windows)
    hist = np.histogram(pct, bins=N_BINS, range=(0.0, 100.0))[0]
    shares = (hist / max(1, pct.size)).round(4).tolist()
    stamps = [w.published_ms for w in windows]
    span = {"first_ms": min(stamps), "last_ms": max(stamps)} if stamps else {}
    return {**report.to_dict(), "decile_shares": shares, **span}


def _drift(args: argparse.Namespace, settings: Settings) -> int:
    name = validate_name(args.name)
    since_ms = parse_time_ms(args.since)
    until_ms = parse_time_ms(args.until) if args.until else None
    k = settings.kafka
    history = read_scored(resolve_kafka(settings), k, [k.anomalies_topic], name, since_ms, until_ms)
    versions = {
        v: version_drift(list(ws.values()), args.min_windows)
        for v, ws in sorted(history.by_version.items())
    }
    latest = max(versions, default=None, key=lambda v: versions[v].get("last_ms", 0))
    doc = {
        "model": name,
        "since": args.since,
        "until": args.until,
        "alert_level": ALERT_LEVEL,
        "latest_version": latest,
        "verdict": versions[latest]["verdict"] if latest is not None else "insufficient",
        "versions": {str(v): d for v, d in versions.items()},
        "unreadable_records": history.unreadable,
    }
    print(json.dumps(doc, indent=2) if args.json else _text(doc))
    return 0


def _text(doc: dict[str, Any]) -> str:
    if not doc["versions"]:
        return f"{doc['model']}: no scored window since {doc['since']} on the anomalies topic"
    lines = [f"{doc['model']}: drift since {doc['since']} (alert at PSI >= {doc['alert_level']})"]
    for v, d in doc["versions"].items():
        stat = "-" if d["statistic"] is None else f"{d['statistic']:.3f}"
        share = "-" if d["anomaly_share"] is None else f"{100 * d['anomaly_share']:.1f} %"
        deciles = " ".join(f"{100 * s:.0f}" for s in d["decile_shares"])
        lines += [
            f"  v{v}: {d['windows']} windows, PSI {stat}, anomalous {share}: {d['verdict']}",
            f"      % of windows per training decile (10 each when stable): {deciles}",
        ]
    lines.append(f"verdict (v{doc['latest_version']}): {doc['verdict']}")
    if doc["verdict"] == "drift":
        lines.append(
            "the scores have moved from training; see docs/operations.md (when to retrain)"
        )
    return "\n".join(lines)
