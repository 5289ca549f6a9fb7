"""Benchmark: the batched DP segmenter against pwlf.fit (quality and windows per second).

Usage (from the repository root)::

    .venv/bin/python bench/segmentation.py [--quick] [--device cpu|cuda] [--threads N]

Prints exactly one JSON object on stdout (progress goes to stderr):

* K = 3 on TwoLeadECG (82 samples) and ECG5000 (140 samples) TEST rows: our windows/s over all
  rows, pwlf.fit's windows/s on a seeded sample of rows, the speedup, and the ratio of SSRs
  (ours / pwlf, both continuous fits, pwlf's scored by ``continuous_ssr`` of its breakpoints).
* K = 5..8 on 300-sample windows (ECG5000 TEST rows concatenated, cut every 300 samples).

pwlf runs one window at a time on one core (it is pure numpy/scipy); ours runs with one torch
thread by default (``--threads``; shown in ``machine``): with two threads on a 2-core machine that
other processes also use, torch's intra-op threads wait on each other and throughput collapses
(measured 2x to 12x slower than one thread), and these small tensors gain little from a second.
Data: ../shared/data relative to the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from record import cpu_model  # bench/record.py (scripts run from bench/)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from model.segmentation.dp import fit_windows  # noqa: E402
from model.segmentation.pwlf import PwlfSegmenter, continuous_ssr  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_rows(data: Path, name: str) -> np.ndarray:
    path = data / "ucr" / name / f"{name}_TEST.tsv"
    if not path.is_file():
        sys.exit(f"dataset not found: {path} (check out ../shared beside the repository)")
    return np.loadtxt(path)[:, 1:]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(
    windows: list[np.ndarray], k: int, device: torch.device, repeats: int
) -> tuple[list[float], list[np.ndarray], np.ndarray]:
    """Seconds per full pass (after one warm-up on a few windows), knots and SSR of the last."""
    fit_windows(windows[:8], k, device=device)
    times: list[float] = []
    knots: list[np.ndarray] = []
    ssr = np.zeros(0)
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        knots, ssr = fit_windows(windows, k, device=device)
        sync(device)
        times.append(time.perf_counter() - start)
    return times, knots, ssr


def compare(
    label: str,
    windows: list[np.ndarray],
    k: int,
    n_pwlf: int,
    device: torch.device,
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    log(f"{label} K={k}: ours on {len(windows)} windows ...")
    times, knots, ssr = time_ours(windows, k, device, repeats)
    pick = np.sort(np.random.default_rng(seed).choice(len(windows), n_pwlf, replace=False))
    log(f"{label} K={k}: pwlf.fit on {n_pwlf} windows ...")
    ref = PwlfSegmenter(k, seed=seed)
    start = time.perf_counter()
    pwlf_knots = [ref.knots(windows[i]) for i in pick]
    pwlf_s = time.perf_counter() - start
    ratio = np.array(
        [ssr[i] / continuous_ssr(windows[i], kn) for i, kn in zip(pick, pwlf_knots, strict=True)]
    )
    ours_wps = len(windows) / statistics.median(times)
    pwlf_wps = n_pwlf / pwlf_s
    return {
        "dataset": label,
        "length": int(windows[0].shape[0]),
        "n_segments": k,
        "ours_windows": len(windows),
        "ours_seconds": [round(t, 4) for t in times],
        "ours_windows_per_s": round(ours_wps, 1),
        "pwlf_windows": n_pwlf,
        "pwlf_seconds": round(pwlf_s, 2),
        "pwlf_windows_per_s": round(pwlf_wps, 3),
        "speedup": round(ours_wps / pwlf_wps, 1),
        "ssr_ratio": {
            "median": float(np.median(ratio)),
            "p99": float(np.quantile(ratio, 0.99)),
            "max": float(ratio.max()),
            "min": float(ratio.min()),
            "n_worse_than_pwlf": int((ratio > 1 + 1e-9).sum()),
        },
        "ours_knots_example": [round(float(t), 3) for t in knots[int(pick[0])]],
        "pwlf_knots_example": [round(float(t), 3) for t in pwlf_knots[0]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small samples, about a minute")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (ours only; pwlf is CPU)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1; 0 = torch's default)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_start = os.getloadavg()
    n_k3, n_long_pwlf, n_long_ours = (20, 1, 40) if args.quick else (200, 4, 200)
    repeats = 1 if args.quick else 3

    two = load_rows(args.data, "TwoLeadECG")
    ecg = load_rows(args.data, "ECG5000")
    results: dict[str, Any] = {"k3": [], "long": []}
    for label, rows in (("TwoLeadECG", two), ("ECG5000", ecg)):
        windows = list(rows[:200] if args.quick else rows)
        results["k3"].append(compare(label, windows, 3, n_k3, device, repeats, args.seed))

    flat = ecg.reshape(-1)
    long_rows = flat[: flat.size // 300 * 300].reshape(-1, 300)
    pick = np.sort(
        np.random.default_rng(args.seed).choice(len(long_rows), n_long_ours, replace=False)
    )
    long_windows = list(long_rows[pick])
    for k in range(5, 9):
        results["long"].append(
            compare("ECG5000-concat-300", long_windows, k, n_long_pwlf, device, 1, args.seed)
        )

    k3 = results["k3"]
    results["acceptance"] = {
        "median_ssr_ratio_le_1": all(r["ssr_ratio"]["median"] <= 1.0 for r in k3),
        "p99_ssr_ratio_le_1.02": all(r["ssr_ratio"]["p99"] <= 1.02 for r in k3),
        "speedup_ge_100": all(r["speedup"] >= 100 for r in k3),
    }
    results["machine"] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "pwlf": version("pwlf"),
        "scipy": version("scipy"),
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
    }
    results["config"] = {"quick": args.quick, "seed": args.seed, "repeats": repeats}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
