"""The accuracy suite: detectors on every UCR set in both one-class protocols, one table.

    .venv/bin/python bench/suite.py [--detectors NAME=KIND[:CONFIG] ...] [--datasets ...]
        [--seeds 0 1 2] [--jobs 2] [--out runs/suite] [--data ../shared/data]
        [--threshold-fpr 0.05] [--retry-errors] [--summarise]

One fit per (detector, dataset, seed) on the normal TRAIN rows, every TEST row scored once: the
"full" protocol's metrics come from all those scores, the "reference" protocol's (Seq2GMM's:
normal TEST rows plus 10 % as many others) from its subset of them. The threshold is inferred
from the detector's normal reference scores only. Each finished job is one line of
DIR/results.jsonl (a rerun skips the jobs already there, so a killed run continues); a job that
raises records the error and the run goes on. DIR/table.md and DIR/summary.json are rebuilt at
the end (``--summarise``: only that). A CONFIG is passed to ``make_detector`` as is (a JSON
object ``{...}`` is parsed first, for the baselines' constructor arguments).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
from record import data_missing, run_record  # bench/record.py (scripts run from bench/)
from suite_table import build_table

from model.errors import DataError
from model.evaluation.data import OneClassSplit, ucr_one_class_split
from model.kinds import KINDS, is_supervised

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DETECTORS = [
    "default=seq2gmm:default",
    "faithful=seq2gmm:faithful",
    "knn=knn",
    "iforest=iforest",
    "ocsvm=ocsvm",
    "lstm-ae=lstm-ae",
    "dagmm=dagmm",
]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class DetSpec:
    """A named detector: ``NAME=KIND[:CONFIG]``."""

    name: str
    kind: str
    config: str | None

    @property
    def spec(self) -> str:
        return self.kind if self.config is None else f"{self.kind}:{self.config}"


def parse_detector(text: str) -> DetSpec:
    """``NAME=KIND[:CONFIG]`` (a bare ``KIND`` is named after itself)."""
    name, sep, spec = text.partition("=")
    if not sep:
        spec = name
    kind, colon, config = spec.partition(":")
    if not name or kind not in KINDS or is_supervised(kind):
        valid = ", ".join(k for k in KINDS if not is_supervised(k))
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=KIND[:CONFIG] with KIND one of {valid}"
        )
    return DetSpec(name, kind, config if colon else None)


def job_key(rec: dict[str, Any]) -> tuple[str, str, int]:
    """What identifies a job: detector name + its kind/config string, dataset, seed."""
    return f"{rec['detector']}={rec['spec']}", rec["dataset"], int(rec["seed"])


# ------------------------------------------------------------------------------- one job


def init_worker(parent: int | None = None) -> None:
    """One thread for torch and the BLAS libraries in this process; with the ``parent`` pid, a
    watcher ends the process once that parent is gone (a killed run leaves no workers)."""
    import torch

    if parent is not None:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return
    threadpool_limits(1)


@lru_cache(maxsize=2)
def splits(ucr: str, dataset: str) -> tuple[OneClassSplit, OneClassSplit]:
    """The (full, reference) one-class splits of ``dataset``; same training rows."""
    full = ucr_one_class_split(ucr, dataset, protocol="full")
    ref = ucr_one_class_split(ucr, dataset, protocol="reference")
    assert np.array_equal(full.train_rows, ref.train_rows)
    return full, ref


def _config_value(config: str | None) -> Any:
    return json.loads(config) if config and config.lstrip().startswith("{") else config


def _metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    from model.evaluation.metrics import pr_auc, roc_auc

    normal = labels == 0
    return {
        "roc_auc": roc_auc(labels, scores),
        "pr_auc": pr_auc(labels, scores),
        "false_alarm": float(np.mean(scores[normal] > threshold)),
        "n_test": int(labels.size),
        "n_anomalous": int(labels.sum()),
    }


def measure(job: dict[str, Any], ucr: str, fpr: float) -> dict[str, Any]:
    """Fit once, score every TEST row once, both protocols' metrics from those scores."""
    from model.errors import Seq2GMMError
    from model.evaluation.oneclass import reference_scores
    from model.kinds import make_detector
    from model.thresholds import infer_threshold

    full, ref = splits(ucr, job["dataset"])
    det = make_detector(job["kind"], config=_config_value(job["config"]))
    t0 = time.perf_counter()
    det.fit(full.train, seed=job["seed"])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = np.asarray(det.score(full.test), dtype=np.float64)
    score_s = time.perf_counter() - t0
    if scores.shape != (len(full.test),):
        raise Seq2GMMError(f"{len(full.test)} windows scored as an array of {scores.shape}")
    normal_scores, source = reference_scores(det, full.train)
    threshold = infer_threshold(normal_scores, fpr=fpr)
    in_ref = np.searchsorted(full.test_rows, ref.test_rows)  # full.test_rows: every row
    assert np.array_equal(full.test_rows[in_ref], ref.test_rows)
    return {
        "protocols": {
            "full": _metrics(full.test_labels, scores, threshold.value),
            "reference": _metrics(ref.test_labels, scores[in_ref], threshold.value),
        },
        "threshold": threshold.to_dict(),
        "threshold_reference": source,
        "n_reference": threshold.n_reference,
        "n_train": len(full.train),
        "n_normal_test": int((full.test_labels == 0).sum()),
        "length": int(full.train[0].shape[0]),
        "fit_seconds": fit_s,
        "score_seconds": score_s,
    }


