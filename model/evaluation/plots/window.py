"""Figures that show what a model flagged and why (matplotlib, in the optional ``plots`` extra).

Every builder returns a :class:`matplotlib.figure.Figure` made with the object API (never
``pyplot``), so building figures touches no global state: thread-safe and headless. Save one
with :func:`save_figure`; the file's suffix picks the format (``.png`` or ``.svg``).

- :func:`plot_window`: one window, its segments shaded by energy, the ones above the threshold
  hatched, the reconstruction dashed when given;
- :func:`plot_energies`: histogram of training vs scored window energies with the threshold;
- :func:`plot_training`: the loss curves of a model's training history;
- :func:`plot_roc_pr`: ROC and precision-recall curves with their AUCs;
- :func:`plot_examples`: the most and least anomalous windows of a test set;
- :func:`write_evaluation_plots`: all of the above for one evaluation, into a directory.

matplotlib is imported lazily; without it every builder raises :class:`PlotsUnavailableError`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from model.base import WindowScore
from model.errors import DataError, Seq2GMMError
from model.evaluation.metrics import binary_curve, pr_auc, precision_recall_f1, roc_auc
from model.thresholds import EnergyQuantiles

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure

INSTALL_HINT = "plots need matplotlib: pip install 'seq2gmm-worker[plots]'"
FORMATS = ("png", "svg")
DPI = 100
CMAP = "YlOrRd"
SCORE_CHUNK = 256  # windows per score call when scoring many windows
_MAX_LEGEND_FEATURES = 8


class PlotsUnavailableError(Seq2GMMError):
    """matplotlib is not installed (it comes with the ``plots`` extra)."""


# --------------------------------------------------------------------------- infrastructure


class _Bar(Protocol):
    def update(self, n: int = 1) -> None: ...


#: ``progress(total, label)`` -> a context manager whose ``update(n)`` counts done items
ProgressFactory = Callable[[int, str], AbstractContextManager[_Bar]]


class _NoProgress:
    def __init__(self, total: int, label: str) -> None:
        del total, label

    def update(self, n: int = 1) -> None:
        del n

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _figure(width: float, height: float) -> Figure:
    """A new Figure, not registered with pyplot (no global state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotsUnavailableError(INSTALL_HINT) from None
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _colors() -> tuple[Any, Any]:
    try:
        from matplotlib import colormaps, colors
    except ImportError:
        raise PlotsUnavailableError(INSTALL_HINT) from None
    return colormaps[CMAP], colors


def figure_format(path: str | Path) -> str:
    """``"png"`` or ``"svg"`` from the file's suffix; DataError for anything else."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise DataError(f"cannot tell the image format of {path}: name the file *.png or *.svg")
    return fmt


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix; parent folders are created)."""
    p = Path(path)
    fmt = figure_format(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    # no creation date in the file: the same figure gives the same bytes
    metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
    fig.savefig(p, format=fmt, dpi=DPI, metadata=metadata)
    return p


def figure_bytes(fig: Figure, fmt: str = "png") -> bytes:
    """The encoded image of ``fig`` (``png`` or ``svg``)."""
    if fmt not in FORMATS:
        raise DataError(f"unknown image format {fmt!r}: use one of {', '.join(FORMATS)}")
    buf = io.BytesIO()
    metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=metadata)
    return buf.getvalue()


def _as_2d(window: np.ndarray) -> np.ndarray:
    w = np.asarray(window, dtype=np.float64)
    if w.ndim == 1:
        w = w[:, None]
    if w.ndim != 2 or w.shape[0] == 0:
        raise DataError(f"a window must have shape (L,) or (L, F) with L >= 1, got {w.shape}")
    return w


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.4g}"


