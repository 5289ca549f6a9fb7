"""One self-contained HTML page describing a model version (``seq2gmm report``).

The page embeds everything it shows: CSS in a ``<style>`` element, figures as base64 PNG
``data:`` URIs; it references no other file and loads nothing from the network, so it can be
mailed, attached to a ticket or archived as it is. Every string from the checkpoint's metadata
is HTML-escaped.

Sections: summary (kind, window, threshold), training data, metrics (stored, plus ROC/PR on a
labelled test set when one is given), threshold and training-energy quantiles, training curves,
energy histogram, example windows (from the test set, else from the training source file when
it is still readable, else none).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model.errors import DataError, Seq2GMMError
from model.evaluation import plots
from model.evaluation.metrics import pr_auc, precision_recall_f1, roc_auc
from model.thresholds import EnergyQuantiles

MAX_SOURCE_WINDOWS = 64  # training-source windows scored for the examples
EXAMPLES_K = 3
_QUANTILE_LEVELS = (0.0, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.9, 100.0)

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d1d1f;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:1.5rem 2rem 3rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.3rem}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #e5e5e5;background:#fff;margin:.5rem 0}
pre{background:#f4f4f4;padding:.7rem;overflow:auto;font-size:.8rem;max-height:30rem}
.note{color:#666;font-size:.85rem}.bad{color:#b00020;font-weight:600}
details summary{cursor:pointer;color:#0b57d0}
"""


