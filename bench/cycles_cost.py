"""What cutting cycles costs the worker: the streaming core fed MIT-BIH record 100 as
single-sample records, per sample, with the ``fixed`` cutter and with the ``fiducial`` one.

Three runs over the same records (decode -> windowing -> microbatch -> score -> records):

- ``fixed`` and ``fiducial`` with a model that scores for free (``worker.stream.testing
  .FakeModel``): their difference is the cutting cost alone;
- ``fiducial`` with a real ``seq2gmm`` model (default config, a few epochs on the first
  minute's beats): the worker's whole per-sample time, the denominator of the issue's
  "cutting costs under 10 % of the worker's per-sample time".

Prints one JSON object. Run from bench/: ``../.venv/bin/python cycles_cost.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from record import data_missing, run_record  # noqa: E402  # bench/record.py

from model.cycles import Cutter, FixedCutter, cut, cycle_windows, fit_fiducial  # noqa: E402
from model.detectors.seq2gmm.config import default_config  # noqa: E402
from model.detectors.seq2gmm.detector import Seq2GMMDetector  # noqa: E402
from model.evaluation.mitdb import read_record  # noqa: E402
from worker.ops.log import configure_logging  # noqa: E402
from worker.registry.loader import DetectorModel  # noqa: E402
from worker.stream.core import CoreOptions, InRecord, StreamCore  # noqa: E402
from worker.stream.served import ServedModel  # noqa: E402
from worker.stream.testing import FakeModel  # noqa: E402

FS = 360


def records(t: np.ndarray, x: np.ndarray) -> list[InRecord]:
    """Single-sample ``ts.raw`` records, as a sensor sends them."""
    return [
        InRecord("ts.raw", 0, i, b"ecg", json.dumps({"series_id": "ecg", "timestamp": ti,
                                                     "value": xi}).encode())
        for i, (ti, xi) in enumerate(zip(t.tolist(), x.tolist(), strict=True))
    ]  # fmt: skip


def per_sample_us(model: ServedModel, recs: list[InRecord], batch: int) -> tuple[float, int]:
    """Microseconds per sample of the core over ``recs`` (fed ``batch`` records per poll, as
    the Kafka loop does), and the windows it scored."""
    core = StreamCore(model, CoreOptions(max_windows=64, linger_s=0.0))
    scored = 0
    start = time.perf_counter()
    for i in range(0, len(recs), batch):
        core.ingest(recs[i : i + batch])
        while core.ready():
            scored += len(core.score_batch())
    return 1e6 * (time.perf_counter() - start) / len(recs), scored


def seq2gmm_model(cutter: Cutter, x: np.ndarray, t: np.ndarray, epochs: int) -> DetectorModel:
    cfg = default_config()
    det = Seq2GMMDetector(cfg.replace(train=replace(cfg.train, epochs=epochs)))
    det.fit(cycle_windows(x, cut(cutter, x, t)), seed=0)
    det.cycles = cutter.to_config()
    metadata = {"n_features": 1, "cycles": det.cycles}
    return DetectorModel("ecg", 1, det, metadata, torch.device("cpu"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--seconds", type=float, default=300.0, help="record seconds streamed")
    ap.add_argument("--batch", type=int, default=500, help="records per poll")
    ap.add_argument("--epochs", type=int, default=5, help="seq2gmm training epochs")
    args = ap.parse_args(argv)
    if data_missing(args.data / "mitdb"):
        return 2
    torch.set_num_threads(1)
    configure_logging("json", "INFO")  # as the worker runs: per-batch debug lines off
    started = time.perf_counter()
    rec = read_record(args.data / "mitdb", "100")
    x, t = rec.lead("MLII"), rec.timestamps
    train, test = slice(0, 60 * FS), slice(60 * FS, int((60 + args.seconds) * FS))
    fiducial = fit_fiducial([x[train]])
    fixed = FixedCutter(287, 287)
    recs = records(t[test], x[test])
    results: dict[str, Any] = {}
    for name, model in [
        ("fixed_free_model", FakeModel(cutter=fixed)),
        ("fiducial_free_model", FakeModel(cutter=fiducial)),
        ("fiducial_seq2gmm", seq2gmm_model(fiducial, x[train], t[train], args.epochs)),
    ]:
        us, scored = per_sample_us(model, recs, args.batch)
        results[name] = {"us_per_sample": us, "windows": scored}
    cutting = (
        results["fiducial_free_model"]["us_per_sample"]
        - results["fixed_free_model"]["us_per_sample"]
    )
    out = {
        "benchmark": "cycles_cost",
        "samples": len(recs),
        "results": results,
        "fiducial_cutting_us_per_sample": cutting,
        "cutting_share_of_worker": cutting / results["fiducial_seq2gmm"]["us_per_sample"],
        **run_record("cycles_cost.py", started),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
