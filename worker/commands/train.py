"""``seq2gmm train`` and ``seq2gmm evaluate``: offline training and the evaluation harness."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import load_config
from model.data import (
    OneClassSplit,
    load_series_csv,
    load_ucr,
    normal_class,
    one_class_split,
    sliding_windows,
    ucr_windows,
)
from model.errors import DataError
from model.evaluation import KINDS, evaluate, make_detector, score_split
from model.pipeline import Seq2GMMDetector
from worker.demo import synthetic_training_windows
from worker.errors import ConfigError
from worker.progress import Progress
from worker.serving import pick_device
from worker.settings import Settings


def register(sub: argparse._SubParsersAction[Any]) -> None:
    t = sub.add_parser("train", help="train a Seq2GMM model on normal data and save it")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--train", type=Path, help="UCR TSV (normal class = most frequent) or CSV")
    src.add_argument(
        "--synthetic", action="store_true", help="train the demo model on synthetic data"
    )
    t.add_argument("--format", choices=["ucr", "csv"], default=None, help="default: by extension")
    t.add_argument("--window", type=int, default=None, help="CSV/synthetic: window length")
    t.add_argument("--hop", type=int, default=None, help="CSV/synthetic: hop (default = window)")
    t.add_argument("--config", default="default", help="faithful, default or a JSON file")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    t.add_argument(
        "--threshold-fpr",
        type=float,
        default=None,
        help="threshold's false-positive rate on held-out normals (default: config's, or 0.01)",
    )
    t.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    t.add_argument("--publish", metavar="NAME", help="also publish to the model registry")
    t.add_argument("--promote", action="store_true", help="with --publish: make it active")
    t.add_argument("--json", action="store_true", help="print a JSON summary")
    t.set_defaults(handler=_train)

    e = sub.add_parser("evaluate", help="one-class evaluation: ROC/PR AUC, F1, timings")
    e.add_argument("--train", type=Path, help="UCR TRAIN file (defines the normal class)")
    e.add_argument("--test", type=Path, required=True, help="UCR TEST file")
    e.add_argument("--format", choices=["ucr"], default="ucr")
    e.add_argument("--model", type=Path, help="score this trained model instead of training")
    e.add_argument("--detector", choices=KINDS, default="seq2gmm")
    e.add_argument("--config", default="default", help="seq2gmm: faithful, default or JSON")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threshold-fpr", type=float, default=0.05)
    e.add_argument("--json", action="store_true", help="exactly one JSON object on stdout")
    e.set_defaults(handler=_evaluate)


# ------------------------------------------------------------------ training data


def _ucr_normal_rows(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    labels, x = load_ucr(path)
    normal = normal_class(labels)
    rows = [w for w, lab in zip(ucr_windows(x), labels, strict=True) if lab == normal]
    return rows, {"source": str(path.resolve()), "format": "ucr", "normal_label": _plain(normal)}


def _csv_windows(path: Path, length: int, hop: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    series = load_series_csv(path)
    w = sliding_windows(series.values, length, hop, labels=series.labels)
    labels = w.labels if w.labels is not None else np.zeros(len(w.windows), dtype=np.int64)
    keep = [x for x, lab in zip(w.windows, labels, strict=True) if not lab]
    dropped = len(w.windows) - len(keep)
    return keep, {
        "source": str(path.resolve()),
        "format": "csv",
        "dropped_labelled_windows": dropped,
    }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _training_windows(
    args: argparse.Namespace,
) -> tuple[list[np.ndarray], int | None, dict[str, Any]]:
    """(windows, serving hop or None for row data, data summary)."""
    if args.synthetic:
        length = args.window or 64
        hop = args.hop or length
        windows = synthetic_training_windows(length, args.seed)
        return windows, hop, {"source": "synthetic", "format": "synthetic", "period": length}
    fmt = args.format or ("csv" if args.train.suffix.lower() == ".csv" else "ucr")
    if fmt == "ucr":
        rows, info = _ucr_normal_rows(args.train)
        return rows, None, info
    if args.window is None:
        raise ConfigError("--format csv needs --window (samples per window) and optionally --hop")
    hop = args.hop or args.window
    windows, info = _csv_windows(args.train, args.window, hop)
    return windows, hop, info


# ------------------------------------------------------------------ commands


def _train(args: argparse.Namespace, settings: Settings) -> int:
    if args.promote and not args.publish:
        raise ConfigError("--promote needs --publish NAME")
    cfg = load_config(args.config)
    if args.epochs is not None:
        cfg = cfg.replace(train=dataclasses.replace(cfg.train, epochs=args.epochs))
    windows, hop, info = _training_windows(args)
    if not windows:
        raise DataError("no training windows: check the file, --window and labels")
    torch.manual_seed(args.seed)
    detector = Seq2GMMDetector(cfg, device=pick_device(settings.device))
    started = time.perf_counter()
    with Progress(cfg.train.epochs, "train") as bar:

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            shown: dict[str, object] = {k: f"{v:.4g}" for k, v in list(metrics.items())[:3]}
            bar.update(info=shown)

        detector.fit(windows, seed=args.seed, on_epoch=on_epoch)
    train_seconds = time.perf_counter() - started
    fpr = args.threshold_fpr
    if fpr is not None or not detector.has_threshold:
        detector.infer_threshold(fpr=fpr if fpr is not None else 0.01)
    detector.hop = hop
    detector.training_summary.update(info)
    detector.training_summary["train_seconds"] = round(train_seconds, 3)
    out = save_checkpoint(detector.to("cpu"), args.out)
    summary: dict[str, Any] = {
        "out": str(out),
        "windows": len(windows),
        "window_length": detector.window_length,
        "hop": hop,
        "threshold": detector.threshold.value,
        "train_seconds": round(train_seconds, 3),
    }
    if args.publish:
        from worker.registry import ModelRegistry

        with ModelRegistry.from_settings(settings) as registry:
            summary["version"] = registry.publish_dir(out, args.publish, promote=args.promote)
            summary["model"] = args.publish
            summary["promoted"] = bool(args.promote)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"trained on {len(windows)} windows in {train_seconds:.1f} s -> {out}")
        if args.publish:
            state = " and promoted to active" if args.promote else ""
            print(f"published {args.publish}:{summary['version']}{state}")
    return 0


def _split_for(args: argparse.Namespace, model_dir: Path | None) -> OneClassSplit:
    if args.train is not None:
        return one_class_split(args.train, args.test)
    if model_dir is None:
        raise ConfigError("evaluate needs --train TRAIN.tsv (or --model DIR trained on UCR data)")
    # a model trained on a UCR file remembers its TRAIN file: use the same protocol
    meta = json.loads((model_dir / "metadata.json").read_text())
    source = (meta.get("training_data") or {}).get("source")
    if not source or not Path(source).is_file():
        raise ConfigError(
            f"{model_dir} does not name a readable training file; pass --train TRAIN.tsv"
        )
    return one_class_split(Path(source), args.test)


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    split = _split_for(args, args.model)
    if args.model is not None:
        detector: Any = load_checkpoint(args.model)
        report = score_split(
            detector,
            split,
            detector.threshold,
            seed=int(detector.training_summary.get("seed") or 0),
            threshold_reference="checkpoint",
        )
    else:
        torch.manual_seed(args.seed)
        config = args.config if args.detector == "seq2gmm" else None
        detector = make_detector(args.detector, seed=args.seed, config=config)
        report = evaluate(detector, split, seed=args.seed, threshold_fpr=args.threshold_fpr)
    result = report.to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{report.detector} on {report.dataset or args.test.name}: ROC AUC {report.roc_auc:.4f}"
        f"  PR AUC {report.pr_auc:.4f}\n"
        f"  at threshold {report.threshold.value:.4g}: precision {report.precision:.3f}"
        f" recall {report.recall:.3f} F1 {report.f1:.3f}\n"
        f"  {report.n_train} train / {report.n_test} test ({report.n_anomalous} anomalous);"
        f" train {report.train_seconds:.1f} s, score {report.score_seconds:.2f} s"
    )
    return 0
