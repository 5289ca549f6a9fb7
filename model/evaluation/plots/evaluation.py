"""Every plot of one evaluation, written into a directory (``seq2gmm evaluate --plots``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.errors import DataError
from model.evaluation.plots.energies import plot_energies
from model.evaluation.plots.examples import example_figures
from model.evaluation.plots.figures import check_format, save_figure, titled
from model.evaluation.plots.roc_pr import plot_roc_pr
from model.evaluation.plots.scoring import detector_threshold
from model.thresholds import EnergyQuantiles

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    check_format(fmt)
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
        plot_energies(train, s, threshold=threshold, labels=y, label=label, scored_name="test"),
        "energies",
    )

    def top_title(i: int) -> str:
        truth = "anomalous" if int(y[i]) == 1 else "normal"
        return titled(f"most anomalous test window #{i} (ground truth: {truth})", label)

    grid, top_window = example_figures(
        detector, windows, s, y, k, threshold=threshold, top_title=top_title, label=label
    )
    save(grid, "examples")
    if top_window is not None:
        save(top_window, "top_window")
    return written
