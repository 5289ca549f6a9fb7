"""Accuracy of the supervised window classifier on the KPI series; prints ONE JSON object.

    .venv/bin/python bench/accuracy_classifier.py [--seeds 0 1 2] [--archs bilstm lstm fcn]
        [--series cpu4 ...] [--length 50] [--data ../shared/data] [--threads 1]
        [--config '{"epochs": 20}']

Protocol (../shared/data/README.md, kpi/): per series, the first 70% of the points train and
the last 30% test. Training windows: every window of ``--length`` samples (hop 1) inside the
training part, labelled by the classifier's label rule (default "last": the window's last
point); the classifier holds out its own validation share of them (early stopping and the
F1-optimal threshold, never test data). Test windows: every window inside the test part (hop
1); the window ending at (rule "last") / just before (rule "next") a point scores that point,
so the first ``length - 1`` test points (``length`` for "next") have no score. Point-level
metrics over the scored test points: ROC AUC, PR AUC (average precision), the oracle best F1,
and precision / recall / F1 at the validation threshold; also the point-adjusted versions of
the two F1s (Xu et al. 2018, the usual KPI protocol: an anomalous segment counts as found
when any of its points is flagged).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from record import (  # bench/record.py (scripts run from bench/)
    data_missing,
    run_record,
)

from model.detectors.classifier import ClassifierConfig, WindowClassifierDetector, labelled_windows
from model.evaluation.data import load_series_csv
from model.evaluation.metrics import (
    best_f1,
    best_point_adjusted_f1,
    point_adjusted_f1,
    pr_auc,
    precision_recall_f1,
    roc_auc,
)

REPO = Path(__file__).resolve().parent.parent
SERIES = ["cpu4", "server_res_eth1out_curve_6", "server_res_eth1out_curve_61"]
ARCHS = ["bilstm", "lstm", "fcn"]
METRICS = [
    "roc_auc",
    "pr_auc",
    "best_f1",
    "f1",
    "precision",
    "recall",
    "best_pa_f1",
    "pa_f1",
    "validation_f1",
    "epochs_run",
    "best_epoch",
    "fit_seconds",
    "score_seconds",
]


def _summary(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"per_seed": [float(v) for v in arr], "mean": float(arr.mean()), "std": float(arr.std())}


def last_jump(values: np.ndarray, labels: np.ndarray, n_train: int, length: int) -> dict[str, Any]:
    """Untrained reference heuristic on the same test points (rule "last"): the last step's
    absolute jump over the window's median absolute step, |d_L| / (median |d| + eps)."""
    test = labelled_windows(values[n_train:], labels[n_train:], length, 1, "last")
    assert test.labels is not None
    q25, q75 = np.quantile(values[:n_train], [0.25, 0.75])
    d = np.abs(np.diff(test.windows, axis=1))  # (N, L - 1)
    scores = d[:, -1] / (np.median(d, axis=1) + 1e-3 * (q75 - q25))
    y = test.labels
    return {
        "roc_auc": roc_auc(y, scores),
        "pr_auc": pr_auc(y, scores),
        "best_f1": best_f1(y, scores).f1,
        "best_pa_f1": best_point_adjusted_f1(y, scores).f1,
    }


def run_one(
    values: np.ndarray,
    labels: np.ndarray,
    n_train: int,
    length: int,
    cfg: ClassifierConfig,
    seed: int,
) -> dict[str, Any]:
    """Fit on the training part, score the test part; point-level metrics."""
    train = labelled_windows(values[:n_train], labels[:n_train], length, 1, cfg.label_rule)
    test = labelled_windows(values[n_train:], labels[n_train:], length, 1, cfg.label_rule)
    assert train.labels is not None and test.labels is not None
    det = WindowClassifierDetector(cfg)
    t0 = time.perf_counter()
    det.fit(train.windows, labels=train.labels, seed=seed)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = det.score(test.windows)
    score_seconds = time.perf_counter() - t0
    y = test.labels  # == labels[n_train + test.targets]: one score per scored test point
    thr = det.threshold.value
    at = precision_recall_f1(y, scores, thr)
    s = det.training_summary
    return {
        "roc_auc": roc_auc(y, scores),
        "pr_auc": pr_auc(y, scores),
        "best_f1": best_f1(y, scores).f1,
        "f1": at.f1,
        "precision": at.precision,
        "recall": at.recall,
        "best_pa_f1": best_point_adjusted_f1(y, scores).f1,
        "pa_f1": point_adjusted_f1(y, scores, thr).f1,
        "validation_f1": s["validation_f1"],
        "threshold": det.threshold.to_dict(),
        "epochs_run": s["epochs_run"],
        "best_epoch": s["best_epoch"],
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
        "training": {
            k: s[k]
            for k in (
                "n_windows",
                "n_train_windows",
                "n_validation_windows",
                "n_purged_windows",
                "n_train_anomalous",
                "n_validation_anomalous",
                "negatives_per_epoch",
                "pos_weight",
                "validation_split",
            )
        },
        "n_test_points": int(y.size),
        "n_test_anomalous": int(y.sum()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--series", nargs="+", default=SERIES)
    ap.add_argument("--archs", nargs="+", default=ARCHS, choices=ARCHS)
    ap.add_argument("--length", type=int, default=50)
    ap.add_argument("--train-fraction", type=float, default=0.7)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--config", default="{}", help="JSON overrides of ClassifierConfig fields")
    args = ap.parse_args(argv)

    kpi = args.data / "kpi"
    if data_missing(kpi):
        return 2
    torch.set_num_threads(args.threads)
    overrides = json.loads(args.config)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in args.series:
        series = load_series_csv(kpi / f"{name}.csv")
        assert series.labels is not None
        n_train = int(args.train_fraction * len(series))
        per_arch: dict[str, Any] = {}
        for arch in args.archs:
            cfg = ClassifierConfig.from_dict({"architecture": arch, **overrides})
            runs = []
            for seed in args.seeds:
                runs.append(run_one(series.values, series.labels, n_train, args.length, cfg, seed))
                print(
                    f"{name} {arch} seed {seed}: "
                    + " ".join(f"{m}={runs[-1][m]:.3f}" for m in METRICS),
                    file=sys.stderr,
                    flush=True,
                )
            per_arch[arch] = {m: _summary([r[m] for r in runs]) for m in METRICS}
            per_arch[arch]["config"] = cfg.to_dict()
            per_arch[arch]["runs"] = runs
        results[name] = {
            "n_points": len(series),
            "n_train_points": n_train,
            "n_train_anomalous_points": int(series.labels[:n_train].sum()),
            "n_test_anomalous_points": int(series.labels[n_train:].sum()),
            "architectures": per_arch,
            "heuristic_last_jump": last_jump(series.values, series.labels, n_train, args.length),
        }
    out = {
        "benchmark": "accuracy_classifier",
        "protocol": (
            f"KPI series, first {args.train_fraction:.0%} train / rest test, windows of"
            f" {args.length} with hop 1, point-level metrics via the window scoring each point"
        ),
        "threshold": "F1-optimal on the classifier's validation share of the training windows",
        "std": "population std over seeds (ddof=0)",
        "seeds": args.seeds,
        "config_overrides": overrides,
        **run_record("accuracy_classifier.py", started),
        "results": results,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
