"""Detectors on MIT-BIH record 100 cut into cycles by each cutter; prints ONE JSON object (and
a markdown table on stderr).

    .venv/bin/python bench/cycles_mitdb.py [--cutters fixed:287 oracle fiducial]
        [--detectors seq2gmm knn] [--seeds 0 1 2] [--resample-to N] [--record 100]
        [--config KIND=JSON] [--data ../shared/data] [--threads 1] [--out FILE.json]

Protocol (model.evaluation.mitdb.record_split, issue 16): lead MLII cut once by the cutter (as
a stream would), trained on the normal cycles ending in the first 35 % of the record, tested
on every cycle starting after it. A cycle is anomalous when an abnormal annotated beat (A, V)
falls inside; each test beat takes the score of the cycle holding it (beat level, the
headline). ``iforest`` and ``ocsvm`` get every cycle resampled to one length
(``--resample-to``, default the median training cycle); ``knn`` resamples the cycles itself
(to the median training cycle, at most its ``max_points``, 256 by default).

Cutters: ``fixed:LEN[:HOP]``, ``oracle[:FRACTION]`` (one cycle per annotated beat, the
reference cut) and every spec of ``model.cycles.make_cutter`` (e.g. ``fiducial``, fitted on
the training part). Per cutter: cycles, flagged
cycles, the fraction of beats in exactly one cycle, cutting seconds; per detector and seed:
beat- and cycle-level ROC/PR AUC, fit and score seconds."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from configs import parse_configs  # bench/configs.py (scripts run from bench/)
from record import (  # bench/record.py (scripts run from bench/)
    data_missing,
    run_record,
    seed_summary,
)

from model.evaluation.cycles import (
    EQUAL_LENGTH_KINDS,
    evaluate_cycles,
    resampled,
)
from model.evaluation.mitdb import record_split
from model.kinds import KINDS, is_supervised, make_detector

REPO = Path(__file__).resolve().parent.parent
METRICS = [
    "event_roc_auc",
    "event_pr_auc",
    "roc_auc",
    "pr_auc",
    "fit_seconds",
    "score_seconds",
]
SPLIT_INFO = ["n_cycles", "flagged_cycles", "event_coverage", "cut_seconds", "cycle_length"]
TABLE = [
    ("beat ROC AUC", "event_roc_auc"),
    ("beat PR AUC", "event_pr_auc"),
    ("cycle ROC AUC", "roc_auc"),
    ("fit s", "fit_seconds"),
    ("score s", "score_seconds"),
]


def markdown_table(results: dict[str, Any]) -> str:
    head = "| cutter | cycles | flagged | beats in 1 cycle | detector | "
    lines = [head + " | ".join(n for n, _ in TABLE) + " |", "|" + "---|" * (len(TABLE) + 5)]
    for spec, data in results.items():
        cov = f"{100 * data['event_coverage']:.2f} %"
        for kind, entry in data["detectors"].items():
            cells = []
            for _, key in TABLE:
                digits = 1 if key.endswith("seconds") else 3
                cells.append(f"{entry[key]['mean']:.{digits}f} ± {entry[key]['std']:.{digits}f}")
            lines.append(
                f"| {spec} | {data['n_cycles']} | {data['flagged_cycles']} | {cov} | {kind} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def _cutter_results(args: argparse.Namespace, spec: str, configs: dict[str, Any]) -> dict[str, Any]:
    split = record_split(args.data / "mitdb", spec, record=args.record)
    out: dict[str, Any] = {k: split.info[k] for k in SPLIT_INFO}
    out["n_train"], out["n_test"] = len(split.train), len(split.test)
    out["n_anomalous_beats"] = int(split.test_event_labels.sum())
    per_det: dict[str, Any] = {}
    for kind in args.detectors:
        data = resampled(split, args.resample_to) if kind in EQUAL_LENGTH_KINDS else split
        runs = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            det = make_detector(kind, config=configs.get(kind))
            runs.append(evaluate_cycles(det, data, seed=seed))
            print(f"{spec} {kind} seed {seed}: {runs[-1]}", file=sys.stderr, flush=True)
        per_det[kind] = {m: seed_summary([r[m] for r in runs]) for m in METRICS}
        per_det[kind]["events_outside"] = runs[0]["events_outside"]
        per_det[kind]["resample_to"] = data.info.get("resample_to")
        per_det[kind]["config"] = configs.get(kind)
    out["detectors"] = per_det
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cutters", nargs="+", default=["fixed:287", "oracle", "fiducial"])
    choices = [k for k in KINDS if not is_supervised(k)]
    ap.add_argument("--detectors", nargs="+", default=["seq2gmm", "knn"], choices=choices)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--config", action="append", default=[], metavar="KIND=JSON|PATH",
        help="detector config (servable kinds) or constructor arguments (baselines)",
    )  # fmt: skip
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--record", default="100", help="the MIT-BIH record in DATA/mitdb")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument(
        "--resample-to", type=int, default=None, metavar="N",
        help="iforest, ocsvm: cycle length after resampling (default: median training cycle)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    if data_missing(args.data / "mitdb"):
        return 2
    torch.set_num_threads(args.threads)
    configs = parse_configs(args.config)

    started = time.perf_counter()
    results = {spec: _cutter_results(args, spec, configs) for spec in args.cutters}
    out = {
        "benchmark": "cycles_mitdb",
        "protocol": "model.evaluation.mitdb.record_split: lead MLII, train on the normal cycles"
        " of the first 35 %, test on the rest; beat level = each beat scored by its cycle",
        "std": "population std over seeds (ddof=0)",
        "seeds": args.seeds,
        **run_record("cycles_mitdb.py", started),
        "results": results,
    }
    text = json.dumps(out, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    print(markdown_table(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
