"""Accuracy and speed of Seq2GMM configurations on the UCR one-class protocol; prints ONE JSON.

    .venv/bin/python bench/accuracy_seq2gmm.py [--seeds 0 1 2] [--configs faithful default]
        [--datasets TwoLeadECG ECG5000 ECG200 GunPoint] [--data ../shared/data] [--threads 1]
        [--segmenter config|dp|pwlf] [--no-reference-segmentation]

Protocol: the Seq2GMM reference's one-class split (``model.evaluation.data.one_class_split``). For
TwoLeadECG the ``faithful`` configuration (and its variants) uses the reference's cached
segmentation file (rows, labels and cuts from the npz, windows from the TSVs) unless
``--no-reference-segmentation``. Every other run segments with the configured segmenter
(``--segmenter`` overrides it for all configurations, e.g. ``dp`` to spare pwlf's minutes).

Each dataset's windows are segmented once per configuration (timed as
``segmentation_seconds``, train and test together); then per seed: ``train_seconds`` (fit on
the pre-segmented windows), ``score_seconds`` (score the test windows), ROC AUC, PR AUC and
precision/recall/F1 at the detector's own threshold (inferred from held-out normal training
windows, never from the test set). ``end_to_end_seconds`` = segmentation + train + score.

Configurations: ``faithful``, ``default``, any JSON config path, one of the named ablations of
``default`` in :data:`ABLATIONS` (``--configs default abl-rd-cs ...``) or of ``faithful`` in
:data:`FAITHFUL_VARIANTS`.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from record import (
    data_missing,
    run_record,
    split_record,  # bench/record.py (scripts run from bench/)
)

from model.detectors.seq2gmm.config import (
    Seq2GMMConfig,
    default_config,
    faithful_config,
    load_config,
)
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.evaluation.data import ucr_one_class_split
from model.evaluation.metrics import pr_auc, precision_recall_f1, roc_auc
from model.segmentation import make_segmenter
from model.segmentation.base import Segmentation
from model.segmentation.reference import load_reference_split

REPO = Path(__file__).resolve().parent.parent
THRESHOLD_FPR = 0.01  # for configurations without their own threshold_fpr
DATASETS = ["TwoLeadECG", "ECG5000", "ECG200", "GunPoint"]
METRICS = [
    "roc_auc",
    "pr_auc",
    "precision",
    "recall",
    "f1",
    "train_seconds",
    "score_seconds",
    "end_to_end_seconds",
    "epochs_run",
]

DEFAULT_DESCRIPTORS = default_config().network.descriptors

#: Ablations: overrides applied to ``default`` (one deviation undone or changed at a time).
ABLATIONS: dict[str, dict[str, Any]] = {
    # z = [rd, h_c, cs] + descriptors instead of [h_c] + descriptors
    "abl-rd-cs": {"network": {"z_parts": ["rd", "code", "cs"]}},
    # no hand-made descriptors: z = [h_c] only
    "abl-no-descriptors": {"network": {"descriptors": []}},
    # z = [rd, h_c, cs] only (the reference's features) with the default's mixture and training
    "abl-reference-z": {"network": {"descriptors": [], "z_parts": ["rd", "code", "cs"]}},
    # no network code in z: descriptors only
    "abl-no-code": {"network": {"z_parts": []}},
    # each segment's z also gets its whole window resampled to 8 (or 16) points
    "abl-context": {"network": {"descriptors": [*DEFAULT_DESCRIPTORS, "context"]}},
    "abl-context-16": {
        "network": {"descriptors": [*DEFAULT_DESCRIPTORS, "context"], "context_points": 16}
    },
    # one pooled mixture for all positions instead of one per position
    "abl-pooled-mixture": {"network": {"per_position": False}},
    # diagonal instead of full covariance
    "abl-diag": {"network": {"covariance": "diag"}},
    # a fixed number of components per position instead of choosing 1/2/3/5 by held-out
    # likelihood
    "abl-fixed-1-component": {"train": {"component_candidates": None}},
    "abl-fixed-5-components": {
        "network": {"n_components": 5},
        "train": {"component_candidates": None},
    },
    # the reference's estimation network (MLP + softmax memberships, here with tanh) for 2
    # components per position instead of the mixture's own weights
    "abl-estimator-2-components": {
        "network": {"membership": "estimator", "n_components": 2},
        "train": {"component_candidates": None},
    },
    # raw energies, no per-position calibration
    "abl-no-calibration": {"scoring": {"energy_norm": "none"}},
    # window score = mean / length-weighted mean of the segment energies instead of the max
    "abl-mean": {"scoring": {"aggregate": "mean"}},
    "abl-length-normalised": {"scoring": {"aggregate": "length_normalised"}},
    # the reference's free-running decoder with [EOS, PAD, PAD] in the target
    "abl-free-running": {
        "network": {"decoder": "free_running", "eos_in_target": True, "extra_steps": 3}
    },
    # the GRU decoder reading [h_c, phase] instead of the phase MLP
    "abl-conditioned": {"network": {"decoder": "conditioned"}},
    # the reference's reconstruction loss (mean distance) instead of the MSE
    "abl-distance-loss": {"train": {"recon_loss": "distance"}},
    # no validation split: train on every window, keep the last epoch
    "abl-no-validation": {"train": {"validation_fraction": 0.0, "patience": None}},
    # longer training (300 epochs)
    "abl-300-epochs": {"train": {"epochs": 300, "patience": None}},
    # no energy term in the network loss (pure autoencoder + mixture)
    "abl-no-energy-loss": {"train": {"energy_weight": 0.0}},
    # Ledoit-Wolf shrinkage of the covariances
    "abl-shrinkage": {"network": {"cov_shrinkage": True}},
    # model selection by held-out energy (negative log-likelihood) instead of held-out loss
    "abl-select-energy": {"train": {"selection": "energy"}},
    # 4 segments instead of 3
    "abl-k4": {"segmentation": {"n_segments": 4}},
    # 1 segment (the whole window is the one segment: a window-level mixture) and 2 segments
    "abl-k1": {"segmentation": {"n_segments": 1}},
    "abl-k2": {"segmentation": {"n_segments": 2}},
    # size of the code: GRU with 32 or 8 units instead of 15, or bidirectional (2 x 15)
    "abl-hidden-32": {"network": {"hidden_size": 32}},
    "abl-hidden-8": {"network": {"hidden_size": 8}},
    "abl-bidirectional": {"network": {"bidirectional": True}},
    # segment shape resampled to 16 points instead of 32
    "abl-shape-16": {"network": {"shape_points": 16}},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) else v
    return out


#: Variants of ``faithful`` (names start with "faithful", so TwoLeadECG uses the reference cuts).
FAITHFUL_VARIANTS: dict[str, dict[str, Any]] = {
    # the reference's own epoch count
    "faithful-500-epochs": {"train": {"epochs": 500}},
    # + a relative covariance floor (1% of each feature's variance), 500 epochs
    "faithful-500-epochs-floor": {
        "train": {"epochs": 500},
        "network": {"cov_floor_relative": 0.01},
    },
    # 500 epochs with model selection on held-out normals: 25% of the training rows kept out,
    # the epoch with the lowest held-out energy (negative log-likelihood) kept
    "faithful-500-epochs-val-energy": {
        "train": {"epochs": 500, "validation_fraction": 0.25, "selection": "energy"},
    },
    "faithful-val-energy": {
        "train": {"validation_fraction": 0.25, "selection": "energy"},
    },
    "faithful-500-epochs-val-loss": {
        "train": {"epochs": 500, "validation_fraction": 0.25},
    },
    # + one mixture per segment position and per-position calibration
    "faithful-per-position": {
        "network": {"per_position": True},
        "scoring": {"energy_norm": "position"},
    },
    # + the default's features and mixture on the faithful networks and schedule
    "faithful-default-mixture": {
        "network": {
            "descriptors": ["shape", "length", "position", "level", "spread", "endpoints"],
            "shape_points": 32,
            "z_parts": ["code"],
            "per_position": True,
            "covariance": "full",
            "cov_floor_relative": 0.01,
            "energy_eps": 0.0,
        },
        "scoring": {"energy_norm": "position"},
    },
}


def resolve_config(spec: str) -> Seq2GMMConfig:
    if spec in ABLATIONS or spec in FAITHFUL_VARIANTS:
        base, over = (
            (default_config(), ABLATIONS[spec])
            if spec in ABLATIONS
            else (faithful_config(), FAITHFUL_VARIANTS[spec])
        )
        data = _merge(base.to_dict(), over)
        data["name"] = spec
        return Seq2GMMConfig.from_dict(data)
    return load_config(spec)


def _summary(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"per_seed": [float(v) for v in arr], "mean": float(arr.mean()), "std": float(arr.std())}


def _reference_twolead(ucr: Path) -> tuple[Any, ...]:
    """TwoLeadECG with the reference's cached segmentation: windows, cuts and labels."""
    ref = load_reference_split(ucr / "TwoLeadECG")
    return ref.train, ref.test, ref.test_labels, ref.train_segmentation, ref.test_segmentation


