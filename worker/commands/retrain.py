"""``seq2gmm retrain NAME``: train a candidate on the stream's history, backtest it against the
active version on the same recent data, and promote it only when the gate passes.

Steps: (1) train a candidate with the active version's own settings (detector kind, config,
seed, threshold rule, cutter spec and series pattern, read from its metadata) on the history
``[--since, --until - --holdout)`` through ``seq2gmm train --from-topic``'s code, and publish
it under the alias ``candidate`` (``--candidate`` gates an existing version instead);
(2) replay the held-out records ``[--until - --holdout, --until)`` through both versions
(:func:`worker.stream.backtest.replay`); (3) judge them (:func:`worker.stream.gate.judge`);
(4) promote the candidate when every check passes, and record the decision with its checks in
the model's gate log (``seq2gmm models history NAME``).

Exit status: 0 promoted (or, with ``--dry-run``, would be), :data:`REFUSED` (3) refused by the
gate (the active version stays), 1 an error (nothing promoted), 2 invalid settings or
command line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.kinds import SERVABLE_KINDS
from model.thresholds import EnergyQuantiles, Threshold, expected_alarm_rate
from worker.dev.endpoints import resolve_kafka
from worker.errors import ConfigError
from worker.ops.settings import Settings
from worker.registry.errors import AliasMovedError
from worker.registry.loader import RegistryModels, pick_device
from worker.registry.records import ACTIVE, ModelVersion, validate_name
from worker.registry.store import ModelRegistry
from worker.stream.backtest import Replay, replay
from worker.stream.core import InRecord
from worker.stream.core_settings import core_options, incident_options
from worker.stream.gate import (
    Calibration,
    GateDecision,
    GateRules,
    judge,
    only_series,
    stale_verdict,
)
from worker.stream.history import parse_duration, parse_time_ms, read_history

#: exit status when the gate refuses the candidate (a CronJob or an alert tells it from 1)
REFUSED = 3
CANDIDATE = "candidate"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    r = sub.add_parser(
        "retrain",
        help="train a candidate from the stream's history, backtest it against the active"
        " version on recent data, promote it only if the gate passes (exit 3: refused)",
    )
    r.add_argument("name", help="the registry model (its active version is the reference)")
    r.add_argument("--since", required=True, metavar="WHEN", help="start of the history (7d)")
    r.add_argument("--until", metavar="WHEN", help="end of the history (default: now)")
    r.add_argument(
        "--holdout",
        default="1d",
        metavar="DURATION",
        help="the most recent part of the history, kept out of training and judged on (1d)",
    )
    r.add_argument(
        "--series", metavar="PATTERN", help="series glob (default: the active's training one)"
    )
    r.add_argument("--topic", help="the input topic (default: SEQ2GMM_KAFKA__RAW_TOPIC)")
    r.add_argument(
        "--cycles", metavar="SPEC", help="cutter spec when the active version records none"
    )
    r.add_argument(
        "--candidate",
        metavar="VERSION|ALIAS",
        help="gate this existing version instead of training one",
    )
    r.add_argument(
        "--exclude-flagged",
        choices=("auto", "yes", "no"),
        default="auto",
        help="leave the windows the active version flags in the training range out of the"
        " candidate's training (auto: unless the active is stale on the held-out data)",
    )
    r.add_argument("--dry-run", action="store_true", help="judge, but neither promote nor record")
    r.add_argument("--json", action="store_true", help="exactly one JSON object on stdout")
    rules = r.add_argument_group("gate rules (default: SEQ2GMM_RETRAIN__*)")
    rules.add_argument("--min-windows", type=int, help="recent windows needed to judge")
    rules.add_argument("--rate-tolerance", type=float, help="relative rate tolerance (0.5)")
    rules.add_argument("--rate-slack-windows", type=int, help="absolute slack in windows (2)")
    rules.add_argument("--min-incident-share", type=float, help="incident agreement (0.8)")
    rules.add_argument("--stale-factor", type=float, help="active rate / expected: stale (5)")
    rules.add_argument(
        "--stale-segments", type=int, help="... in every one of this many stretches (4)"
    )
    rules.add_argument(
        "--calibration-factor",
        type=float,
        help="candidate's threshold: training rate / stated rate allowed either way (3)",
    )
    r.set_defaults(handler=_retrain)


# ------------------------------------------------------------------ time range


def _range(args: argparse.Namespace) -> tuple[int, int, int]:
    """(since, start of the holdout, until) in epoch milliseconds."""
    until_ms = parse_time_ms(args.until) if args.until else int(time.time() * 1000)
    split_ms = until_ms - int(parse_duration(args.holdout) * 1000)
    since_ms = parse_time_ms(args.since)
    if since_ms >= split_ms:
        raise ConfigError(
            f"--since ({_iso(since_ms)}) must come before the holdout's start ({_iso(split_ms)}):"
            " go further back with --since or shorten --holdout"
        )
    return since_ms, split_ms, until_ms


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


# ------------------------------------------------------------------ the candidate


def _cycles_spec(args: argparse.Namespace, active: ModelVersion) -> str:
    """How to cut the history: --cycles, the spec the active was trained with, or the fixed
    windows it serves."""
    meta = active.metadata
    spec = args.cycles or (meta.get("training_data") or {}).get("cycles_spec")
    if spec:
        return str(spec)
    cycles = meta.get("cycles")
    if isinstance(cycles, dict) and cycles.get("kind") == "fixed":
        return f"fixed:{cycles['length']}:{cycles['hop']}"
    if cycles is None and meta.get("window_length") and meta.get("hop"):
        return f"fixed:{meta['window_length']}:{meta['hop']}"
    raise ConfigError(
        f"{active.ref} does not record the cutter spec it was trained with (it was not trained"
        " with `seq2gmm train --from-topic`); pass --cycles SPEC (e.g. period:86400, fiducial)"
    )


def _train_candidate(
    args: argparse.Namespace,
    settings: Settings,
    active: ModelVersion,
    pattern: str,
    span: tuple[int, int],
    exclude: frozenset[tuple[str, float]],
) -> int:
    """Train with the active version's settings on ``span`` of the history, leaving out the
    windows in ``exclude``, publish the result as ``NAME:candidate``; its version number."""
    from worker.commands import train

    meta = active.metadata
    kind = meta.get("kind")
    if kind not in SERVABLE_KINDS:
        raise ConfigError(f"{active.ref} is a {kind!r} model; retrain trains {SERVABLE_KINDS}")
    seed = (meta.get("training_data") or {}).get("seed") or 0
    threshold = meta.get("threshold") or {}
    with tempfile.TemporaryDirectory(prefix="seq2gmm-retrain-") as tmp:
        config = Path(tmp, "config.json")
        config.write_text(json.dumps(meta["config"]))
        argv = ["train", "--from-topic", args.topic or settings.kafka.raw_topic]
        argv += ["--series", pattern, "--since", _iso(span[0]), "--until", _iso(span[1])]
        argv += ["--cycles", _cycles_spec(args, active), "--detector", kind]
        argv += ["--config", str(config), "--seed", str(seed), "--out", str(Path(tmp, "m"))]
        argv += ["--publish", active.name, "--alias", CANDIDATE]
        if threshold.get("method") == "fpr":
            argv += ["--threshold-fpr", str(threshold["parameter"])]
        parser = argparse.ArgumentParser(prog="seq2gmm")
        train.register(parser.add_subparsers())  # `seq2gmm train`'s own options and defaults
        train_args = parser.parse_args(argv)
        train_args.exclude_windows = exclude
        summary = train.train_model(train_args, settings)
    return int(summary["version"])


def _candidate(
    args: argparse.Namespace,
    settings: Settings,
    registry: ModelRegistry,
    active: ModelVersion,
    pattern: str,
    span: tuple[int, int],
    exclude: frozenset[tuple[str, float]],
) -> ModelVersion:
    if args.candidate is None:
        version = _train_candidate(args, settings, active, pattern, span, exclude)
        return registry.get(active.name, version)
    if args.candidate.isdigit():
        return registry.get(active.name, int(args.candidate))
    return registry.get(active.name, alias=args.candidate)


# ------------------------------------------------------------------ the command


class _Replayer:
    """Records of the input topic by time, replayed through a version as the worker would
    score them (restricted to the series glob)."""

    def __init__(self, settings: Settings, topic: str, pattern: str) -> None:
        self.settings, self.topic, self.pattern = settings, topic, pattern
        w = settings.worker
        self.options = core_options(
            settings,
            gap_factor=w.gap_factor,
            idle_timeout_s=w.series_idle_timeout_s,
            **incident_options(settings),
        )
        self.load = RegistryModels.loader(pick_device(settings.device))

    def records(self, span: tuple[int, int]) -> list[InRecord]:
        s = self.settings
        history = read_history(resolve_kafka(s), s.kafka, self.topic, span[0], span[1])
        return [r.in_record() for r in history]

    def replay(self, version: ModelVersion, records: list[InRecord]) -> Replay:
        return only_series(replay(self.load(version), records, self.options), self.pattern)


def _exclusion(
    args: argparse.Namespace,
    replayer: _Replayer,
    active: ModelVersion,
    span: tuple[int, int],
    stale: bool,
) -> tuple[frozenset[tuple[str, float]], dict[str, Any]]:
    """The windows the candidate's training leaves out, and what was decided: with
    ``--exclude-flagged auto``, those the active version flags in the training range unless it
    is stale on the held-out data (its flags are then the new traffic, to be learnt)."""
    mode = args.exclude_flagged
    if args.candidate is not None:
        return frozenset(), {"mode": mode, "excluded_windows": 0, "reason": "not trained"}
    if mode == "no" or (mode == "auto" and stale):
        why = "the active model is stale: its flags are the traffic to learn" if stale else "no"
        return frozenset(), {"mode": mode, "excluded_windows": 0, "reason": f"kept ({why})"}
    history = replayer.replay(active, replayer.records(span))
    flagged = frozenset(w.key for w in history.flagged)
    reason = f"left out: the windows {active.ref} flags in the training range"
    info = {"mode": mode, "excluded_windows": len(flagged), "of_windows": len(history.windows)}
    return flagged, {**info, "reason": reason}


def _retrain(args: argparse.Namespace, settings: Settings) -> int:
    from worker.commands.models import open_registry

    name = validate_name(args.name)
    overrides = {k: getattr(args, k) for k in _RULE_FLAGS}
    rules = GateRules.from_settings(settings, **overrides)
    since_ms, split_ms, until_ms = _range(args)
    with open_registry(settings) as registry:
        active = registry.get(name, alias=ACTIVE)
        data = active.metadata.get("training_data") or {}
        pattern = args.series or data.get("pattern") or "*"
        replayer = _Replayer(settings, args.topic or settings.kafka.raw_topic, pattern)
        holdout = replayer.records((split_ms, until_ms))
        ra = replayer.replay(active, holdout)
        expected = _expected_rate(active)
        stale, _ = stale_verdict(ra, rules, expected)
        training = (since_ms, split_ms)
        exclude, exclusion = _exclusion(args, replayer, active, training, stale)
        candidate = _candidate(args, settings, registry, active, pattern, training, exclude)
        if candidate.version == active.version:
            raise ConfigError(f"{candidate.ref} is the active version: nothing to gate")
        rc = replayer.replay(candidate, holdout)
        decision = judge(ra, rc, rules, expected, _calibration(candidate))
        decision.facts["exclusion"] = exclusion
        promoted = decision.passed and not args.dry_run
        if promoted:
            _promote(registry, active, candidate)
        doc = _document(name, active, candidate, decision, promoted, args, (split_ms, until_ms))
        if not args.dry_run:
            registry.record_gate(name, doc)
    if args.json:
        print(json.dumps(doc))
    else:
        _print(doc, decision)
    return 0 if decision.passed else REFUSED


def _promote(registry: ModelRegistry, active: ModelVersion, candidate: ModelVersion) -> None:
    """Point active at the candidate, only if active still points where it was judged
    (atomic): someone promoted or rolled back meanwhile, their choice stands."""
    try:
        registry.promote(active.name, candidate.version, expected=active.version)
    except AliasMovedError as exc:
        raise AliasMovedError(
            f"{exc}; {candidate.ref} was judged against {active.ref}: run seq2gmm retrain again"
        ) from exc


_RULE_FLAGS = (
    "min_windows",
    "rate_tolerance",
    "rate_slack_windows",
    "min_incident_share",
    "stale_factor",
    "stale_segments",
    "calibration_factor",
)


def _threshold(version: ModelVersion) -> tuple[Threshold, EnergyQuantiles | None] | None:
    """The version's threshold and training-energy quantiles, from its metadata."""
    meta = version.metadata
    if not meta.get("threshold"):
        return None
    q = meta.get("energy_quantiles")
    return Threshold.from_dict(meta["threshold"]), EnergyQuantiles.from_dict(q) if q else None


