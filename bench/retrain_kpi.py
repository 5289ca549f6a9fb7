"""``seq2gmm retrain``'s gate on real network series: the KPI sets of ../shared/data/kpi.

For each series (61 days of 5-minute samples, produced one sample a message to a private
embedded broker, stamped with the samples' times): an active version is trained from the topic
on the first ``--active-days`` (``train --from-topic``, cutter ``fixed:288:HOP``: a day per
window), then the gate judges, on the last ``--holdout-days``:

* ``low``: the active's weights with a threshold flagging ~30 % of the holdout (a worse model);
* ``high``: the active's weights with a threshold no window reaches (a model that sees nothing);
* ``retrain``: the real thing, a candidate trained on everything before the holdout with the
  active's settings (``seq2gmm retrain NAME --since ... --holdout ...``).

Besides the three series as they are, ``eth1out_6_then_61`` is one whose traffic changed for
good on day 30 (the first series, then the second's days 30-61 stamped as its continuation).

The planted ones are judged with ``--dry-run`` (the active stays). Beside each decision: the
flag rate, precision / recall / F1 of the flags and the ROC AUC of the energies against the
labelled anomalies of the holdout (a window is anomalous when it holds a labelled point), from
``seq2gmm backtest --csv`` of the same samples — what the gate does not see.

    .venv/bin/python bench/retrain_kpi.py --out runs/retrain_kpi.json     # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaProducer
from sklearn.metrics import roc_auc_score
from throughput_clients import embedded_services

from model.checkpoint import load_checkpoint, save_checkpoint
from worker.cli import main as cli
from worker.ops.settings import KafkaSettings
from worker.registry.connection import connect
from worker.registry.store import ModelRegistry
from worker.stream.topics import ensure_topics

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kpi"
SERIES = ("server_res_eth1out_curve_6", "server_res_eth1out_curve_61", "cpu4")
SWAPPED = "eth1out_6_then_61"
DAY_S = 86_400
RAW = "ts.raw"
PREFIX = "bench-retrain"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _run(argv: list[str]) -> tuple[int, dict[str, Any]]:
    """The CLI in-process: (exit status, its --json document)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli(argv)
    text = out.getvalue().strip()
    return rc, (json.loads(text.splitlines()[-1]) if text else {})


def _produce(bootstrap: str, sid: str, rows: np.ndarray) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=262_144)
    for t, v, _ in rows:
        msg = {"series_id": sid, "timestamp": int(t), "value": float(v)}
        producer.send(RAW, json.dumps(msg).encode(), key=sid.encode(), timestamp_ms=int(t) * 1000)
    producer.flush()
    producer.close()