# --------------------------------------------------------------------------- HTML helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _value(value: Any) -> str:
    """A metadata value as escaped HTML text (numbers rounded, containers as JSON)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _e(f"{value:.6g}") if math.isfinite(value) else _e(value)
    if isinstance(value, dict | list | tuple):
        return f"<code>{_e(json.dumps(value, sort_keys=True, default=str))}</code>"
    return _e(value)


def _table(rows: Sequence[tuple[Any, Any]], header: tuple[str, str] | None = None) -> str:
    head = f"<tr><th>{_e(header[0])}</th><th>{_e(header[1])}</th></tr>" if header else ""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_value(v)}</td></tr>" for k, v in rows)
    return f"<table>{head}{body}</table>"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _img(fig: Any, alt: str) -> str:
    data = base64.b64encode(plots.figure_bytes(fig, "png")).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# --------------------------------------------------------------------------- model sources


def load_model(model_dir: str | Path) -> tuple[dict[str, Any], Any]:
    """(metadata, detector) of a checkpoint directory."""
    from model.checkpoint import METADATA_FILE, load_checkpoint

    detector = load_checkpoint(model_dir)
    metadata = json.loads((Path(model_dir) / METADATA_FILE).read_text(encoding="utf-8"))
    return metadata, detector


def source_windows(
    metadata: Mapping[str, Any], limit: int = MAX_SOURCE_WINDOWS
) -> tuple[list[np.ndarray], str] | None:
    """Up to ``limit`` windows of the model's training source, with a description; None when
    the source is not a readable file (moved, another machine) or not a known format."""
    from model.evaluation.data import load_series_csv, load_ucr, sliding_windows, ucr_windows

    data = metadata.get("training_data") or {}
    source, fmt = data.get("source"), data.get("format")
    if fmt == "synthetic":
        from model.evaluation.synthetic import synthetic_training_windows

        length = int(data.get("period") or metadata.get("window_length") or 64)
        windows = synthetic_training_windows(length, int(data.get("seed") or 0))[:limit]
        return windows, f"synthetic training data (period {length})"
    if not isinstance(source, str) or not Path(source).is_file():
        return None
    try:
        if fmt == "ucr":
            labels, x = load_ucr(source)
            normal = data.get("normal_label")
            rows = [
                w
                for w, lab in zip(ucr_windows(x), labels, strict=True)
                if normal is None or lab == normal
            ]
            what = f"normal-class rows of {Path(source).name}" if normal is not None else "rows"
            return rows[:limit], f"the first {min(limit, len(rows))} {what}"
        if fmt == "csv":
            win = metadata.get("window_length")
            if not win:
                return None
            hop = int(metadata.get("hop") or win)
            series = load_series_csv(source)
            w = sliding_windows(series.values, int(win), hop)
            return list(w.windows[:limit]), f"the first windows of {Path(source).name}"
    except Seq2GMMError:
        return None
    return None


def _label(metadata: Mapping[str, Any], label: str | None) -> str:
    if label:
        return label
    data = metadata.get("training_data") or {}
    source = data.get("source")
    name = Path(source).name if isinstance(source, str) and source else "model"
    return f"{metadata.get('kind', 'model')} trained on {name}"


# --------------------------------------------------------------------------- sections


def _summary(metadata: Mapping[str, Any], detector: Any) -> str:
    thr = metadata.get("threshold") or {}
    rows: list[tuple[str, Any]] = [
        ("detector kind", metadata.get("kind")),
        ("package version", metadata.get("package_version")),
        ("checkpoint format", f"{metadata.get('format')} v{metadata.get('format_version')}"),
        ("window length", metadata.get("window_length") or "variable (row data)"),
        ("hop", metadata.get("hop") or "– (one window per row)"),
        ("features", metadata.get("n_features")),
        ("threshold", thr.get("value")),
        ("threshold method", f"{thr.get('method')} = {thr.get('parameter')}" if thr else None),
        ("weights sha256", metadata.get("weights_sha256")),
        ("weights size", f"{metadata.get('weights_bytes')} bytes"),
    ]
    if not thr:
        rows[6] = ("threshold", "none set: the model cannot flag windows")
    return _table(rows)


def _quantile_section(metadata: Mapping[str, Any], detector: Any) -> str:
    q = getattr(detector, "quantiles", None)
    thr = plots.detector_threshold(detector)
    parts: list[str] = []
    thr_meta = metadata.get("threshold") or {}
    if thr is not None:
        rows: list[tuple[str, Any]] = [
            ("value", thr),
            ("method", thr_meta.get("method")),
            ("parameter", thr_meta.get("parameter")),
            ("reference (held-out normal) scores", thr_meta.get("n_reference")),
        ]
        if isinstance(q, EnergyQuantiles):
            rows.append(("percentile among training scores", q.percentile(thr)))
        parts.append(_table(rows))
    else:
        parts.append(_note("No threshold: scores are reported but nothing is flagged."))
    if isinstance(q, EnergyQuantiles):
        levels = np.array(_QUANTILE_LEVELS)
        values = np.interp(levels, np.linspace(0.0, 100.0, q.values.size), q.values)
        head = "<tr><th>percentile</th>" + "".join(f"<th>{lv:g}</th>" for lv in levels) + "</tr>"
        row = (
            "<tr><th>training window energy</th>"
            + "".join(f'<td class="num">{_e(f"{v:.4g}")}</td>' for v in values)
            + "</tr>"
        )
        parts.append(f"<table>{head}{row}</table>")
        parts.append(_note(f"Quantiles of {q.n_reference} training window scores."))
    return "".join(parts)


def _test_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float | None) -> str:
    rows: list[tuple[str, Any]] = [
        ("test windows", int(labels.size)),
        ("anomalous", int(labels.sum())),
        ("ROC AUC", roc_auc(labels, scores)),
        ("PR AUC (average precision)", pr_auc(labels, scores)),
    ]
    if threshold is not None:
        prf = precision_recall_f1(labels, scores, threshold)
        rows += [
            ("precision at threshold", prf.precision),
            ("recall at threshold", prf.recall),
            ("F1 at threshold", prf.f1),
            ("flagged (tp / fp / fn)", f"{prf.tp} / {prf.fp} / {prf.fn}"),
        ]
    return _table(rows)


def _training_data(metadata: Mapping[str, Any]) -> str:
    data = metadata.get("training_data") or {}
    return _table(_flatten(data)) if data else _note("The checkpoint records no training data.")


def _configuration(metadata: Mapping[str, Any]) -> str:
    config = metadata.get("config") or {}
    return (
        (_table(_flatten(config)) if isinstance(config, Mapping) else "")
        + f"<details><summary>as JSON</summary><pre>"
        f"{_e(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre></details>"
    )


def _score_test_set(
    detector: Any,
    test_windows: Sequence[np.ndarray] | None,
    test_labels: np.ndarray | Sequence[int] | None,
    progress: plots.ProgressFactory | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(scores, labels) of the test set; None for what was not given."""
    if test_windows is None or not len(test_windows):
        return None, None
    scores = plots.score_in_chunks(detector, test_windows, label="score test", progress=progress)
    if test_labels is None:
        return scores, None
    labels = np.asarray(test_labels).ravel()
    if labels.size != len(test_windows):
        raise DataError(f"{len(test_windows)} test windows but {labels.size} test labels")
    return scores, labels


def _metrics(
    metadata: Mapping[str, Any],
    scores: np.ndarray | None,
    labels: np.ndarray | None,
    threshold: float | None,
    test_name: str | None,
) -> str:
    """The stored metrics, then the labelled test set's (with its ROC/PR curves)."""
    parts: list[str] = []
    stored = metadata.get("metrics") or {}
    if stored:
        parts.append(_table(_flatten(stored)))
    if scores is not None and labels is not None and np.unique(labels).size == 2:
        what = f"on {test_name}" if test_name else "on the test set"
        parts.append(f"<h3>Test metrics {_e(what)}</h3>")
        parts.append(_test_metrics(labels, scores, threshold))
        parts.append(
            _img(plots.plot_roc_pr(labels, scores, threshold=threshold), "ROC and PR curves")
        )
    if not parts:
        parts.append(
            _note("No stored metrics; pass a labelled test file (--test) to compute them.")
        )
    return "".join(parts)