def score_in_chunks(
    detector: Any,
    windows: Sequence[np.ndarray],
    *,
    detailed: bool = False,
    label: str = "score",
    chunk: int = SCORE_CHUNK,
    progress: ProgressFactory | None = None,
) -> Any:
    """``detector.score`` (or ``score_detailed``) of many windows, a chunk at a time, reporting
    to ``progress(total, label)`` (e.g. the CLI's terminal bar) when given. Returns an (N,)
    array, or a list of WindowScore."""
    wins = list(windows)
    scores: list[float] = []
    details: list[WindowScore] = []
    with (progress or _NoProgress)(len(wins), label) as bar:
        for i in range(0, len(wins), chunk):
            part = wins[i : i + chunk]
            if detailed:
                details += detector.score_detailed(part)
            else:
                scores += np.asarray(detector.score(part), dtype=np.float64).tolist()
            bar.update(len(part))
    return details if detailed else np.asarray(scores, dtype=np.float64)


# --------------------------------------------------------------------------- one window


def _energy_norm(energies: np.ndarray, threshold: float | None) -> Normalize:
    """Colour scale of segment energies (and the threshold): logarithmic when they span
    decades, so one huge energy does not wash out the others."""
    _, colors = _colors()
    finite = energies[np.isfinite(energies)]
    vals = np.array(list(finite) + ([threshold] if threshold is not None else []), dtype=float)
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    scale, linthresh = _scale_for(vals)
    norm: Normalize
    if scale == "log":
        norm = colors.LogNorm(vmin=lo, vmax=hi)
    elif scale == "symlog":
        norm = colors.SymLogNorm(linthresh=linthresh, vmin=lo, vmax=hi, base=10)
    else:
        norm = colors.Normalize(vmin=lo, vmax=hi)
    return norm


def _draw_window(
    ax: Axes,
    window: np.ndarray,
    result: WindowScore | None,
    *,
    reconstruction: np.ndarray | None,
    threshold: float | None,
    norm: Normalize | None,
    cmap: Colormap | None,
    legend: bool,
    annotate: bool,
) -> None:
    """Samples, segment shading and (optionally) the reconstruction on one Axes."""
    w = _as_2d(window)
    n, f = w.shape
    x = np.arange(n)
    palette = [f"C{i % 10}" for i in range(f)]
    for j in range(f):
        name = f"feature {j}" if f > 1 else "samples"
        ax.plot(x, w[:, j], color=palette[j], lw=1.3, label=name, zorder=3)
    if reconstruction is not None:
        r = _as_2d(reconstruction)
        if r.shape == w.shape:
            for j in range(f):
                ax.plot(
                    x,
                    r[:, j],
                    color=palette[j],
                    lw=1.2,
                    ls="--",
                    alpha=0.9,
                    label="reconstruction" if j == 0 else None,
                    zorder=4,
                )
    if result is not None and norm is not None and cmap is not None:
        energies = np.asarray(result.segment_energies, dtype=np.float64)
        for k, (a, b) in enumerate(result.intervals):
            lo, hi = (a - 0.5, b + 0.5) if a == b else (float(a), float(b))
            e = float(energies[k]) if k < energies.size else math.nan
            color = cmap(norm(e)) if math.isfinite(e) else (0.7, 0.7, 0.7, 1.0)
            ax.axvspan(lo, hi, color=color, alpha=0.45, lw=0, zorder=1)
            above = threshold is not None and math.isfinite(e) and e > threshold
            if above:
                ax.axvspan(
                    lo,
                    hi,
                    fill=False,
                    hatch="//",
                    edgecolor=(0.86, 0.08, 0.24, 0.55),
                    lw=1.5,
                    zorder=2,
                )
            if annotate:
                tag = f"E={e:.3g}" + (" ▲" if k == result.top_segment else "")
                ax.text(
                    (lo + hi) / 2,
                    0.98 - 0.07 * (k % 2),
                    tag,
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="top",
                    fontsize=8,
                    color="crimson" if above else "black",
                    fontweight="bold" if above else "normal",
                    clip_on=True,
                    zorder=5,
                )
        for a, _ in result.intervals[1:]:
            ax.axvline(a, color="0.35", lw=0.6, ls=":", zorder=2)
    ax.set_xlim(-0.5, n - 0.5)
    ax.margins(y=0.15)
    if legend and (f <= _MAX_LEGEND_FEATURES or reconstruction is not None):
        ax.legend(loc="lower right", fontsize=8, framealpha=0.8)


