"""Figures that show what a model flagged and why (matplotlib, in the optional ``plots`` extra).

Every builder returns a :class:`matplotlib.figure.Figure` made with the object API (never
``pyplot``), so building figures touches no global state: thread-safe and headless. Save one
with :func:`save_figure`; the file's suffix picks the format (``.png`` or ``.svg``).

- :func:`plot_window` (:mod:`.window`): one window, its segments shaded by energy, the ones
  above the threshold hatched, the reconstruction dashed when given;
- :func:`plot_energies` (:mod:`.energies`): histogram of training vs scored window energies
  with the threshold;
- :func:`plot_training` (:mod:`.training`): the loss curves of a model's training history;
- :func:`plot_roc_pr` (:mod:`.roc_pr`): ROC and precision-recall curves with their AUCs;
- :func:`plot_examples` (:mod:`.examples`): the most and least anomalous windows of a test set;
- :func:`write_evaluation_plots` (:mod:`.evaluation`): all of the above for one evaluation,
  into a directory.

:mod:`.figures` holds what they share (saving, formats), :mod:`.scales` the log / symlog
scales of energies that span decades, :mod:`.scoring` what they ask of a detector.
matplotlib is imported lazily; without it every builder raises :class:`PlotsUnavailableError`.
"""

from model.evaluation.plots.energies import EnergySources, energy_sources, plot_energies
from model.evaluation.plots.evaluation import write_evaluation_plots
from model.evaluation.plots.examples import example_figures, example_indices, plot_examples
from model.evaluation.plots.figures import (
    FORMATS,
    INSTALL_HINT,
    PlotsUnavailableError,
    figure_bytes,
    figure_format,
    save_figure,
)
from model.evaluation.plots.roc_pr import plot_roc_pr
from model.evaluation.plots.scoring import (
    ProgressFactory,
    detail_windows,
    detector_threshold,
    reconstruction_of,
    score_in_chunks,
)
from model.evaluation.plots.training import plot_training, training_groups
from model.evaluation.plots.window import plot_window

__all__ = [
    "FORMATS",
    "INSTALL_HINT",
    "EnergySources",
    "PlotsUnavailableError",
    "ProgressFactory",
    "detail_windows",
    "detector_threshold",
    "energy_sources",
    "example_figures",
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