def _training_curves(metadata: Mapping[str, Any], detector: Any) -> str:
    history = getattr(detector, "history", None) or metadata.get("history") or []
    if not history:
        return _note("The checkpoint holds no training history.")
    data = metadata.get("training_data") or {}
    best = data.get("best_epoch")
    fig = plots.plot_training(history, best_epoch=best if isinstance(best, int) else None)
    body = _img(fig, "training curves")
    return body + _note(
        f"{len(history)} epochs; stopped early: {_value(data.get('stopped_early'))}."
    )


def _energy_histogram(
    detector: Any, scores: np.ndarray | None, labels: np.ndarray | None, threshold: float | None
) -> str | None:
    """Training quantiles vs the test scores, else vs held-out normals (None: no energies)."""
    train, scored, scored_name, scored_labels = plots.energy_sources(detector, scores, labels)
    if train is None:
        return None
    fig = plots.plot_energies(
        train, scored, threshold=threshold, labels=scored_labels, scored_name=scored_name
    )
    return _img(fig, "energy histogram")


def _examples(
    metadata: Mapping[str, Any],
    detector: Any,
    test_windows: Sequence[np.ndarray] | None,
    scores: np.ndarray | None,
    labels: np.ndarray | None,
    threshold: float | None,
    progress: plots.ProgressFactory | None,
) -> str:
    if test_windows is not None and scores is not None and len(test_windows):
        windows, what, ex_labels = list(test_windows), "test windows", labels
    else:
        found = source_windows(metadata)
        if found is None or not found[0]:
            return _note(
                "No windows to show: the training source is not a readable file here; pass a"
                " test file (--test) to see example windows."
            )
        windows, what = found
        ex_labels = None
        try:
            scores = plots.score_in_chunks(
                detector, windows, label="score examples", progress=progress
            )
        except Seq2GMMError as exc:
            return _note(f"The training windows could not be scored: {exc}")
    assert scores is not None
    grid, top_window = plots.example_figures(
        detector,
        windows,
        scores,
        ex_labels,
        EXAMPLES_K,
        threshold=threshold,
        top_title=lambda i: f"most anomalous of the {what} (#{i})",
    )
    body = _note(f"From {what}: the most anomalous (top row) and least anomalous (bottom row).")
    body += _img(grid, "example windows")
    if top_window is not None:
        body += _img(top_window, "the most anomalous window")
    return body


# --------------------------------------------------------------------------- the page


def build_report(
    model: str | Path | tuple[Mapping[str, Any], Any],
    *,
    test_windows: Sequence[np.ndarray] | None = None,
    test_labels: np.ndarray | Sequence[int] | None = None,
    test_name: str | None = None,
    label: str | None = None,
    progress: plots.ProgressFactory | None = None,
) -> str:
    """The HTML page of a model version.

    ``model``: a checkpoint directory, or ``(metadata, detector)`` (e.g. from the registry).
    ``test_windows`` (and ``test_labels``, 0 normal / 1 anomalous): scored for the metrics,
    the ROC/PR curves, the energy histogram and the example windows. ``progress``: see
    :func:`model.evaluation.plots.score_in_chunks`.
    """
    if isinstance(model, tuple):
        metadata, detector = dict(model[0]), model[1]
    else:
        metadata, detector = load_model(model)
    threshold = plots.detector_threshold(detector)
    scores, labels = _score_test_set(detector, test_windows, test_labels, progress)
    sections = [
        _section("Summary", _summary(metadata, detector)),
        _section("Training data", _training_data(metadata)),
        _section("Configuration", _configuration(metadata)),
        _section("Metrics", _metrics(metadata, scores, labels, threshold, test_name)),
        _section("Threshold and training energies", _quantile_section(metadata, detector)),
        _section("Training curves", _training_curves(metadata, detector)),
    ]
    histogram = _energy_histogram(detector, scores, labels, threshold)
    if histogram is not None:
        sections.append(_section("Energy histogram", histogram))
    examples = _examples(metadata, detector, test_windows, scores, labels, threshold, progress)
    sections.append(_section("Example windows", examples))
    return _page(_label(metadata, label), sections)


def _page(title: str, sections: list[str]) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f'<h1>{_e(title)}</h1><p class="sub">model report generated {_e(generated)}</p>'
        + "".join(sections)
        + "</main></body></html>\n"
    )


def write_report(path: str | Path, page: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(page, encoding="utf-8")
    return p


__all__ = ["build_report", "load_model", "source_windows", "write_report"]
