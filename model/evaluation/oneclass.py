"""One evaluation harness for Seq2GMM and every baseline.

``evaluate`` trains a detector on the normal windows of a
:class:`~model.evaluation.data.OneClassSplit`, scores the test windows and reports ranking
metrics (ROC AUC, PR AUC) and the precision, recall and F1 of a threshold inferred from normal
reference scores only: the detector's own ``reference_scores`` when it has them (Seq2GMM's
held-out normals, k-NN's leave-one-out
distances), otherwise its scores of the training windows. The test set never sets the threshold.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from model.base import Detector
from model.errors import DataError, Seq2GMMError
from model.evaluation.data import OneClassSplit
from model.evaluation.metrics import pr_auc, precision_recall_f1, roc_auc
from model.thresholds import Threshold, infer_threshold


@dataclass(frozen=True)
class EvaluationReport:
    """Result of one :func:`evaluate` run (one detector, one split, one seed)."""

    detector: str  # the detector's kind
    dataset: str
    seed: int
    roc_auc: float
    pr_auc: float
    precision: float  # at ``threshold``
    recall: float
    f1: float
    threshold: Threshold
    threshold_reference: str  # "reference_scores" (held-out / leave-one-out) or "train_scores"
    n_train: int
    n_test: int
    n_anomalous: int
    train_seconds: float
    score_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (the threshold as a nested dict)."""
        out = asdict(self)
        out["threshold"] = self.threshold.to_dict()
        return out


def reference_scores(detector: Detector, train: list[np.ndarray]) -> tuple[np.ndarray, str]:
    """Normal scores to infer a threshold from, and where they came from.

    A fitted detector's ``reference_scores`` attribute (out-of-sample scores of normal
    windows) when it has one, else the detector's scores of its own training windows.
    """
    ref = getattr(detector, "reference_scores", None)
    if ref is not None:
        arr = np.asarray(ref, dtype=np.float64)
        if arr.size:
            return arr, "reference_scores"
    return np.asarray(detector.score(train), dtype=np.float64), "train_scores"


def evaluate(
    detector: Detector,
    split: OneClassSplit,
    *,
    seed: int,
    threshold_fpr: float = 0.05,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> EvaluationReport:
    """Fit ``detector`` on ``split.train`` (seeded), score ``split.test``, report metrics.

    The threshold is ``infer_threshold(normal reference scores, fpr=threshold_fpr)``; see
    :func:`reference_scores`. ``on_epoch`` is passed to ``fit`` when the detector takes it.
    """
    if not split.train or not split.test:
        raise DataError("the split needs training and test windows")
    t0 = time.perf_counter()
    if on_epoch is not None and "on_epoch" in inspect.signature(detector.fit).parameters:
        detector.fit(split.train, seed=seed, on_epoch=on_epoch)  # type: ignore[call-arg]
    else:
        detector.fit(split.train, seed=seed)
    train_seconds = time.perf_counter() - t0
    ref, source = reference_scores(detector, split.train)
    threshold = infer_threshold(ref, fpr=threshold_fpr)
    return score_split(
        detector,
        split,
        threshold,
        seed=seed,
        threshold_reference=source,
        train_seconds=train_seconds,
    )


def score_split(
    detector: Detector,
    split: OneClassSplit,
    threshold: Threshold,
    *,
    seed: int,
    threshold_reference: str,
    train_seconds: float = 0.0,
) -> EvaluationReport:
    """Score ``split.test`` with an already fitted detector and report the metrics at
    ``threshold`` (how ``seq2gmm evaluate --model DIR`` scores a trained model)."""
    t0 = time.perf_counter()
    scores = np.asarray(detector.score(split.test), dtype=np.float64)
    score_seconds = time.perf_counter() - t0
    if scores.shape != (len(split.test),):
        raise Seq2GMMError(
            f"{detector.kind} returned scores of shape {scores.shape} for {len(split.test)}"
            " windows; a detector must return one score per window"
        )
    prf = precision_recall_f1(split.test_labels, scores, threshold.value)
    return EvaluationReport(
        detector=detector.kind,
        dataset=split.name,
        seed=seed,
        roc_auc=roc_auc(split.test_labels, scores),
        pr_auc=pr_auc(split.test_labels, scores),
        precision=prf.precision,
        recall=prf.recall,
        f1=prf.f1,
        threshold=threshold,
        threshold_reference=threshold_reference,
        n_train=len(split.train),
        n_test=len(split.test),
        n_anomalous=split.n_anomalous,
        train_seconds=train_seconds,
        score_seconds=score_seconds,
    )