def _expected_rate(version: ModelVersion) -> float | None:
    found = _threshold(version)
    return None if found is None else expected_alarm_rate(*found)


def _calibration(version: ModelVersion) -> Calibration | None:
    found = _threshold(version)
    return None if found is None else Calibration.of(*found)


def _document(
    name: str,
    active: ModelVersion,
    candidate: ModelVersion,
    decision: GateDecision,
    promoted: bool,
    args: argparse.Namespace,
    judged: tuple[int, int],
) -> dict[str, Any]:
    verdict = "promoted" if promoted else ("passed (dry run)" if decision.passed else "refused")
    return {
        "model": name,
        "active": active.version,
        "candidate": candidate.version,
        "trained": args.candidate is None,
        "decision": "promote" if decision.passed else "refuse",
        "promoted": promoted,
        "dry_run": bool(args.dry_run),
        "judged_on": {"since": _iso(judged[0]), "until": _iso(judged[1])},
        "summary": f"candidate {candidate.version} vs active {active.version}: {verdict}"
        f" ({decision.reason})",
        **decision.to_dict(),
    }


def _print(doc: dict[str, Any], decision: GateDecision) -> None:
    span = doc["judged_on"]
    print(f"retrain {doc['model']} on {span['since']} .. {span['until']}: {doc['summary']}")
    for c in decision.checks:
        print(f"  [{'pass' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
