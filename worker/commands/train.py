"""``seq2gmm train`` and ``seq2gmm evaluate``: offline training and the evaluation harness."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.cycles import Cutter
from model.detectors.seq2gmm.config import load_config
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.errors import DataError
from model.evaluation.data import (
    OneClassSplit,
    load_series_csv,
    load_ucr,
    normal_class,
    one_class_split,
    sliding_windows,
    ucr_windows,
)
from model.evaluation.oneclass import evaluate, score_split
from model.evaluation.synthetic import synthetic_training_windows
from model.kinds import KINDS, SERVABLE_KINDS, is_supervised, make_detector
from worker.commands import train_history
from worker.errors import ConfigError
from worker.ops.progress import Progress
from worker.ops.settings import Settings
from worker.registry.loader import pick_device


def register(sub: argparse._SubParsersAction[Any]) -> None:
    t = sub.add_parser("train", help="train a model (Seq2GMM or another kind) and save it")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--train", type=Path, help="UCR TSV (normal class = most frequent) or CSV")
    src.add_argument(
        "--synthetic", action="store_true", help="train the demo model on synthetic data"
    )
    src.add_argument(
        "--from-topic", metavar="TOPIC", help="the stream's history (e.g. ts.raw); see --since"
    )
    t.add_argument("--format", choices=["ucr", "csv"], default=None, help="default: by extension")
    t.add_argument("--window", type=int, default=None, help="CSV/synthetic: window length")
    t.add_argument("--hop", type=int, default=None, help="CSV/synthetic: hop (default = window)")
    t.add_argument(
        "--cycles",
        metavar="SPEC",
        help="CSV: cut the series into cycles instead of --window/--hop: fixed:LEN[:HOP] or a"
        " registered cutter (e.g. fiducial); saved in the checkpoint, the worker cuts the same",
    )
    t.add_argument(
        "--detector",
        choices=SERVABLE_KINDS,
        default="seq2gmm",
        help="detector kind (classifier: supervised, needs labels: a CSV label column or UCR"
        " classes)",
    )
    t.add_argument(
        "--config", default="default", help="seq2gmm: faithful, default or JSON; others: JSON"
    )
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
    train_history.add_options(t)
    t.set_defaults(handler=_train)
    _register_evaluate(sub)


def _register_evaluate(sub: argparse._SubParsersAction[Any]) -> None:
    e = sub.add_parser("evaluate", help="one-class evaluation: ROC/PR AUC, F1, timings")
    e.add_argument("--train", type=Path, help="UCR TRAIN file (defines the normal class)")
    e.add_argument("--test", type=Path, help="UCR TEST file")
    e.add_argument(
        "--series",
        metavar="nab:NAME|kpi:NAME|mitdb:RECORD",
        help="instead of UCR files: a long labelled series split in time (NAB with the"
        " VAE-LSTM paper's splits, or KPI 70/30); point-level ROC/PR AUC and best F1;"
        " mitdb:RECORD (e.g. mitdb:100) with --cycles: lead MLII cut into cycles, trained on"
        " the normal cycles of the first 35%%, cycle- and beat-level ROC/PR AUC on the rest",
    )
    e.add_argument(
        "--cycles",
        metavar="SPEC",
        help="--series mitdb: fixed:LEN[:HOP], oracle[:FRACTION] (one cycle per annotated"
        " beat) or a registered cutter (e.g. fiducial)",
    )
    e.add_argument(
        "--resample-to",
        type=int,
        metavar="N",
        help="--cycles: resample each cycle to N samples for iforest and ocsvm (default: the"
        " median training cycle length); knn resamples cycles itself (its max_points)",
    )
    e.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data"),
        help="--series: the data folder holding nab/, kpi/ and mitdb/ (default ../shared/data)",
    )
    e.add_argument("--window", type=int, help="--series: window length (default 576)")
    e.add_argument("--hop", type=int, help="--series: test window hop (default 1)")
    e.add_argument("--train-hop", type=int, help="--series: training window hop (default 1)")
    e.add_argument("--format", choices=["ucr"], default="ucr")
    e.add_argument("--model", type=Path, help="score this trained model instead of training")
    e.add_argument("--detector", choices=KINDS, default="seq2gmm")
    e.add_argument("--config", default="default", help="seq2gmm: faithful, default or JSON")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threshold-fpr", type=float, default=0.05)
    e.add_argument("--json", action="store_true", help="exactly one JSON object on stdout")
    e.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="also write ROC/PR curves, energies and the most/least anomalous windows to DIR",
    )
    e.add_argument("--plot-format", choices=["png", "svg"], default="png")
    e.set_defaults(handler=_evaluate)


# ------------------------------------------------------------------ training data


def _ucr_normal_rows(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    labels, x = load_ucr(path)
    normal = normal_class(labels)
    rows = [w for w, lab in zip(ucr_windows(x), labels, strict=True) if lab == normal]
    return rows, {"source": str(path.resolve()), "format": "ucr", "normal_label": _plain(normal)}


def _csv_windows(
    path: Path, length: int, hop: int, *, label_rule: str | None = None
) -> tuple[list[np.ndarray], np.ndarray, dict[str, Any]]:
    """Windows of a CSV series and their 0/1 labels. One-class training (``label_rule`` None)
    drops every window with a labelled point; a supervised kind keeps them all, labelled by
    its ``label_rule`` (see ``model.detectors.classifier.labelled_windows``)."""
    series = load_series_csv(path)
    info: dict[str, Any] = {"source": str(path.resolve()), "format": "csv"}
    if label_rule is not None:
        from model.detectors.classifier import labelled_windows

        if series.labels is None:
            raise DataError(
                f"{path} has no label column; a supervised detector needs"
                " timestamp,value,label rows (label 1 = anomalous point)"
            )
        lw = labelled_windows(series.values, series.labels, length, hop, label_rule)  # type: ignore[arg-type]
        assert lw.labels is not None
        labels = (np.asarray(lw.labels) > 0).astype(np.int64)
        info.update({"label_rule": label_rule, "anomalous_windows": int(labels.sum())})
        return list(lw.windows), labels, info
    w = sliding_windows(series.values, length, hop, labels=series.labels)
    labels = w.labels if w.labels is not None else np.zeros(len(w.windows), dtype=np.int64)
    keep = np.asarray(labels) == 0
    info["dropped_labelled_windows"] = int((~keep).sum())
    return [x for x, k in zip(w.windows, keep, strict=True) if k], labels[keep], info


def _csv_cycles(
    path: Path, spec: str, *, supervised: bool
) -> tuple[list[np.ndarray], np.ndarray, Cutter, dict[str, Any]]:
    """Cycles of a CSV series cut by ``spec`` and their 0/1 labels (see
    :func:`~worker.commands.training_cycles.training_cycles`, shared with --from-topic)."""
    from worker.commands.training_cycles import training_cycles

    series = load_series_csv(path)
    if supervised and series.labels is None:
        raise DataError(f"{path} has no label column; a supervised detector needs labels")
    windows, labels, cutter, info = training_cycles([("", series)], spec, supervised=supervised)
    return windows, labels, cutter, {"source": str(path.resolve()), "format": "csv", **info}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _training_windows(
    args: argparse.Namespace, detector: Any
) -> tuple[list[np.ndarray], np.ndarray | None, int | None, dict[str, Any]]:
    """(windows, labels for a supervised kind else None, serving hop or None for row data,
    data summary)."""
    supervised = is_supervised(args.detector)
    if args.cycles is not None:
        suffix = args.train.suffix.lower().lstrip(".") if args.train is not None else ""
        if (args.format or suffix) != "csv" or args.window is not None or args.hop is not None:
            raise ConfigError("--cycles cuts a --train CSV series; it replaces --window/--hop")
        windows, labels, cutter, info = _csv_cycles(args.train, args.cycles, supervised=supervised)
        detector.cycles = cutter.to_config()
        return windows, (labels if supervised else None), getattr(cutter, "hop", None), info
    if args.synthetic:
        if supervised:
            raise ConfigError(
                f"the {args.detector} detector is supervised: train it from labelled data"
                " (--train FILE.csv with a label column, or a UCR file)"
            )
        length = args.window or 64
        hop = args.hop or length
        windows = synthetic_training_windows(length, args.seed)
        return windows, None, hop, {"source": "synthetic", "format": "synthetic", "period": length}
    fmt = args.format or ("csv" if args.train.suffix.lower() == ".csv" else "ucr")
    if fmt == "ucr":
        if supervised:
            labels_raw, x = load_ucr(args.train)
            normal = normal_class(labels_raw)
            labels = (labels_raw != normal).astype(np.int64)
            info = {"source": str(args.train.resolve()), "format": "ucr"}
            info["normal_label"] = _plain(normal)
            return ucr_windows(x), labels, None, info
        rows, info = _ucr_normal_rows(args.train)
        return rows, None, None, info
    if args.window is None:
        raise ConfigError("--format csv needs --window (samples per window) and optionally --hop")
    hop = args.hop or args.window
    rule = detector.config.label_rule if supervised else None
    windows, labels, info = _csv_windows(args.train, args.window, hop, label_rule=rule)
    return windows, (labels if supervised else None), hop, info


def _make_trainable(args: argparse.Namespace, settings: Settings) -> Any:
    """A new detector of ``args.detector`` with ``--config`` and ``--epochs`` applied."""
    device = pick_device(settings.device)
    if args.detector == "seq2gmm":
        cfg = load_config(args.config)
        if args.epochs is not None:
            cfg = cfg.replace(train=dataclasses.replace(cfg.train, epochs=args.epochs))
        return Seq2GMMDetector(cfg, device=device)
    detector: Any = make_detector(args.detector, config=args.config)
    if args.epochs is not None:
        cfg = detector.config
        fields = [f.name for f in dataclasses.fields(cfg) if f.name.endswith("epochs")]
        if not fields:
            raise ConfigError(f"--epochs does not apply to the {args.detector} detector")
        detector.config = dataclasses.replace(cfg, **dict.fromkeys(fields, args.epochs))
    return detector.to(device)


def _fit(detector: Any, windows: list[np.ndarray], labels: np.ndarray | None, seed: int) -> None:
    """Fit with a progress bar over epochs when the detector reports them."""
    kwargs: dict[str, Any] = {"seed": seed}
    if labels is not None:
        kwargs["labels"] = labels
    if "on_epoch" not in inspect.signature(detector.fit).parameters:
        detector.fit(windows, **kwargs)
        return
    with _epoch_bar(detector) as on_epoch:
        detector.fit(windows, on_epoch=on_epoch, **kwargs)


@contextlib.contextmanager
def _epoch_bar(detector: Any) -> Iterator[Callable[[int, dict[str, float]], None]]:
    """An ``on_epoch`` callback drawing a progress bar (on a terminal) with the first losses."""
    config = getattr(detector, "config", None)
    total = _epochs(config) if dataclasses.is_dataclass(config) else None
    with Progress(total, "train") as bar:

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            shown: dict[str, object] = {k: f"{v:.4g}" for k, v in list(metrics.items())[:3]}
            bar.update(info=shown)

        yield on_epoch


def _epochs(cfg: Any) -> int | None:
    if hasattr(cfg, "train"):
        return int(cfg.train.epochs)
    total = sum(
        int(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if f.name.endswith("epochs") and isinstance(getattr(cfg, f.name), int)
    )
    return total or None


# ------------------------------------------------------------------ commands


def _train(args: argparse.Namespace, settings: Settings) -> int:
    summary = train_model(args, settings)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"trained {summary['detector']} on {summary['windows']} windows in"
        f" {summary['train_seconds']:.1f} s -> {summary['out']}"
    )
    if args.publish:
        state = f" and pointed {summary['alias']} at it" if summary["alias"] else ""
        print(f"published {args.publish}:{summary['version']}{state}")
    return 0


def train_model(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """``seq2gmm train`` as a function (also ``seq2gmm retrain``'s): train, save, optionally
    publish; returns the summary that ``--json`` prints."""
    if (args.promote or args.alias) and not args.publish:
        raise ConfigError("--promote and --alias need --publish NAME")
    if args.promote and args.alias:
        raise ConfigError("give --promote (alias active) or --alias ALIAS, not both")
    detector = _make_trainable(args, settings)
    if args.from_topic is not None:
        data = train_history.topic_training_windows(args, detector, settings)
    else:
        data = _training_windows(args, detector)
    windows, labels, hop, info = data
    if not windows:
        raise DataError("no training windows: check the file, --window and labels")
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    _fit(detector, windows, labels, args.seed)
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
        "detector": detector.kind,
        "windows": len(windows),
        "window_length": detector.window_length,
        "hop": hop,
        "threshold": detector.threshold.value,
        "train_seconds": round(train_seconds, 3),
    }
    if args.publish:
        from worker.commands.models import open_registry

        with open_registry(settings) as registry:
            alias = args.alias or "active"
            promote = bool(args.promote or args.alias)
            summary["version"] = registry.publish_dir(
                out, args.publish, promote=promote, alias=alias
            )
            summary["model"] = args.publish
            summary["promoted"] = bool(args.promote)
            summary["alias"] = alias if promote else None
    return summary


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
    if args.series is not None and args.series.startswith("mitdb:"):
        return _evaluate_record(args)
    if args.cycles is not None:
        raise ConfigError("--cycles applies to --series mitdb:RECORD")
    if args.series is not None:
        return _evaluate_series(args)
    if args.test is None:
        raise ConfigError(
            "evaluate needs --test TEST.tsv (UCR) or --series nab:NAME|kpi:NAME|mitdb:RECORD"
        )
    if is_supervised(args.detector) and args.model is None:
        raise ConfigError(
            f"the {args.detector} detector is supervised and the UCR one-class protocol has no"
            " labelled training anomalies: evaluate it with --series kpi:NAME"
        )
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
        config = args.config if args.detector in SERVABLE_KINDS else None
        detector = make_detector(args.detector, seed=args.seed, config=config)
        with _epoch_bar(detector) as on_epoch:
            report = evaluate(
                detector,
                split,
                seed=args.seed,
                threshold_fpr=args.threshold_fpr,
                on_epoch=on_epoch,
            )
    result = report.to_dict()
    if args.plots is not None:
        from model.evaluation.plots import write_evaluation_plots

        files = write_evaluation_plots(
            args.plots,
            labels=split.test_labels,
            scores=detector.score(split.test),
            windows=split.test,
            detector=detector,
            threshold=report.threshold.value,
            fmt=args.plot_format,
            label=split.name or args.test.stem,
        )
        result["plots"] = [str(f) for f in files]
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
    if args.plots is not None:
        print(f"  plots: {', '.join(result['plots'])}")
    return 0


def _evaluate_series(args: argparse.Namespace) -> int:
    from model.evaluation.series import evaluate_series, load_split

    if args.model is not None or args.train is not None or args.test is not None:
        raise ConfigError("--series takes neither --model, --train nor --test")
    geometry = {"window": args.window, "hop": args.hop, "train_hop": args.train_hop}
    split = load_split(args.data, args.series, **{k: v for k, v in geometry.items() if v})
    torch.manual_seed(args.seed)
    config = args.config if args.detector in SERVABLE_KINDS else None
    detector = make_detector(args.detector, seed=args.seed, config=config)
    report = evaluate_series(detector, split, seed=args.seed)
    result = report.to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{report.detector} on {report.dataset}: ROC AUC {report.roc_auc:.4f}"
        f"  PR AUC {report.pr_auc:.4f}  best F1 {report.best_f1:.3f}"
        f"  best point-adjusted F1 {report.best_pa_f1:.3f}\n"
        f"  at its threshold {report.threshold:.4g}: precision {report.precision:.3f}"
        f" recall {report.recall:.3f} F1 {report.f1:.3f}\n"
        f"  {report.n_train_windows} train windows / {report.n_points} test points"
        f" ({report.n_anomalous_points} anomalous)"
    )
    if report.paper is not None:
        print(
            f"  VAE-LSTM paper's window evaluation: best F1 {report.paper['best_f1']:.3f},"
            f" point-adjusted {report.paper['best_pa_f1']:.3f}"
        )
    return 0


def _evaluate_record(args: argparse.Namespace) -> int:
    """``--series mitdb:RECORD --cycles SPEC``: the cycle protocol of an annotated ECG record."""
    from model.evaluation.cycles import EQUAL_LENGTH_KINDS, evaluate_cycles, resampled
    from model.evaluation.mitdb import record_split

    if args.model is not None or args.train is not None or args.test is not None:
        raise ConfigError("--series takes neither --model, --train nor --test")
    if args.cycles is None:
        raise ConfigError("--series mitdb:RECORD needs --cycles (e.g. oracle or fixed:287)")
    if args.resample_to is not None and args.detector not in EQUAL_LENGTH_KINDS:
        raise ConfigError(
            f"--resample-to applies to {' and '.join(sorted(EQUAL_LENGTH_KINDS))}; the"
            f" {args.detector} detector takes cycles of any length"
        )
    record = args.series.split(":", 1)[1] or "100"
    split = record_split(args.data / "mitdb", args.cycles, record=record)
    if args.detector in EQUAL_LENGTH_KINDS:
        split = resampled(split, args.resample_to)
    torch.manual_seed(args.seed)
    config = args.config if args.detector in SERVABLE_KINDS else None
    detector = make_detector(args.detector, seed=args.seed, config=config)
    result = evaluate_cycles(detector, split, seed=args.seed)
    result.update(dataset=split.name, detector=args.detector, cycles=args.cycles, **split.info)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{args.detector} on {split.name} cut by {args.cycles}: beat-level ROC AUC"
        f" {result['event_roc_auc']:.4f}  PR AUC {result['event_pr_auc']:.4f};"
        f" cycle-level ROC AUC {result['roc_auc']:.4f}  PR AUC {result['pr_auc']:.4f}\n"
        f"  {result['n_train']} train / {result['n_test']} test cycles"
        f" ({result['n_anomalous']} anomalous); {100 * result['event_coverage']:.2f}% of beats"
        f" in exactly one cycle; train {result['fit_seconds']:.1f} s,"
        f" score {result['score_seconds']:.2f} s"
    )
    return 0
