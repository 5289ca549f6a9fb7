"""Training curves: every numeric key of a model's training history, one panel a quantity."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from model.errors import DataError
from model.evaluation.plots.figures import new_figure, titled

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_GROUP_ORDER = ("loss", "recon", "energy", "em_log_likelihood", "em_iterations", "seconds")
_GROUP_TITLES = {
    "loss": "loss (reconstruction + weighted energy)",
    "recon": "reconstruction loss",
    "energy": "mean energy",
    "em_log_likelihood": "EM log-likelihood",
    "em_iterations": "EM iterations",
    "seconds": "seconds per epoch",
}
_MARKED_EPOCHS = 30  # shorter histories get a marker on every epoch


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


def _draw_group(
    ax: Axes,
    history: Sequence[Mapping[str, Any]],
    epochs: np.ndarray,
    keys: list[str],
) -> None:
    """The curves of one panel (training solid, validation dashed), log y when they span
    decades."""
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
            marker="." if len(history) <= _MARKED_EPOCHS else None,
            label="validation" if is_val else "training" if len(keys) > 1 else key,
        )
        if positive and finite.size and finite.max() / finite.min() > 100:
            ax.set_yscale("log")


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
    kept = best_epoch if best_epoch is not None and best_epoch >= 0 else None
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = new_figure(4.2 * ncols, 2.9 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (group, keys) in zip(axes.flat, groups.items(), strict=False):
        _draw_group(ax, history, epochs, keys)
        if kept is not None:
            ax.axvline(kept, color="0.4", ls=":", lw=1)
        ax.set_title(_GROUP_TITLES.get(group, group), fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    head = titled("training history", label)
    if kept is not None:
        head += f"  (kept epoch {kept}, dotted)"
    fig.suptitle(head, fontsize=11)
    return fig
