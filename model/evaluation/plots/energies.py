"""The energy histogram: training window energies vs scored ones, with the threshold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from model.errors import DataError
from model.evaluation.plots.figures import new_figure, short_number, titled
from model.evaluation.plots.scales import histogram_bins
from model.thresholds import EnergyQuantiles

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


class EnergySources(NamedTuple):
    """What a detector's energy histogram shows (the arguments of :func:`plot_energies`)."""

    train: EnergyQuantiles | np.ndarray | None  # None: the detector holds no energies at all
    scored: np.ndarray | None
    scored_name: str
    labels: np.ndarray | None


def energy_sources(
    detector: Any, scores: np.ndarray | None = None, labels: np.ndarray | None = None
) -> EnergySources:
    """The detector's training quantiles against ``scores`` (named "test", with their
    ``labels``) when given, else against its held-out normal reference scores. Without
    quantiles the scored energies stand for the training ones (and nothing is scored)."""
    quantiles = getattr(detector, "quantiles", None)
    train: Any = quantiles if isinstance(quantiles, EnergyQuantiles) else None
    reference = getattr(detector, "reference_scores", None)
    scored: np.ndarray | None
    if scores is not None:
        scored, scored_name = scores, "test"
    elif reference is not None and np.size(reference):
        scored, scored_name, labels = np.asarray(reference), "held-out normal", None
    else:
        scored, scored_name, labels = None, "scored", None
    if train is None and scored is not None:
        train, scored = scored, None
    return EnergySources(train, scored, scored_name, labels)


def _training_energies(
    train: EnergyQuantiles | np.ndarray | Sequence[float],
) -> tuple[np.ndarray, int]:
    """(finite training energies, how many training windows they stand for)."""
    if isinstance(train, EnergyQuantiles):
        t = np.asarray(train.values, dtype=np.float64)
        n_train = train.n_reference
    else:
        t = np.asarray(train, dtype=np.float64).ravel()
        n_train = t.size
    return t[np.isfinite(t)], n_train


def _scored_groups(
    scored: np.ndarray, labels: np.ndarray | None, scored_name: str
) -> list[tuple[np.ndarray, str, str]]:
    """(energies, legend name, colour) of each scored histogram: normal and anomalous apart
    when there are labels."""
    if scored.size and labels is not None:
        return [
            (scored[labels == 0], f"{scored_name} normal", "C0"),
            (scored[labels == 1], f"{scored_name} anomalous", "crimson"),
        ]
    if scored.size:
        return [(scored, scored_name, "C0")]
    return []


def _fraction_hist(ax: Axes, values: np.ndarray, bins: list[float], **style: Any) -> None:
    """A histogram of ``values`` whose bars are fractions of them (so sets of any size compare)."""
    ax.hist(values, bins=bins, weights=np.full(values.size, 1.0 / values.size), **style)


def _draw_histograms(
    ax: Axes,
    train: np.ndarray,
    n_train: int,
    groups: list[tuple[np.ndarray, str, str]],
    bins: list[float],
    threshold: float | None,
) -> None:
    """The training histogram filled, each scored group as a step outline, the threshold
    dashed; every histogram normalised to fractions of its windows."""
    if train.size:
        _fraction_hist(ax, train, bins, color="0.6", alpha=0.6, label=f"training (n={n_train})")
    for values, name, color in groups:
        if values.size == 0:
            continue
        desc = f"{name} (n={values.size}"
        if threshold is not None:
            desc += f", {100 * float(np.mean(values > threshold)):.1f}% > thr"
        _fraction_hist(ax, values, bins, histtype="step", lw=2, color=color, label=desc + ")")
    if threshold is not None:
        ax.axvline(
            threshold,
            color="crimson",
            ls="--",
            lw=1.8,
            label=f"threshold {short_number(threshold)}",
        )


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
    t, n_train = _training_energies(train)
    s = np.asarray(scored, dtype=np.float64).ravel() if scored is not None else np.zeros(0)
    y = np.asarray(labels).ravel() if labels is not None else None
    if y is not None and y.shape != s.shape:
        raise DataError(f"labels and scored energies differ in length: {y.shape} vs {s.shape}")
    finite = np.isfinite(s)
    s_ok = s[finite]
    if t.size == 0 and s_ok.size == 0:
        raise DataError("no finite energies to plot")
    everything = np.concatenate(
        [t, s_ok] + ([np.array([threshold])] if threshold is not None else [])
    )
    scale, linthresh, bins = histogram_bins(everything)

    fig = new_figure(9, 4.5)
    ax = fig.add_subplot()
    groups = _scored_groups(s_ok, y[finite] if y is not None else None, scored_name)
    _draw_histograms(ax, t, n_train, groups, bins, threshold)
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
    fig.suptitle(titled("window energies", label), fontsize=11)
    return fig
