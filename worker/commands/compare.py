"""``seq2gmm models compare NAME A B``: how two versions of a model judged the same windows.

A and B are aliases (``active``, ``candidate``) or version numbers; aliases are resolved in the
registry now. The records of both versions are read from ``ts.anomalies`` and the shadow topic
over ``--since`` (``--until``), joined on (series id, window start), and summarised: windows both
flagged, flagged by one only, by neither, each version's anomaly rate over the joined windows,
and the mean absolute difference of their ``energy / threshold`` (the scale on which 1 is the
decision boundary). A worker scoring a shadow alias (``SEQ2GMM_WORKER__SHADOW_ALIAS``) produces
exactly such pairs; with ``SEQ2GMM_WORKER__ONLY_ANOMALOUS`` only flagged windows are published
and the counts of windows neither flagged are not known.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.commands.models import open_registry
from worker.dev.endpoints import resolve_kafka
from worker.ops.settings import Settings
from worker.registry.errors import ModelNotFoundError
from worker.registry.records import validate_alias, validate_name
from worker.registry.store import ModelRegistry
from worker.stream.history import parse_time_ms
from worker.stream.scored_history import PublishedWindow, read_scored


def register(msub: argparse._SubParsersAction[Any]) -> None:
    help = "agreement of two versions (aliases or numbers) on the windows both scored"
    p = msub.add_parser("compare", help=help, description=help)
    p.add_argument("name", metavar="NAME")
    p.add_argument("a", metavar="A", help="alias or version, e.g. active")
    p.add_argument("b", metavar="B", help="alias or version, e.g. candidate")
    p.add_argument("--since", default="1h", help="start: a duration ago (1h, 7d) or ISO time")
    p.add_argument("--until", default=None, help="end (default: now)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=_compare)


def resolve_version(registry: ModelRegistry, name: str, ref: str) -> int:
    """A version number as given, else the version the alias points at now."""
    if ref.isdigit():
        return int(ref)
    version = registry.resolve(name, validate_alias(ref))
    if version is None:
        raise ModelNotFoundError(
            f"{name} has no alias {ref}; see its aliases with `seq2gmm models list {name}`"
        )
    return version


def agreement(
    a: dict[tuple[str, float], PublishedWindow], b: dict[tuple[str, float], PublishedWindow]
) -> dict[str, Any]:
    """Counts and rates over the windows both versions scored (see the module docstring)."""
    joined = sorted(set(a) & set(b))
    pairs = [(a[k], b[k]) for k in joined]
    n = len(pairs)
    counts = {"both": 0, "a_only": 0, "b_only": 0, "neither": 0}
    for wa, wb in pairs:
        key = ("both" if wb.anomalous else "a_only") if wa.anomalous else None
        key = key or ("b_only" if wb.anomalous else "neither")
        counts[key] += 1
    diff = [abs(wa.energy / wa.threshold - wb.energy / wb.threshold) for wa, wb in pairs]
    return {
        "windows": n,
        **counts,
        "agreement": (counts["both"] + counts["neither"]) / n if n else None,
        "anomaly_rate_a": (counts["both"] + counts["a_only"]) / n if n else None,
        "anomaly_rate_b": (counts["both"] + counts["b_only"]) / n if n else None,
        "mean_abs_score_difference": sum(diff) / n if n else None,
        "only_in_a": len(set(a) - set(b)),
        "only_in_b": len(set(b) - set(a)),
    }


def _compare(args: argparse.Namespace, settings: Settings) -> int:
    name = validate_name(args.name)
    with open_registry(settings) as reg:
        va, vb = resolve_version(reg, name, args.a), resolve_version(reg, name, args.b)
    since_ms = parse_time_ms(args.since)
    until_ms = parse_time_ms(args.until) if args.until else None
    k = settings.kafka
    history = read_scored(
        resolve_kafka(settings), k, [k.anomalies_topic, k.shadow_topic], name, since_ms, until_ms
    )
    summary = agreement(history.by_version.get(va, {}), history.by_version.get(vb, {}))
    doc = {
        "model": name,
        "a": {"ref": args.a, "version": va},
        "b": {"ref": args.b, "version": vb},
        "since": args.since,
        "until": args.until,
        **summary,
        "unreadable_records": history.unreadable,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(_text(doc))
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _text(doc: dict[str, Any]) -> str:
    a, b = (
        f"{doc['a']['ref']} (v{doc['a']['version']})",
        f"{doc['b']['ref']} (v{doc['b']['version']})",
    )
    diff = doc["mean_abs_score_difference"]
    lines = [
        f"{doc['model']}: {a} vs {b}, windows scored by both since {doc['since']}:"
        f" {doc['windows']}",
        f"  both flagged        {doc['both']}",
        f"  only {a:<14} {doc['a_only']}",
        f"  only {b:<14} {doc['b_only']}",
        f"  neither             {doc['neither']}",
        f"  agreement           {_pct(doc['agreement'])}",
        f"  anomaly rate        {a}: {_pct(doc['anomaly_rate_a'])}, {b}:"
        f" {_pct(doc['anomaly_rate_b'])}",
        "  mean |energy/threshold| difference  " + ("-" if diff is None else f"{diff:.4g}"),
    ]
    if doc["only_in_a"] or doc["only_in_b"]:
        lines.append(
            f"  not joined: {doc['only_in_a']} windows of {a} only, {doc['only_in_b']} of {b} only"
        )
    if not doc["windows"]:
        lines.append(
            "  no window was scored by both: is a worker running with"
            f" SEQ2GMM_WORKER__SHADOW_ALIAS={doc['b']['ref']}?"
        )
    return "\n".join(lines)