def run_one(
    cfg: Seq2GMMConfig,
    train: list[np.ndarray],
    test: list[np.ndarray],
    labels: np.ndarray,
    seg_train: Segmentation,
    seg_test: Segmentation,
    seg_seconds: float,
    seed: int,
) -> dict[str, float]:
    t0 = time.perf_counter()
    det = Seq2GMMDetector(cfg).fit(train, seed=seed, segmentation=seg_train)
    t1 = time.perf_counter()
    scores = det.score(test, segmentation=seg_test)
    t2 = time.perf_counter()
    if not det.has_threshold:  # faithful sets none: same rule as default, training-side scores
        det.infer_threshold(fpr=THRESHOLD_FPR)
    prf = precision_recall_f1(labels, scores, det.threshold.value)
    return {
        "roc_auc": roc_auc(labels, scores),
        "pr_auc": pr_auc(labels, scores),
        "precision": prf.precision,
        "recall": prf.recall,
        "f1": prf.f1,
        "train_seconds": t1 - t0,
        "score_seconds": t2 - t1,
        "end_to_end_seconds": seg_seconds + (t2 - t0),
        "epochs_run": float(det.training_summary["epochs_run"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--configs", nargs="+", default=["faithful", "default"])
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--segmenter", choices=["config", "dp", "pwlf"], default="config")
    ap.add_argument("--no-reference-segmentation", action="store_true")
    args = ap.parse_args(argv)

    ucr = args.data / "ucr"
    if data_missing(ucr):
        return 2
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    configs_used: dict[str, Any] = {}
    for name in args.datasets:
        split = ucr_one_class_split(ucr, name)
        per_cfg: dict[str, Any] = {}
        for spec in args.configs:
            cfg = resolve_config(spec)
            if args.segmenter != "config":
                cfg = cfg.replace(segmentation=replace(cfg.segmentation, method=args.segmenter))
            configs_used[spec] = cfg.to_dict()
            use_ref = (
                name == "TwoLeadECG"
                and cfg.name.startswith("faithful")
                and not args.no_reference_segmentation
            )
            if use_ref:
                train, test, labels, seg_train, seg_test = _reference_twolead(ucr)
                seg_seconds, seg_source = 0.0, "reference file"
            else:
                train, test, labels = split.train, split.test, split.test_labels
                ts = time.perf_counter()
                segmenter = make_segmenter(cfg.segmentation.method, cfg.segmentation.n_segments)
                seg_train = segmenter.segment(train)
                seg_test = segmenter.segment(test)
                seg_seconds, seg_source = time.perf_counter() - ts, cfg.segmentation.method
            runs = [
                run_one(cfg, train, test, labels, seg_train, seg_test, seg_seconds, s)
                for s in args.seeds
            ]
            per_cfg[spec] = {m: _summary([r[m] for r in runs]) for m in METRICS}
            per_cfg[spec]["segmentation"] = seg_source
            per_cfg[spec]["segmentation_seconds"] = seg_seconds
        results[name] = {
            **split_record(split),
            "configs": per_cfg,
        }
    out = {
        "benchmark": "accuracy_seq2gmm",
        "protocol": "Seq2GMM reference one-class split (model.evaluation.data.one_class_split)",
        "threshold": (
            "detector's own: infer_threshold(held-out normal scores, fpr=scoring.threshold_fpr);"
            f" configs without one: training-window scores, fpr={THRESHOLD_FPR}"
        ),
        "std": "population std over seeds (ddof=0)",
        "seeds": args.seeds,
        **run_record("accuracy_seq2gmm.py", started),
        "configs": configs_used,
        "results": results,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