def _quality(doc: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """Rate, P/R/F1 of the flags and ROC AUC of the energies on the labelled holdout windows,
    and the energies."""
    windows = doc["all_windows"]
    marked = rows[rows[:, 2] > 0, 0]
    labels = np.array([np.any((marked >= w["start"]) & (marked <= w["end"])) for w in windows])
    energies = np.array([w["energy"] for w in windows])
    auc = float(roc_auc_score(labels, energies)) if 0 < labels.sum() < len(labels) else None
    m = doc.get("metrics", {})
    return {
        "windows": doc["windows"],
        "flagged": doc["flagged"],
        "rate": doc["rate"],
        "anomalous_windows": int(labels.sum()),
        "precision": m.get("precision"),
        "recall": m.get("recall"),
        "f1": m.get("f1"),
        "auc": auc,
        "energies": energies.tolist(),
    }


def _backtest(ref: str, csv: Path, sid: str, rows: np.ndarray) -> dict[str, Any]:
    argv = ["backtest", "--model", ref, "--csv", str(csv), "--series-id", sid]
    rc, doc = _run([*argv, "--json", "--list-windows"])
    assert rc == 0, f"backtest {ref} exited {rc}"
    return _quality(doc, rows)


def _gate(doc: dict[str, Any], rc: int) -> dict[str, Any]:
    return {
        "exit": rc,
        "decision": doc.get("decision"),
        "active_stale": doc.get("active_stale"),
        "active_rate": doc.get("active_rate"),
        "flagged": doc.get("flagged"),
        "reason": doc.get("reason"),
        "exclusion": doc.get("exclusion"),
        "checks": {c["name"]: c["passed"] for c in doc.get("checks", [])},
    }


def _planted(tmp: Path, name: str, energies: np.ndarray) -> dict[str, int]:
    """Two versions with the active's weights: a threshold at the holdout energies' 70th
    percentile (``low``) and one ten times their maximum (``high``)."""
    versions = {}
    with ModelRegistry(connect(os.environ["SEQ2GMM_REDIS__URL"]), PREFIX) as registry:
        for label, value in (("low", np.quantile(energies, 0.7)), ("high", 10 * energies.max())):
            detector = load_checkpoint(tmp / "active")
            detector.threshold = dataclasses.replace(detector.threshold, value=float(value))
            path = save_checkpoint(detector, tmp / label)
            versions[label] = registry.publish_dir(path, name)
    return versions


def _load(stem: str) -> np.ndarray:
    """(N, 3) timestamp, value, label of one KPI series, or SWAPPED (see :func:`_swapped`)."""
    if stem == SWAPPED:
        return _swapped()
    return np.loadtxt(DATA / f"{stem}.csv", delimiter=",", skiprows=1)


def _swapped() -> np.ndarray:
    """A series whose traffic changed for good: the first 30 days of eth1out_curve_6, then
    days 30-61 of eth1out_curve_61 stamped as their continuation (a link re-provisioned, a
    device replaced: the drift the gate is for)."""
    a, b = (_load(s) for s in SERIES[:2])
    cut = 30 * DAY_S // 300
    rows = np.concatenate([a[:cut], b[cut:]])
    rows[:, 0] = a[0, 0] + 300 * np.arange(len(rows))
    return rows


def _one_series(stem: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rows = _load(stem)
    sid, name = f"kpi/{stem}", stem.replace("_", "-")[:64]
    _produce(os.environ["SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS"], sid, rows)
    t0, t_end = rows[0, 0], rows[-1, 0] + 300
    split = t_end - args.holdout_days * DAY_S
    holdout = rows[rows[:, 0] >= split]
    csv = tmp / f"{stem}-holdout.csv"
    lines = "".join(f"{t:.0f},{float(v)!r},{int(y)}\n" for t, v, y in holdout)
    csv.write_text("timestamp,value,label\n" + lines)
    started = time.perf_counter()
    train = ["train", "--from-topic", RAW, "--series", sid, "--since", _iso(t0)]
    train += ["--until", _iso(t0 + args.active_days * DAY_S), "--cycles", f"fixed:288:{args.hop}"]
    train += ["--epochs", str(args.epochs), "--seed", "0", "--out", str(tmp / "active")]
    rc, trained = _run([*train, "--publish", name, "--promote", "--json"])
    assert rc == 0 and trained["version"] == 1, trained
    active = _backtest(f"{name}:1", csv, sid, holdout)
    planted = _planted(tmp, name, np.array(active.pop("energies")))
    span = ["--since", _iso(t0), "--until", _iso(t_end), "--holdout", f"{args.holdout_days}d"]
    result: dict[str, Any] = {"series": sid, "active": active, "cases": {}}
    for label, version in planted.items():
        rc, doc = _run(["retrain", name, *span, "--candidate", str(version), "--dry-run", "--json"])
        quality = _backtest(f"{name}:{version}", csv, sid, holdout)
        quality.pop("energies")
        result["cases"][label] = {"gate": _gate(doc, rc), "candidate": quality}
    rc, doc = _run(["retrain", name, *span, "--json"])
    quality = _backtest(f"{name}:{doc['candidate']}", csv, sid, holdout)
    quality.pop("energies")
    result["cases"]["retrain"] = {"gate": _gate(doc, rc), "candidate": quality}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _fmt(q: dict[str, Any]) -> str:
    def n(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    return f"{q['flagged']}/{q['windows']} flagged, F1 {n(q['f1'])}, AUC {n(q['auc'])}"


def _report(results: list[dict[str, Any]]) -> None:
    print("| series | active on the holdout | case | candidate on the holdout | gate |")
    print("|---|---|---|---|---|")
    for r in results:
        for label, case in r["cases"].items():
            g = case["gate"]
            failed = ", ".join(k for k, ok in g["checks"].items() if not ok)
            verdict = f"{g['decision']} (exit {g['exit']}" + (
                f"; failed {failed})" if failed else ")"
            )
            cells = [r["series"], _fmt(r["active"]), label, _fmt(case["candidate"]), verdict]
            print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    choices = [*SERIES, SWAPPED]
    p.add_argument("--series", nargs="+", default=choices, choices=choices)
    p.add_argument("--active-days", type=int, default=21)
    p.add_argument("--holdout-days", type=int, default=14)
    p.add_argument("--hop", type=int, default=48, help="samples between window starts (48: 4 h)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if not DATA.is_dir():
        print(f"{DATA} not found: the KPI series of ../shared/data", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp, embedded_services(Path(tmp) / "svc") as (k, r):
        os.environ.update({
            "SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS": k, "SEQ2GMM_KAFKA__RAW_TOPIC": RAW,
            "SEQ2GMM_REDIS__URL": r, "SEQ2GMM_REDIS__KEY_PREFIX": PREFIX, "SEQ2GMM_DEVICE": "cpu",
        })  # fmt: skip
        ensure_topics(k, KafkaSettings(num_partitions=1), [RAW])
        for stem in args.series:
            work = Path(tmp) / stem
            work.mkdir()
            results.append(_one_series(stem, args, work))
            print(json.dumps(results[-1]), file=sys.stderr)
    _report(results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}
        args.out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