def run_job(job: dict[str, Any], ucr: str, fpr: float) -> dict[str, Any]:
    """The result line of one job: its metrics, or the error it raised."""
    rec = {**job, "threshold_fpr": fpr}
    try:
        rec.update(measure(job, ucr, fpr))
    except Exception as exc:
        rec["error"] = {"type": type(exc).__name__, "message": str(exc)[:2000]}
    return rec


# ------------------------------------------------------------------------------- the run


def load_results(path: Path) -> list[dict[str, Any]]:
    """Every complete line of ``results.jsonl`` (a line cut short by a kill is dropped)."""
    if not path.is_file():
        return []
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"{path}:{lineno}: incomplete line ignored (killed run?)", file=sys.stderr)
    return out


def append_line(path: Path, rec: dict[str, Any]) -> None:
    """Append one JSON line and make it durable before going on."""
    with path.open("a", encoding="utf-8") as fh:
        if fh.tell() and _last_byte(path) != b"\n":
            fh.write("\n")  # end a line a kill cut short, so this one stays parseable
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


def plan(
    dets: list[DetSpec], datasets: list[str], seeds: list[int], ucr: Path, done: set[Any]
) -> list[tuple[float, dict[str, Any]]]:
    """(cost guess, job) of the jobs not done yet, the biggest first.

    Cost guess: n_train x window length x n_test (a fit and a full test scoring)."""
    jobs = []
    for ds in datasets:
        todo = [
            {"detector": d.name, "spec": d.spec, "kind": d.kind, "config": d.config,
             "dataset": ds, "seed": s}
            for d in dets for s in seeds
        ]  # fmt: skip
        todo = [j for j in todo if job_key(j) not in done]
        if todo:
            full, _ = splits(str(ucr), ds)
            cost = float(len(full.train) * max(len(w) for w in full.test) * len(full.test))
            jobs += [(cost, j) for j in todo]
    return sorted(jobs, key=lambda cj: -cj[0])  # stable: detector order within a dataset


class Progress:
    """``[k/N] det dataset seed roc(full)=.. fit=..s elapsed=..s eta=..s`` on stderr; the
    ETA weighs the jobs left by their cost guess."""

    def __init__(self, n: int, total_cost: float) -> None:
        self.n, self.k, self.total, self.done_cost = n, 0, total_cost, 0.0
        self.t0 = time.perf_counter()

    def finished(self, rec: dict[str, Any], cost: float) -> None:
        self.k += 1
        self.done_cost += cost
        elapsed = time.perf_counter() - self.t0
        left = self.total - self.done_cost
        eta = elapsed * left / self.done_cost if self.done_cost > 0 else 0.0
        if "error" in rec:
            what = f"ERROR {rec['error']['type']}: {rec['error']['message'][:120]}"
        else:
            roc = rec["protocols"]["full"]["roc_auc"]
            what = f"roc(full)={roc:.3f} fit={rec['fit_seconds']:.1f}s"
        print(
            f"[{self.k}/{self.n}] {rec['detector']} {rec['dataset']} {rec['seed']} {what}"
            f" elapsed={elapsed:.0f}s eta={eta:.0f}s",
            file=sys.stderr,
            flush=True,
        )


