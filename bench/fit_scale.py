"""Fit time as the training set grows: windows x samples -> seconds, per detector; prints ONE
JSON object.

    .venv/bin/python bench/fit_scale.py [--sizes 500x500 2000x500] [--detectors default knn]
        [--seed 0] [--threads 1] [--device cpu|cuda]

Windows are normal cycles of the synthetic quasi-periodic generator
(model.evaluation.synthetic; period = window length, jitter and phase shifts), cut one cycle
length apart. ``default`` is Seq2GMM's default config (its training budget bounds the epochs);
the record keeps the fit's own breakdown (segmentation, training, the rest = mixture choice,
cross-fitting and the whole-cycle evidence) and the epochs run.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
from record import run_record  # bench/record.py (scripts run from bench/)

from model.evaluation.data import sliding_windows
from model.evaluation.synthetic import SyntheticConfig, generate
from model.kinds import make_detector

DETECTORS = {"default": ("seq2gmm", "default"), "knn": ("knn", None)}


def normal_windows(n: int, length: int, seed: int) -> list[np.ndarray]:
    """``n`` windows of ``length`` samples from one normal synthetic series."""
    cfg = SyntheticConfig(n_series=1, n_cycles=n + 2, period=length, anomaly_rate=0.0, seed=seed)
    series = generate(cfg)[0]
    return list(sliding_windows(series.values, length, length).windows)[:n]


def measure(name: str, windows: list[np.ndarray], seed: int, device: str) -> dict[str, Any]:
    kind, config = DETECTORS[name]
    det: Any = make_detector(kind, config=config)
    if device != "cpu":
        det.to(device)
    t0 = time.perf_counter()
    det.fit(windows, seed=seed)
    seconds = time.perf_counter() - t0
    summary = det.training_summary
    keys = ("segmentation_seconds", "train_seconds", "epochs_run", "n_segments")
    out = {"fit_seconds": seconds, **{k: summary[k] for k in keys if k in summary}}
    if "segmentation_seconds" in out:
        out["other_seconds"] = seconds - out["segmentation_seconds"] - out["train_seconds"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["500x500", "2000x500"], help="NxL")
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for size in args.sizes:
        n, length = (int(v) for v in size.lower().split("x"))
        windows = normal_windows(n, length, args.seed)
        results[size] = {d: measure(d, windows, args.seed, args.device) for d in args.detectors}
    record = run_record("fit_scale.py", started, device=args.device)
    print(json.dumps({**record, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
