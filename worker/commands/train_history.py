"""``seq2gmm train --from-topic TOPIC``: training data from the stream's history.

The options are registered on ``seq2gmm train`` (:func:`add_options`); the training itself is
``train``'s, so a model trained from a topic is the model trained from a CSV file of the same
samples (same cutter, same windows, same seed: bit-identical). Here: read the topic between
``--since`` and ``--until`` by timestamp (no consumer group, nothing committed), decode each
record as the worker does, keep the series matching ``--series``, optionally leave out the
cycles the served model flagged (``--exclude-flagged``), and cut the rest with ``--cycles``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np

from model.errors import DataError
from model.kinds import is_supervised
from worker.commands.training_cycles import training_cycles
from worker.dev.endpoints import resolve_kafka
from worker.errors import ConfigError
from worker.ops.settings import Settings
from worker.stream.history import parse_time_ms
from worker.stream.series_history import flagged_windows, read_series


def add_options(t: argparse.ArgumentParser) -> None:
    """The --from-topic options of ``seq2gmm train`` (``--from-topic`` itself is one of its
    data sources)."""
    t.add_argument(
        "--series",
        metavar="PATTERN",
        default="*",
        help="--from-topic: the series ids to train on, a glob (default *: every series)",
    )
    t.add_argument(
        "--since",
        metavar="WHEN",
        help="--from-topic: start of the history, a duration ago (7d, 36h) or an ISO-8601 time",
    )
    t.add_argument(
        "--until", metavar="WHEN", help="--from-topic: end of the history (default: now)"
    )
    t.add_argument(
        "--exclude-flagged",
        action="store_true",
        help="--from-topic: leave out the cycles that the model named by --publish (any model"
        " without it) flagged on the anomalies topic (records published since --since)",
    )
    # ``seq2gmm retrain``'s exclusions, computed by replaying the active version (no flag)
    t.set_defaults(exclude_windows=frozenset())
    t.add_argument(
        "--alias",
        metavar="ALIAS",
        help="with --publish: point ALIAS (e.g. candidate) at the new version instead of active",
    )


def topic_training_windows(
    args: argparse.Namespace, detector: Any, settings: Settings
) -> tuple[list[np.ndarray], np.ndarray | None, int | None, dict[str, Any]]:
    """(windows, no labels, serving hop, data summary) from ``args.from_topic``; sets the
    detector's cutter, as ``--train FILE.csv --cycles SPEC`` does."""
    _check(args)
    bootstrap = resolve_kafka(settings)
    since_ms = parse_time_ms(args.since)
    until_ms = parse_time_ms(args.until) if args.until else None
    history = read_series(
        bootstrap, settings.kafka, args.from_topic, args.series, since_ms, until_ms
    )
    span = f"between {_iso(since_ms)} and {_iso(until_ms) if until_ms else 'now'}"
    if not history.series:
        raise DataError(
            f"{args.from_topic} holds no valid samples of a series matching {args.series!r}"
            f" {span} ({history.records} records read); check --series, --since and --until"
        )
    exclude: set[tuple[str, float]] = set(args.exclude_windows)
    if args.exclude_flagged:
        topic = settings.kafka.anomalies_topic
        exclude |= flagged_windows(bootstrap, settings.kafka, topic, since_ms, model=args.publish)
    series = list(history.series.items())
    windows, _, cutter, info = training_cycles(
        series, args.cycles, supervised=False, exclude=exclude
    )
    detector.cycles = cutter.to_config()
    info = {
        "source": f"kafka:{args.from_topic}",
        "format": "topic",
        "pattern": args.series,
        "cycles_spec": args.cycles,  # what `seq2gmm retrain` cuts the next history with
        "since": _iso(since_ms),
        "until": _iso(until_ms) if until_ms else None,
        **history.summary(),
        **info,
    }
    _report(args, history.summary(), history.first_reasons, span, info)
    return windows, None, getattr(cutter, "hop", None), info


def _check(args: argparse.Namespace) -> None:
    if args.since is None:
        raise ConfigError("--from-topic needs --since (a duration ago such as 7d, or a time)")
    if args.cycles is None or args.window is not None or args.hop is not None:
        raise ConfigError(
            "--from-topic needs --cycles SPEC (fixed:LEN[:HOP], period:SECONDS, fiducial) and"
            " takes no --window/--hop: the worker cuts the stream with the model's cutter"
        )
    if is_supervised(args.detector):
        raise ConfigError(
            f"the {args.detector} detector is supervised and the stream carries no labels:"
            " train it from a labelled CSV file"
        )


def _report(
    args: argparse.Namespace,
    history: dict[str, Any],
    reasons: list[str],
    span: str,
    info: dict[str, Any],
) -> None:
    """What was read, on stderr (stdout is the --json summary's)."""
    skipped = sum(history["skipped_records"].values())
    excluded = info.get("dropped_excluded_cycles")
    print(
        f"read {history['records']} records of {args.from_topic} {span}:"
        f" {history['n_series']} series matching {args.series!r}, {history['samples']}"
        f" samples; {skipped} records skipped {history['skipped_records'] or ''},"
        f" {history['dropped_samples']} out-of-order samples dropped;"
        f" {info['n_cycles']} cycles, {info['dropped_flagged_cycles']} with a quality flag"
        + (f", {excluded} flagged by the model" if excluded is not None else "")
        + " left out",
        file=sys.stderr,
    )
    for reason in reasons:
        print(f"  skipped: {reason}", file=sys.stderr)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()