def execute(jobs: list[tuple[float, dict[str, Any]]], n_proc: int, ucr: Path, fpr: float,
            results: Path, progress: Progress) -> None:  # fmt: skip
    """Run ``jobs`` (inline with one process, else a spawn pool), appending each result."""
    work = partial(run_job, ucr=str(ucr), fpr=fpr)
    if n_proc <= 1:
        init_worker()
        for cost, job in jobs:
            rec = work(job)
            append_line(results, rec)
            progress.finished(rec, cost)
        return
    for var in THREAD_VARS:
        os.environ[var] = "1"  # inherited by the workers, read when their BLAS loads
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(n_proc, mp_context=ctx, initializer=init_worker,
                               initargs=(os.getpid(),))  # fmt: skip
    try:
        futures = {pool.submit(work, job): cost for cost, job in jobs}  # FIFO: biggest first
        for fut in as_completed(futures):
            rec = fut.result()
            append_line(results, rec)
            progress.finished(rec, futures[fut])
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detectors", nargs="+", type=parse_detector,
                    default=[parse_detector(d) for d in DEFAULT_DETECTORS],
                    metavar="NAME=KIND[:CONFIG]")  # fmt: skip
    ap.add_argument("--datasets", nargs="+", help="default: every folder under DATA/ucr")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (1 thread each)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "suite")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--threshold-fpr", type=float, default=0.05)
    ap.add_argument("--retry-errors", action="store_true", help="rerun jobs that raised")
    ap.add_argument("--summarise", action="store_true", help="only rebuild the table")
    args = ap.parse_args(argv)
    names = [d.name for d in args.detectors]
    if len(set(names)) < len(names):
        ap.error(f"detector names must differ: {names}")
    return args


def _record(started: float, **extra: Any) -> dict[str, Any]:
    """The command, the machine (with scikit-learn's version) and the seconds so far."""
    from contextlib import suppress
    from importlib.metadata import PackageNotFoundError, version

    with suppress(PackageNotFoundError):  # the baselines extra may be absent
        extra["sklearn"] = version("scikit-learn")
    return run_record("suite.py", started, **extra)


def summarise(out: Path, started: float, columns: list[str]) -> None:
    """Rebuild table.md and summary.json from results.jsonl and print the table."""
    records = load_results(out / "results.jsonl")
    runs = load_results(out / "runs.jsonl")
    markdown, summary = build_table(records, columns)
    summary = {**_record(started), "runs": runs, **summary}
    (out / "table.md").write_text(markdown)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    columns = [f"{d.name}={d.spec}" for d in args.detectors]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        if not load_results(args.out / "results.jsonl"):
            print(f"no results in {args.out / 'results.jsonl'}", file=sys.stderr)
            return 2
        summarise(args.out, started, columns)
        return 0
    ucr = args.data / "ucr"
    if data_missing(ucr):
        return 2
    datasets = args.datasets or sorted(p.name for p in ucr.iterdir() if p.is_dir())
    results = args.out / "results.jsonl"
    done = {job_key(r) for r in load_results(results)
            if not (args.retry_errors and "error" in r)}  # fmt: skip
    try:
        jobs = plan(args.detectors, datasets, args.seeds, ucr, done)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = len(args.detectors) * len(datasets) * len(args.seeds)
    print(f"{len(jobs)} of {total} jobs to run, {args.jobs} processes; results in {results}",
          file=sys.stderr)  # fmt: skip
    progress = Progress(len(jobs), sum(c for c, _ in jobs))
    try:
        execute(jobs, args.jobs, ucr, args.threshold_fpr, results, progress)
    except BrokenProcessPool as exc:
        print(f"a worker process died ({exc}); finished jobs are saved, rerun to continue",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        append_line(args.out / "runs.jsonl", {
            **_record(started, processes=args.jobs, threads_per_process=1),
            "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "processes": args.jobs, "planned": len(jobs), "finished": progress.k,
        })  # fmt: skip
    summarise(args.out, started, columns)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