def plot_window(
    window: np.ndarray,
    result: WindowScore | None,
    *,
    reconstruction: np.ndarray | None = None,
    threshold: float | None = None,
    title: str | None = None,
) -> Figure:
    """One window: each feature a line, segments shaded by energy (colour bar), segments with
    energy > ``threshold`` hatched with a red edge, ``reconstruction`` (L, F) dashed.

    ``title`` is added to the generated title (score, threshold, percentile, decision).
    ``result`` may be None (the samples only, e.g. a window the model could not score).
    """
    w = _as_2d(window)
    fig = _figure(10, 4.2)
    ax = fig.add_subplot()
    norm = cmap = None
    if result is not None:
        cmap, _ = _colors()
        norm = _energy_norm(np.asarray(result.segment_energies, dtype=np.float64), threshold)
    _draw_window(
        ax,
        w,
        result,
        reconstruction=reconstruction,
        threshold=threshold,
        norm=norm,
        cmap=cmap,
        legend=True,
        annotate=True,
    )
    ax.set_xlabel("sample in window")
    ax.set_ylabel("value")
    if result is not None and norm is not None:
        from matplotlib.cm import ScalarMappable

        cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
        cbar.set_label("segment energy")
        if threshold is not None:
            cbar.ax.axhline(threshold, color="crimson", lw=2)
            cbar.ax.text(
                -0.1,
                threshold,
                "thr",
                color="crimson",
                ha="right",
                va="center",
                fontsize=8,
                transform=cbar.ax.get_yaxis_transform(),
            )
    parts = []
    if result is not None:
        parts.append(f"score {_fmt(result.score)}")
        if threshold is not None:
            flagged = result.score > threshold
            parts.append(f"threshold {_fmt(threshold)}")
        else:
            flagged = bool(result.is_anomaly)
        pct = result.percentile
        parts.append(f"percentile {pct:.1f}" if pct is not None else "percentile n/a")
        if threshold is not None or result.is_anomaly is not None:
            parts.append("ANOMALOUS" if flagged else "normal")
    head = "  ·  ".join(parts) if parts else "window"
    fig.suptitle(head if not title else f"{title}\n{head}", fontsize=11)
    return fig


# --------------------------------------------------------------------------- energies


