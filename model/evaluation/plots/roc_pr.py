"""ROC and precision-recall curves of labelled scores, with their AUCs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from model.evaluation.metrics import binary_curve, pr_auc, precision_recall_f1, roc_auc
from model.evaluation.plots.figures import new_figure, short_number, titled

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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

    fig = new_figure(10, 4.5)
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
        desc = f"threshold {short_number(threshold)} (F1 {prf.f1:.3f})"
        ax_roc.plot([op_fpr], [prf.recall], "o", color="crimson", label=desc)
        if prf.tp + prf.fp:
            ax_pr.plot([prf.recall], [prf.precision], "o", color="crimson", label=desc)
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is ax_roc else "best")
    n_pos = int(np.sum(y == 1))
    fig.suptitle(titled(f"{len(y)} windows, {n_pos} anomalous", label), fontsize=11)
    return fig
