"""``seq2gmm plot ...`` and ``seq2gmm report``: what a model flagged and why, as images.

- ``plot window``: one window with its segments shaded by energy, from a ``ts.anomalies``
  record carrying its samples (``SEQ2GMM_WORKER__INCLUDE_SAMPLES=true``) or from a dataset row;
- ``plot energies``: training vs scored energies with the threshold;
- ``plot training``: the model's training curves;
- ``report``: one self-contained HTML page about a model version.

Models come from a checkpoint directory (``--model DIR``) or the registry
(``--registry NAME[:VERSION|:ALIAS]``). The image format follows ``--out``'s suffix (.png, .svg).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.base import WindowScore
from model.errors import DataError
from worker.errors import ConfigError
from worker.ops.progress import Progress
from worker.ops.settings import Settings


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "plot", help="draw a window, the energy histogram or training curves (PNG or SVG)"
    )
    psub = p.add_subparsers(dest="plot_command", metavar="WHAT", required=True)

    def what(name: str, help: str, *, model_required: bool = True) -> argparse.ArgumentParser:
        a = psub.add_parser(name, help=help, description=help)
        _model_args(a, required=model_required)
        a.add_argument("--out", type=Path, required=True, help="image file: *.png or *.svg")
        a.add_argument("--title", default=None, help="extra title line")
        a.add_argument("--json", action="store_true", help="print one JSON summary")
        return a

    w = what(
        "window",
        "one window, its segments shaded by energy and the flagged ones hatched",
        model_required=False,
    )
    src = w.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--record",
        type=Path,
        metavar="FILE.json",
        help="a ts.anomalies record with samples (JSON, or JSON lines from `seq2gmm tail"
        " --json`); without a model its own energies are drawn",
    )
    src.add_argument("--ucr", type=Path, metavar="FILE.tsv", help="a UCR file; pick --row")
    src.add_argument("--csv", type=Path, metavar="FILE.csv", help="a CSV series; pick --start")
    w.add_argument("--index", type=int, default=0, help="--record: which line (default 0)")
    w.add_argument(
        "--from-kafka",
        action="store_true",
        help="--record: read the window's samples back from ts.raw by the record's source"
        " offsets (for records without samples)",
    )
    w.add_argument("--row", type=int, default=None, help="--ucr: row number (0-based)")
    w.add_argument("--start", type=int, default=None, help="--csv: first sample (0-based)")
    w.add_argument(
        "--length", type=int, default=None, help="--csv: samples (default: model's window)"
    )
    w.add_argument(
        "--no-reconstruction", action="store_true", help="do not overlay the reconstruction"
    )
    w.set_defaults(handler=_window)

    e = what("energies", "histogram of training vs scored energies with the threshold")
    e.add_argument("--test", type=Path, metavar="FILE.tsv", help="UCR file to score")
    e.add_argument(
        "--train",
        type=Path,
        metavar="TRAIN.tsv",
        help="with --test: the one-class protocol's test rows (default: the model's training"
        " file when readable, else every row of --test)",
    )
    e.set_defaults(handler=_energies)

    t = what("training", "loss curves of the model's training history")
    t.set_defaults(handler=_training)

    r = sub.add_parser(
        "report",
        help="one self-contained HTML page about a model version",
        description="one self-contained HTML page about a model version (images embedded)",
    )
    r.add_argument("model_dir", nargs="?", type=Path, metavar="MODEL_DIR")
    r.add_argument("--registry", metavar="NAME[:VERSION]", help="a registry version instead")
    r.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    r.add_argument("--test", type=Path, metavar="FILE.tsv", help="labelled UCR test file")
    r.add_argument("--train", type=Path, metavar="TRAIN.tsv", help="with --test: see plot energies")
    r.add_argument("--title", default=None, help="page title (default: kind and training file)")
    r.add_argument("--json", action="store_true", help="print one JSON summary")
    r.set_defaults(handler=_report)


def _model_args(a: argparse.ArgumentParser, *, required: bool) -> None:
    g = a.add_mutually_exclusive_group(required=required)
    g.add_argument("--model", type=Path, metavar="DIR", help="checkpoint directory")
    g.add_argument(
        "--registry",
        metavar="NAME[:VERSION]",
        help="a registry version (NAME: the active one; NAME:3; NAME:ALIAS)",
    )


# --------------------------------------------------------------------------- loading


@dataclass
class Loaded:
    metadata: dict[str, Any]
    detector: Any
    label: str


def _load(model_dir: Path | None, registry: str | None, settings: Settings) -> Loaded:
    if model_dir is not None:
        from model.evaluation.report import load_model

        metadata, detector = load_model(model_dir)
        return Loaded(metadata, detector, str(model_dir))
    if registry is None:
        raise ConfigError("name a model: --model DIR or --registry NAME[:VERSION]")
    from worker.commands.models import open_registry
    from worker.registry.loader import load_detector
    from worker.registry.records import parse_ref

    name, ref = parse_ref(registry)
    with open_registry(settings) as reg:
        record = reg.get(name, ref) if isinstance(ref, int) else reg.get(name, alias=ref)
    return Loaded(dict(record.metadata), load_detector(record), record.ref)


def _emit(args: argparse.Namespace, summary: dict[str, Any], text: str) -> int:
    print(json.dumps(summary) if args.json else text)
    return 0


def _test_set(
    test: Path, train: Path | None, metadata: dict[str, Any]
) -> tuple[list[np.ndarray], np.ndarray | None, str]:
    """Windows, labels (1 = anomalous) and a description of a UCR test file.

    With a TRAIN file (given, or the model's readable training source) the one-class protocol
    of ``seq2gmm evaluate``, so the numbers match; otherwise every row, labelled against the
    model's normal class when it recorded one.
    """
    from model.evaluation.data import load_ucr, one_class_split, ucr_windows

    if train is None:
        data = metadata.get("training_data") or {}
        source = data.get("source")
        if data.get("format") == "ucr" and isinstance(source, str) and Path(source).is_file():
            train = Path(source)
    if train is not None:
        split = one_class_split(train, test)
        return split.test, split.test_labels, f"{test.name} (one-class protocol)"
    labels, x = load_ucr(test)
    normal = (metadata.get("training_data") or {}).get("normal_label")
    y = (labels != normal).astype(np.int64) if normal is not None else None
    return ucr_windows(x), y, test.name


# --------------------------------------------------------------------------- plot window


def _read_record(path: Path, index: int) -> Any:
    from pydantic import ValidationError

    from worker.stream.messages import AnomalyRecord

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    stripped = text.strip()
    if not stripped:
        raise DataError(f"{path} is empty; expected a ts.anomalies record (JSON)")
    try:
        objs = [json.loads(stripped)]
    except json.JSONDecodeError:
        try:
            objs = [json.loads(line) for line in stripped.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path} is neither one JSON record nor JSON lines ({exc.msg}, line {exc.lineno})"
            ) from None
    if len(objs) == 1 and isinstance(objs[0], list):
        objs = objs[0]
    if not 0 <= index < len(objs):
        raise DataError(f"{path} holds {len(objs)} record(s); --index {index} is out of range")
    try:
        return AnomalyRecord.model_validate(objs[index])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise DataError(
            f"{path} (record {index}) is not a ts.anomalies record: {where}: {first['msg']}"
        ) from None


def _record_score(rec: Any) -> WindowScore:
    energies = np.array([s.energy for s in rec.segments], dtype=np.float64)
    return WindowScore(
        score=float(rec.energy),
        segment_energies=energies,
        raw_energies=energies.copy(),
        intervals=[(int(s.start_index), int(s.end_index)) for s in rec.segments],
        top_segment=int(np.argmax(energies)) if energies.size else 0,
        percentile=float(rec.percentile),
        is_anomaly=bool(rec.anomalous),
    )


def _dataset_window(args: argparse.Namespace, loaded: Loaded | None) -> tuple[np.ndarray, str]:
    from model.evaluation.data import load_series_csv, load_ucr, ucr_windows

    if args.ucr is not None:
        if args.row is None:
            raise ConfigError("--ucr needs --row N (0-based row of the file)")
        labels, x = load_ucr(args.ucr)
        if not 0 <= args.row < len(labels):
            raise DataError(f"{args.ucr} has {len(labels)} rows; --row {args.row} is out of range")
        label = labels[args.row]
        label_text = label.item() if hasattr(label, "item") else label
        return ucr_windows(x[args.row : args.row + 1])[0], (
            f"{args.ucr.name} row {args.row} (class {label_text})"
        )
    if args.start is None:
        raise ConfigError("--csv needs --start I (0-based first sample of the window)")
    length = args.length or (loaded.detector.window_length if loaded else None)
    if not length:
        raise ConfigError("the model has no fixed window length: pass --length N")
    series = load_series_csv(args.csv)
    end = args.start + int(length)
    if args.start < 0 or end > len(series):
        raise DataError(
            f"{args.csv} has {len(series)} samples; samples {args.start}..{end - 1} do not fit"
        )
    return series.values[args.start : end], f"{args.csv.name} samples {args.start}..{end - 1}"


def _record_window(
    args: argparse.Namespace, settings: Settings
) -> tuple[np.ndarray, str, WindowScore, float]:
    """(samples, description, its score, threshold) of the ``--record`` anomaly record; the
    samples come from the record, or from ts.raw with ``--from-kafka``."""
    rec = _read_record(args.record, args.index)
    if args.from_kafka:
        from worker.dev.endpoints import resolve_kafka
        from worker.stream.readback import window_samples

        window = window_samples(rec, resolve_kafka(settings), settings.kafka)
    elif rec.samples is None:
        raise DataError(
            f"{args.record}: the record carries no samples; read them back from ts.raw"
            " with --from-kafka, run the worker with SEQ2GMM_WORKER__INCLUDE_SAMPLES=true,"
            " or plot the window from its dataset with --ucr FILE --row N / --csv FILE"
            " --start I"
        )
    else:
        window = np.asarray(rec.samples, dtype=np.float64)
    what = (
        f"{rec.series_id} at {rec.window.start:.6g} s, model {rec.model.name}:{rec.model.version}"
    )
    return window, what, _record_score(rec), float(rec.threshold)


def _model_score(detector: Any, window: np.ndarray) -> WindowScore:
    """The detector's explained score of one window; one whole-window segment when it cannot
    explain its scores."""
    score_detailed = getattr(detector, "score_detailed", None)
    if score_detailed is not None:
        return score_detailed([window])[0]
    s = float(np.asarray(detector.score([window]))[0])
    return WindowScore(
        score=s,
        segment_energies=np.array([s]),
        raw_energies=np.array([s]),
        intervals=[(0, len(window) - 1)],
        top_segment=0,
    )


def _window(args: argparse.Namespace, settings: Settings) -> int:
    from model.evaluation import plots

    plots.figure_format(args.out)  # refuse a bad suffix before any work
    loaded = (
        _load(args.model, args.registry, settings)
        if args.model is not None or args.registry is not None
        else None
    )
    result: WindowScore | None = None
    threshold: float | None = None
    if args.record is not None:
        window, what, result, threshold = _record_window(args, settings)
    else:
        if loaded is None:
            raise ConfigError("--ucr / --csv windows are scored by a model: --model or --registry")
        window, what = _dataset_window(args, loaded)
    reconstruction = None
    if loaded is not None:
        det = loaded.detector
        if result is None:
            result = _model_score(det, window)
            threshold = plots.detector_threshold(det)
            what += f", model {loaded.label}"
        if not args.no_reconstruction:
            reconstruction = plots.reconstruction_of(det, window)
    title = f"{args.title}\n{what}" if args.title else what
    fig = plots.plot_window(
        window, result, reconstruction=reconstruction, threshold=threshold, title=title
    )
    out = plots.save_figure(fig, args.out)
    assert result is not None
    flagged = result.score > threshold if threshold is not None else result.is_anomaly
    summary = {
        "out": str(out),
        "window": what,
        "score": result.score,
        "threshold": threshold,
        "percentile": result.percentile,
        "anomalous": flagged,
        "top_interval": list(result.top_interval),
        "reconstruction": reconstruction is not None,
    }
    state = "anomalous" if flagged else "normal" if flagged is not None else "no threshold"
    return _emit(args, summary, f"{out}: score {result.score:.4g} ({state})")


# --------------------------------------------------------------------------- energies, training


def _energies(args: argparse.Namespace, settings: Settings) -> int:
    from model.evaluation import plots

    plots.figure_format(args.out)
    loaded = _load(args.model, args.registry, settings)
    det = loaded.detector
    threshold = plots.detector_threshold(det)
    scores = labels = None
    test_name: str | None = None
    if args.test is not None:
        windows, labels, test_name = _test_set(args.test, args.train, loaded.metadata)
        scores = plots.score_in_chunks(det, windows, label="score", progress=Progress)
    train, scored, scored_name, labels = plots.energy_sources(det, scores, labels)
    if train is None:
        raise DataError(
            "the model stores no training energies: pass --test FILE.tsv to plot scores"
        )
    held_out = scored_name == "held-out normal"
    name = test_name or ("held-out normals" if held_out else "-")
    label = f"{loaded.label}" + (f" · {args.title}" if args.title else "")
    fig = plots.plot_energies(
        train, scored, threshold=threshold, labels=labels, label=label, scored_name=scored_name
    )
    out = plots.save_figure(fig, args.out)
    summary: dict[str, Any] = {"out": str(out), "scored": name, "threshold": threshold}
    if scored is not None:
        s = np.asarray(scored, dtype=np.float64)
        summary["n_scored"] = int(s.size)
        if threshold is not None:
            summary["n_above_threshold"] = int(np.sum(s > threshold))
    return _emit(args, summary, f"{out}: energies of {name}")


def _training(args: argparse.Namespace, settings: Settings) -> int:
    from model.evaluation import plots

    plots.figure_format(args.out)
    loaded = _load(args.model, args.registry, settings)
    history = getattr(loaded.detector, "history", None) or loaded.metadata.get("history") or []
    best = (loaded.metadata.get("training_data") or {}).get("best_epoch")
    label = loaded.label + (f" · {args.title}" if args.title else "")
    fig = plots.plot_training(
        history, best_epoch=best if isinstance(best, int) else None, label=label
    )
    out = plots.save_figure(fig, args.out)
    summary = {
        "out": str(out),
        "epochs": len(history),
        "panels": list(plots.training_groups(history)),
    }
    return _emit(args, summary, f"{out}: {len(history)} epochs")


# --------------------------------------------------------------------------- report


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from model.evaluation.report import build_report, write_report

    if (args.model_dir is None) == (args.registry is None):
        raise ConfigError("report needs exactly one of MODEL_DIR or --registry NAME[:VERSION]")
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"the report is HTML: name the output *.html, not {args.out.name}")
    loaded = _load(args.model_dir, args.registry, settings)
    windows = labels = None
    test_name = None
    if args.test is not None:
        windows, labels, test_name = _test_set(args.test, args.train, loaded.metadata)
    page = build_report(
        (loaded.metadata, loaded.detector),
        test_windows=windows,
        test_labels=labels,
        progress=Progress,
        test_name=test_name,
        label=args.title or f"{loaded.metadata.get('kind', 'model')} {loaded.label}",
    )
    out = write_report(args.out, page)
    summary = {"out": str(out), "bytes": len(page.encode()), "test": test_name}
    return _emit(args, summary, f"wrote {out} ({len(page.encode()) / 1024:.0f} KiB)")