def _scale_for(values: np.ndarray) -> tuple[str, float]:
    """(scale, linthresh): "log" for positive values over more than two decades, "symlog"
    when a few values of any sign dwarf the typical one (linear within ``linthresh``),
    "linear" otherwise."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return "linear", 1.0
    lo, hi = float(v.min()), float(v.max())
    if lo > 0 and hi / lo > 100:
        return "log", 1.0
    mags = np.abs(v)
    typical = float(np.median(mags))
    linthresh = max(typical, 1e-6 * float(mags.max()), 1e-12)
    if float(mags.max()) / linthresh > 100:
        return "symlog", linthresh
    return "linear", 1.0


def _symlog(x: float, c: float) -> float:
    return math.copysign(math.log10(1.0 + abs(x) / c), x)


def _symlog_inv(y: np.ndarray, c: float) -> np.ndarray:
    return np.sign(y) * c * (10.0 ** np.abs(y) - 1.0)


def plot_energies(
    train: EnergyQuantiles | np.ndarray | Sequence[float],
    scored: np.ndarray | Sequence[float] | None = None,
    *,
    threshold: float | None = None,
    labels: np.ndarray | Sequence[int] | None = None,
    label: str | None = None,
    scored_name: str = "scored",
) -> Figure:
    """Histogram of training window energies vs ``scored`` ones, with the threshold.

    ``train``: the model's :class:`EnergyQuantiles` (their evenly spaced quantiles stand for
    the training distribution) or raw training scores. With ``labels`` (0/1 per scored
    window) normal and anomalous scored windows get their own histograms. ``label`` names the
    model version in the title. The x axis turns logarithmic when the energies span decades.
    """
    if isinstance(train, EnergyQuantiles):
        t = np.asarray(train.values, dtype=np.float64)
        n_train = train.n_reference
    else:
        t = np.asarray(train, dtype=np.float64).ravel()
        n_train = t.size
    t = t[np.isfinite(t)]
    s = np.asarray(scored, dtype=np.float64).ravel() if scored is not None else np.zeros(0)
    y = np.asarray(labels).ravel() if labels is not None else None
    if y is not None and y.shape != s.shape:
        raise DataError(f"labels and scored energies differ in length: {y.shape} vs {s.shape}")
    finite = np.isfinite(s)
    s_ok = s[finite]
    y_ok = y[finite] if y is not None else None
    if t.size == 0 and s_ok.size == 0:
        raise DataError("no finite energies to plot")
    everything = np.concatenate(
        [t, s_ok] + ([np.array([threshold])] if threshold is not None else [])
    )
    scale, linthresh = _scale_for(everything)
    lo, hi = float(everything.min()), float(everything.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    edges: np.ndarray
    if scale == "log":
        edges = np.geomspace(lo, hi, 51)
    elif scale == "symlog":
        edges = _symlog_inv(
            np.linspace(_symlog(lo, linthresh), _symlog(hi, linthresh), 51), linthresh
        )
        edges[0], edges[-1] = lo, hi
    else:
        edges = np.linspace(lo, hi, 51)
    bins = [float(b) for b in edges]

    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    if t.size:
        ax.hist(
            t,
            bins=bins,
            weights=np.full(t.size, 1.0 / t.size),
            color="0.6",
            alpha=0.6,
            label=f"training (n={n_train})",
        )
    groups: list[tuple[np.ndarray, str, str]] = []
    if s_ok.size and y_ok is not None:
        groups = [
            (s_ok[y_ok == 0], f"{scored_name} normal", "C0"),
            (s_ok[y_ok == 1], f"{scored_name} anomalous", "crimson"),
        ]
    elif s_ok.size:
        groups = [(s_ok, scored_name, "C0")]
    for values, name, color in groups:
        if values.size == 0:
            continue
        desc = f"{name} (n={values.size}"
        if threshold is not None:
            desc += f", {100 * float(np.mean(values > threshold)):.1f}% > thr"
        ax.hist(
            values,
            bins=bins,
            weights=np.full(values.size, 1.0 / values.size),
            histtype="step",
            lw=2,
            color=color,
            label=desc + ")",
        )
    if threshold is not None:
        ax.axvline(
            threshold, color="crimson", ls="--", lw=1.8, label=f"threshold {_fmt(threshold)}"
        )
    if scale == "log":
        ax.set_xscale("log")
    elif scale == "symlog":
        ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_xlim(bins[0], bins[-1])
    ax.set_xlabel("window energy (score)" + (f", {scale} scale" if scale != "linear" else ""))
    ax.set_ylabel("fraction of windows per bin")
    ax.legend(fontsize=8)
    if not finite.all():
        ax.text(
            0.01,
            0.98,
            f"{int((~finite).sum())} non-finite scores left out",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
        )
    fig.suptitle("window energies" + (f" — {label}" if label else ""), fontsize=11)
    return fig


# --------------------------------------------------------------------------- training


_GROUP_ORDER = ("loss", "recon", "energy", "em_log_likelihood", "em_iterations", "seconds")
_GROUP_TITLES = {
    "loss": "loss (reconstruction + weighted energy)",
    "recon": "reconstruction loss",
    "energy": "mean energy",
    "em_log_likelihood": "EM log-likelihood",
    "em_iterations": "EM iterations",
    "seconds": "seconds per epoch",
}


def training_groups(history: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """History keys grouped into panels: ``X`` and ``val_X`` share one; epoch is the x axis."""
    keys: list[str] = []
    for row in history:
        for k, v in row.items():
            if k == "epoch" or k in keys:
                continue
            if isinstance(v, int | float) and not isinstance(v, bool):
                keys.append(k)
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.removeprefix("val_"), []).append(k)
    for members in groups.values():
        members.sort(key=lambda k: k.startswith("val_"))
    order = {g: i for i, g in enumerate(_GROUP_ORDER)}
    return dict(sorted(groups.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def plot_training(
    history: Sequence[Mapping[str, Any]],
    *,
    best_epoch: int | None = None,
    label: str | None = None,
) -> Figure:
    """Every numeric key of a training history, one panel per quantity (training and
    ``val_`` curves together), against the epoch; ``best_epoch`` marked when given."""
    if not history:
        raise DataError(
            "the model has no training history (it was not trained by this package, or its"
            " checkpoint predates histories)"
        )
    groups = training_groups(history)
    if not groups:
        raise DataError("the training history holds no numeric values to plot")
    epochs = np.array(
        [float(row.get("epoch", i)) for i, row in enumerate(history)], dtype=np.float64
    )
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = _figure(4.2 * ncols, 2.9 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (group, keys) in zip(axes.flat, groups.items(), strict=False):
        positive = True
        for key in keys:
            vals = np.array(
                [
                    float(row[key]) if isinstance(row.get(key), int | float) else np.nan
                    for row in history
                ],
                dtype=np.float64,
            )
            finite = vals[np.isfinite(vals)]
            positive &= bool(finite.size) and bool(np.all(finite > 0))
            is_val = key.startswith("val_")
            ax.plot(
                epochs,
                vals,
                lw=1.5,
                ls="--" if is_val else "-",
                marker="." if len(history) <= 30 else None,
                label="validation" if is_val else "training" if len(keys) > 1 else key,
            )
            if positive and finite.size and finite.max() / finite.min() > 100:
                ax.set_yscale("log")
        if best_epoch is not None and best_epoch >= 0:
            ax.axvline(best_epoch, color="0.4", ls=":", lw=1)
        ax.set_title(_GROUP_TITLES.get(group, group), fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    head = "training history" + (f" — {label}" if label else "")
    if best_epoch is not None and best_epoch >= 0:
        head += f"  (kept epoch {best_epoch}, dotted)"
    fig.suptitle(head, fontsize=11)
    return fig


# --------------------------------------------------------------------------- ROC / PR


def plot_roc_pr(
    labels: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float],
    *,
    threshold: float | None = None,
    label: str | None = None,
) -> Figure:
    """ROC and precision-recall curves (AUCs in the legends); the operating point of
    ``score > threshold`` marked when given."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    auc_roc = roc_auc(y, s)  # checks shapes, labels and both classes
    auc_pr = pr_auc(y, s)
    fps, tps, _ = binary_curve(y, s)
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    prevalence = float(np.mean(y == 1))

    fig = _figure(10, 4.5)
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.plot(fpr, tpr, color="C0", lw=2, label=f"ROC AUC = {auc_roc:.4f}")
    ax_roc.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="chance")
    ax_roc.set_xlabel("false-positive rate")
    ax_roc.set_ylabel("true-positive rate (recall)")
    ax_roc.set_title("ROC", fontsize=10)
    ax_pr.plot(
        np.r_[0.0, recall],
        np.r_[precision[0], precision],
        color="C1",
        lw=2,
        drawstyle="steps-pre",
        label=f"PR AUC (AP) = {auc_pr:.4f}",
    )
    ax_pr.axhline(prevalence, color="0.6", ls=":", lw=1, label=f"chance ({prevalence:.3f})")
    ax_pr.set_xlabel("recall")
    ax_pr.set_ylabel("precision")
    ax_pr.set_title("precision-recall", fontsize=10)
    if threshold is not None:
        prf = precision_recall_f1(y, s, threshold)
        n_neg = int(np.sum(y == 0))
        op_fpr = prf.fp / n_neg if n_neg else 0.0
        desc = f"threshold {_fmt(threshold)} (F1 {prf.f1:.3f})"
        ax_roc.plot([op_fpr], [prf.recall], "o", color="crimson", label=desc)
        if prf.tp + prf.fp:
            ax_pr.plot([prf.recall], [prf.precision], "o", color="crimson", label=desc)
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is ax_roc else "best")
    n_pos = int(np.sum(y == 1))
    head = f"{len(y)} windows, {n_pos} anomalous" + (f" — {label}" if label else "")
    fig.suptitle(head, fontsize=11)
    return fig


