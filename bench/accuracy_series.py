"""Accuracy of detectors on long labelled series (NAB, KPI): the long-series protocol.

    .venv/bin/python bench/accuracy_series.py --detectors vae-lstm knn \\
        --datasets nab:machine_temp nab:nyc_taxi kpi:cpu4 --seeds 0 1 2 \\
        [--window 576] [--hop 1] [--train-hop 1] [--nab-test outside|paper] \\
        [--config vae-lstm='{"vae_epochs": 20}'] [--data ../shared/data] [--threads 1] \\
        [--out docs/bench/series.json]

Protocol (model.evaluation.series): NAB = the VAE-LSTM paper's five realKnownCause series,
trained on the paper's anomaly-free rows (normalised with its mean/std) and tested on every
other row (or the paper's test rows with ``--nab-test paper``). KPI = first 70% train (windows
with a labelled point dropped for one-class detectors), last 30% test. Sliding windows of
``--window``
samples; training windows at ``--train-hop``; test windows at ``--hop``. A point's score is
the score of the latest window ending at it; a test range's first windows use the rows
before it (``--no-history``: they stay inside it and its first window-1 points are
excluded). Per detector, dataset and seed: ROC AUC, PR AUC, best F1 and best point-adjusted F1
over every threshold and over the paper's 200-threshold grid, F1 at the detector's own
threshold (from normal training-side scores), the VAE-LSTM notebook's window-level metrics
for NAB, fit and score seconds.

With ``--out`` the JSON goes to that file and a markdown table (mean +- population std over
seeds) to stdout; without it the JSON goes to stdout and the table to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from configs import parse_configs  # bench/configs.py (scripts run from bench/)
from record import (  # bench/record.py (scripts run from bench/)
    run_record,
)

from model.evaluation.series import KPI_SERIES, NAB_SERIES, evaluate_series, load_split
from model.kinds import KINDS, make_detector

REPO = Path(__file__).resolve().parent.parent
DATASETS = [f"nab:{n}" for n in NAB_SERIES] + [f"kpi:{n}" for n in KPI_SERIES]
METRICS = [
    "roc_auc",
    "pr_auc",
    "best_f1",
    "best_pa_f1",
    "best_f1_200",
    "best_pa_f1_200",
    "precision",
    "recall",
    "f1",
    "pa_f1",
    "train_seconds",
    "score_seconds",
]
PAPER_METRICS = ["best_f1", "best_pa_f1"]
TABLE = [
    ("ROC AUC", "roc_auc"),
    ("PR AUC", "pr_auc"),
    ("best F1", "best_f1"),
    ("best PA-F1", "best_pa_f1"),
    ("best F1 (200 thr.)", "best_f1_200"),
    ("F1 @ own thr.", "f1"),
    ("paper F1", "paper.best_f1"),
    ("paper PA-F1", "paper.best_pa_f1"),
    ("fit s", "train_seconds"),
    ("score s", "score_seconds"),
]


def _summary(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"per_seed": [float(v) for v in arr], "mean": float(arr.mean()), "std": float(arr.std())}


def _cell(entry: dict[str, Any], key: str) -> str:
    node: Any = entry
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or "mean" not in node:
        return "—"
    digits = 1 if key.endswith("seconds") else 3
    return f"{node['mean']:.{digits}f} ± {node['std']:.{digits}f}"


def markdown_table(results: dict[str, Any]) -> str:
    head = "| detector | dataset | " + " | ".join(name for name, _ in TABLE) + " |"
    lines = [head, "|" + "---|" * (len(TABLE) + 2)]
    for dataset, data in results.items():
        for kind, entry in data["detectors"].items():
            cells = " | ".join(_cell(entry, key) for _, key in TABLE)
            lines.append(f"| {kind} | {dataset} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detectors", nargs="+", default=["vae-lstm"], choices=list(KINDS))
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--window", type=int, default=576)
    ap.add_argument("--hop", type=int, default=1, help="test window hop (default 1)")
    ap.add_argument("--train-hop", type=int, default=1, help="training window hop (default 1)")
    ap.add_argument("--nab-test", choices=["outside", "paper"], default="outside")
    ap.add_argument(
        "--no-history", action="store_true",
        help="test windows stay inside the test ranges (first window-1 points excluded)",
    )  # fmt: skip
    ap.add_argument("--threshold-fpr", type=float, default=0.01)
    ap.add_argument(
        "--config", action="append", default=[], metavar="KIND=JSON|PATH",
        help="detector config (servable kinds) or constructor arguments (baselines)",
    )  # fmt: skip
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = ap.parse_args(argv)

    if not args.data.is_dir():
        print(f"data not found at {args.data}; pass --data PATH/TO/shared/data", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    configs = parse_configs(args.config)
    if any(k in ("iforest", "ocsvm") for k in args.detectors):
        import sklearn.ensemble
        import sklearn.svm  # noqa: F401

    started = time.perf_counter()
    results: dict[str, Any] = {}
    for spec in args.datasets:
        split = load_split(
            args.data,
            spec,
            window=args.window,
            hop=args.hop,
            train_hop=args.train_hop,
            test=args.nab_test,
        )
        per_det: dict[str, Any] = {}
        for kind in args.detectors:
            runs = []
            for seed in args.seeds:
                det = make_detector(kind, config=configs.get(kind))
                report = evaluate_series(
                    det,
                    split,
                    seed=seed,
                    threshold_fpr=args.threshold_fpr,
                    history=not args.no_history,
                ).to_dict()
                report["training_summary"] = getattr(det, "training_summary", None) or None
                runs.append(report)
                print(
                    f"{spec} {kind} seed {seed}: ROC AUC {report['roc_auc']:.3f} best F1"
                    f" {report['best_f1']:.3f} fit {report['train_seconds']:.1f}s",
                    file=sys.stderr,
                )
            entry: dict[str, Any] = {m: _summary([r[m] for r in runs]) for m in METRICS}
            if runs[0]["paper"] is not None:
                entry["paper"] = {m: _summary([r["paper"][m] for r in runs]) for m in PAPER_METRICS}
            entry["threshold_source"] = runs[0]["threshold_source"]
            entry["config"] = configs.get(kind)
            entry["runs"] = runs
            per_det[kind] = entry
        results[spec] = {
            "train_range": list(split.train_range),
            "test_ranges": [list(r) for r in split.test_ranges],
            "n_train_windows": int(split.train.shape[0]),
            "n_normal_train_windows": int(split.normal_train.shape[0]),
            "n_test_points": int(sum(b - a for a, b in split.test_ranges)),
            "n_anomalous_test_points": int(split.test_labels.sum()),
            "detectors": per_det,
        }
    out = {
        "benchmark": "accuracy_series",
        "protocol": "model.evaluation.series: point score = latest window ending at the point",
        "history": not args.no_history,
        "window": args.window,
        "hop": args.hop,
        "train_hop": args.train_hop,
        "nab_test": args.nab_test,
        "threshold": f"detector's own, else infer_threshold(reference, fpr={args.threshold_fpr})",
        "std": "population std over seeds (ddof=0)",
        "seeds": args.seeds,
        **run_record("accuracy_series.py", started, load_average_at_end=list(os.getloadavg())),
        "results": results,
    }
    text = json.dumps(out, indent=2)
    table = markdown_table(results)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
        print(table)
    else:
        print(text)
        print(table, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
