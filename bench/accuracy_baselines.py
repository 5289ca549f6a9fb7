"""Accuracy of detectors on the UCR one-class protocol (default: the baselines and knn, the
1-NN they are compared with); prints ONE JSON object.

    .venv/bin/python bench/accuracy_baselines.py [--seeds 0 1 2] [--datasets TwoLeadECG ...]
        [--detectors iforest ocsvm knn lstm-ae dagmm vae-lstm] [--data ../shared/data]
        [--threads 1]

Every unsupervised kind of ``model.kinds`` can be measured here with its default config
(Seq2GMM's configs and ablations have their own script, ``accuracy_seq2gmm.py``).

Protocol: the Seq2GMM reference's one-class split (model.evaluation.data.one_class_split): train
on the normal class of TRAIN, test on all normal TEST rows plus 10% as many other-class rows.
Per detector, dataset and seed: ROC AUC, PR AUC, precision/recall/F1 at a threshold inferred
from normal training-side scores only (fpr 0.05), fit and score wall-clock seconds."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from configs import parse_configs  # bench/configs.py (scripts run from bench/)
from record import (
    data_missing,
    run_record,
    split_record,  # bench/record.py (scripts run from bench/)
)

from model.evaluation.data import ucr_one_class_split
from model.evaluation.oneclass import evaluate
from model.kinds import KINDS, is_supervised, make_detector

REPO = Path(__file__).resolve().parent.parent
DATASETS = ["TwoLeadECG", "ECG5000", "ECG200", "GunPoint"]
DETECTORS = ["iforest", "ocsvm", "knn", "lstm-ae"]  # the evaluation baselines and 1-NN (knn)
METRICS = ["roc_auc", "pr_auc", "precision", "recall", "f1", "train_seconds", "score_seconds"]


def _summary(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"per_seed": [float(v) for v in arr], "mean": float(arr.mean()), "std": float(arr.std())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    choices = [k for k in KINDS if not is_supervised(k)]
    ap.add_argument("--detectors", nargs="+", default=DETECTORS, choices=choices)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--threshold-fpr", type=float, default=0.05)
    ap.add_argument(
        "--config", action="append", default=[], metavar="KIND=JSON|PATH",
        help="detector config (servable kinds) or constructor arguments (baselines)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    configs = parse_configs(args.config)

    ucr = args.data / "ucr"
    if data_missing(ucr):
        return 2
    torch.set_num_threads(args.threads)
    # import scikit-learn once up front so that its import time is not charged to a fit
    import sklearn.ensemble
    import sklearn.svm

    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in args.datasets:
        split = ucr_one_class_split(ucr, name)
        per_det: dict[str, Any] = {}
        for kind in args.detectors:
            runs = [
                evaluate(
                    make_detector(kind, config=configs.get(kind)),
                    split,
                    seed=s,
                    threshold_fpr=args.threshold_fpr,
                )
                for s in args.seeds
            ]
            per_det[kind] = {m: _summary([getattr(r, m) for r in runs]) for m in METRICS}
            per_det[kind]["threshold_reference"] = runs[0].threshold_reference
            per_det[kind]["config"] = configs.get(kind)
        results[name] = {
            **split_record(split),
            "detectors": per_det,
        }
    out = {
        "benchmark": "accuracy_baselines",
        "protocol": "Seq2GMM reference one-class split (model.evaluation.data.one_class_split)",
        "threshold": f"infer_threshold(normal reference scores, fpr={args.threshold_fpr})",
        "std": "population std over seeds (ddof=0)",
        "seeds": args.seeds,
        **run_record("accuracy_baselines.py", started, sklearn=sklearn.__version__),
        "results": results,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