# --------------------------------------------------------------------------- examples


def example_indices(scores: np.ndarray | Sequence[float], k: int) -> tuple[list[int], list[int]]:
    """Indices of the ``k`` highest and the ``k`` lowest scores (highest / lowest first);
    non-finite scores count as the most anomalous."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    key = np.where(np.isnan(s), np.inf, s)
    order = np.argsort(-key, kind="stable")
    k = max(0, min(k, s.size))
    return [int(i) for i in order[:k]], [int(i) for i in order[::-1][:k]]


def plot_examples(
    windows: Sequence[np.ndarray],
    scores: np.ndarray | Sequence[float],
    labels: np.ndarray | Sequence[int] | None = None,
    k: int = 3,
    *,
    details: Mapping[int, WindowScore] | None = None,
    threshold: float | None = None,
    label: str | None = None,
) -> Figure:
    """The ``k`` most anomalous (top row) and ``k`` least anomalous (bottom row) windows.

    ``details``: per window index, its :class:`WindowScore`; those windows get their segments
    shaded by energy (one colour scale for the whole grid) and the ones above ``threshold``
    hatched.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(windows) != s.size:
        raise DataError(f"{len(windows)} windows but {s.size} scores")
    if s.size == 0:
        raise DataError("no windows to show")
    y = np.asarray(labels).ravel() if labels is not None else None
    top, bottom = example_indices(s, k)
    k = len(top)
    norm = cmap = None
    if details:
        cmap, _ = _colors()
        shown = [details[i] for i in top + bottom if i in details]
        energies = (
            np.concatenate([np.asarray(d.segment_energies, dtype=np.float64) for d in shown])
            if shown
            else np.zeros(0)
        )
        norm = _energy_norm(energies, threshold)
    fig = _figure(3.6 * k, 5.6)
    axes = fig.subplots(2, k, squeeze=False)
    for row, (indices, name) in enumerate(((top, "most"), (bottom, "least"))):
        for col, i in enumerate(indices):
            ax = axes[row, col]
            _draw_window(
                ax,
                windows[i],
                details.get(i) if details else None,
                reconstruction=None,
                threshold=threshold,
                norm=norm,
                cmap=cmap,
                legend=False,
                annotate=False,
            )
            truth = ""
            if y is not None:
                truth = "  anomalous" if int(y[i]) == 1 else "  normal"
            flag = threshold is not None and math.isfinite(s[i]) and s[i] > threshold
            ax.set_title(
                f"#{i}  score {_fmt(float(s[i]))}{truth}",
                fontsize=9,
                color="crimson" if flag else "black",
            )
            ax.tick_params(labelsize=7)
            if col == 0:
                ax.set_ylabel(f"{name} anomalous", fontsize=9)
    if norm is not None:
        from matplotlib.cm import ScalarMappable

        cbar = fig.colorbar(
            ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), pad=0.01, shrink=0.9
        )
        cbar.set_label("segment energy")
        if threshold is not None:
            cbar.ax.axhline(threshold, color="crimson", lw=2)
    head = f"the {k} most and {k} least anomalous of {s.size} windows"
    if threshold is not None:
        head += f" (title red: score > threshold {_fmt(threshold)}; label = ground truth)"
    fig.suptitle(head + (f" — {label}" if label else ""), fontsize=10)
    return fig


