"""``bench/throughput.py``'s command line: its options and the full and quick presets."""

from __future__ import annotations

import argparse
from pathlib import Path

from throughput_clients import PACED_CLIENTS, REPO, paced_client

DESCRIPTION = (
    "The streaming worker's throughput against a bare kafka-python consumer, in one run on the"
    " embedded services (issue 18)"
)
TWOLEAD = 82
# epochs per window length, and how many synthetic training windows (a subset of
# synthetic_training_windows, which has ~475; TwoLeadECG trains on its 12 normal rows)
FULL = {"series": 100, "windows": 20, "chunk_factor": 5, "latency_seconds": 25.0,
        "rss_series": 100_000,
        "epochs": {82: 30, 288: 10, 1000: 10}, "train_windows": {288: 96, 1000: 48}}  # fmt: skip
QUICK = {"series": 10, "windows": 4, "chunk_factor": 1, "latency_seconds": 8.0,
         "rss_series": 5_000,
         "epochs": {82: 3, 288: 2, 1000: 2}, "train_windows": {288: 16, 1000: 16}}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=DESCRIPTION)
    ap.add_argument("--quick", action="store_true", help="a short smoke variant (small counts)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="SEQ2GMM_DEVICE")
    ap.add_argument("--threads", type=int, default=2, help="SEQ2GMM_TORCH_THREADS of the worker")
    ap.add_argument("--lengths", type=int, nargs="+", default=[82, 288, 1000])
    ap.add_argument("--series", type=int, help="series per data set (default 100; quick 10)")
    ap.add_argument("--windows", type=int, help="windows per series at L = 82 (default 20)")
    ap.add_argument(
        "--chunk-factor",
        type=int,
        help="one-window messages: this many times the windows of the one-sample form (default"
        " 5; quick 1), so the worker's rate is not dominated by its first batch",
    )
    ap.add_argument("--latency-seconds", type=float, help="paced run (default 25; 0 = skip)")
    ap.add_argument("--latency-rate", type=float, help="paced msg/s (default: half load)")
    ap.add_argument(
        "--latency-form",
        choices=["sample", "chunk"],
        default="sample",
        help="paced messages of one sample (default) or one window (82 samples): half load is"
        " then half of the one-window rate, and the paced producer costs little CPU",
    )
    ap.add_argument(
        "--paced-client",
        choices=["auto", *PACED_CLIENTS],
        default="auto",
        help="the latency run's producer: confluent (librdkafka; the bench extra: 8-11 %% of a"
        " core at 17,600-25,000 msg/s here) or kafka-python (56-69 %% at 18,700-23,700, taken"
        " from the worker's cores); auto = confluent when installed",
    )
    ap.add_argument("--rss-series", type=int, help="many-series run (default 100000; 0 = skip)")
    ap.add_argument("--rss-samples", type=int, default=4, help="samples per series there")
    ap.add_argument(
        "--stagger",
        action="store_true",
        help="one-sample messages (throughput and latency runs): series out of phase, so their"
        " windows complete spread over time instead of all at the same sample",
    )
    ap.add_argument(
        "--scoring",
        nargs="+",
        choices=["inline", "thread", "process"],
        help="run the worker once per value of SEQ2GMM_BATCHING__SCORING on each topic, in"
        " this order; repeat values to interleave (default: once, with the settings' default)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, help="write the JSON record here")
    args = ap.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("series", "windows", "chunk_factor", "latency_seconds", "rss_series"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    args.paced_client = paced_client(args.paced_client)
    lengths = sorted({TWOLEAD, *args.lengths})
    args.epochs = {n: preset["epochs"].get(n, 10) for n in lengths}
    args.train_windows = {n: preset["train_windows"].get(n, 48) for n in lengths if n != TWOLEAD}
    return args