# --------------------------------------------------------------------------- evaluation


def detector_threshold(detector: Any) -> float | None:
    """The detector's threshold value, or None when it has none (or no such notion)."""
    if detector is None or not getattr(detector, "has_threshold", False):
        return None
    return float(detector.threshold.value)


def detail_windows(
    detector: Any, windows: Sequence[np.ndarray], indices: Sequence[int]
) -> dict[int, WindowScore]:
    """``{index: WindowScore}`` of the chosen windows, when the detector can explain scores."""
    score_detailed = getattr(detector, "score_detailed", None)
    idx = sorted(set(indices))
    if score_detailed is None or not idx:
        return {}
    return dict(zip(idx, score_detailed([windows[i] for i in idx]), strict=True))


def reconstruction_of(detector: Any, window: np.ndarray) -> np.ndarray | None:
    """The detector's reconstruction (L, F) of one window, when it offers ``reconstruct``."""
    reconstruct = getattr(detector, "reconstruct", None)
    if reconstruct is None:
        return None
    out = reconstruct([window])
    return np.asarray(out[0], dtype=np.float64) if len(out) else None


def write_evaluation_plots(
    directory: str | Path,
    *,
    labels: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float],
    windows: Sequence[np.ndarray],
    detector: Any = None,
    threshold: float | None = None,
    fmt: str = "png",
    k: int = 3,
    label: str | None = None,
) -> list[Path]:
    """Write the plots of one evaluation into ``directory``; returns the files written.

    - ``roc_pr.<fmt>``: ROC and PR curves (skipped when ``labels`` hold only one class);
    - ``energies.<fmt>``: test scores (normal / anomalous) against the training energies
      (the detector's ``quantiles`` when it has them) with the threshold;
    - ``examples.<fmt>``: the ``k`` most and least anomalous test windows, segments shaded
      when the detector has ``score_detailed``;
    - ``top_window.<fmt>``: the most anomalous window in detail (with the reconstruction when
      the detector has ``reconstruct``), when the detector has ``score_detailed``.

    ``threshold`` defaults to the detector's.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown image format {fmt!r}: use one of {', '.join(FORMATS)}")
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not (y.size == s.size == len(windows)):
        raise DataError(f"{len(windows)} windows, {y.size} labels and {s.size} scores differ")
    if threshold is None:
        threshold = detector_threshold(detector)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        written.append(save_figure(fig, out / f"{name}.{fmt}"))

    if np.unique(y).size == 2:
        save(plot_roc_pr(y, s, threshold=threshold, label=label), "roc_pr")
    quantiles = getattr(detector, "quantiles", None)
    train: Any = quantiles if isinstance(quantiles, EnergyQuantiles) else s[y == 0]
    save(
        plot_energies(
            train,
            s,
            threshold=threshold,
            labels=y,
            label=label,
            scored_name="test",
        ),
        "energies",
    )
    top, bottom = example_indices(s, k)
    details = detail_windows(detector, windows, top + bottom)
    save(
        plot_examples(windows, s, y, k, details=details, threshold=threshold, label=label),
        "examples",
    )
    if top and top[0] in details:
        i = top[0]
        truth = "anomalous" if int(y[i]) == 1 else "normal"
        save(
            plot_window(
                windows[i],
                details[i],
                reconstruction=reconstruction_of(detector, windows[i]),
                threshold=threshold,
                title=f"most anomalous test window #{i} (ground truth: {truth})"
                + (f" — {label}" if label else ""),
            ),
            "top_window",
        )
    return written


__all__ = [
    "FORMATS",
    "INSTALL_HINT",
    "PlotsUnavailableError",
    "detail_windows",
    "detector_threshold",
    "example_indices",
    "figure_bytes",
    "figure_format",
    "plot_energies",
    "plot_examples",
    "plot_roc_pr",
    "plot_training",
    "plot_window",
    "reconstruction_of",
    "save_figure",
    "score_in_chunks",
    "training_groups",
    "write_evaluation_plots",
]
