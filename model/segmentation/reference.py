"""The reference implementation's cached TwoLeadECG segmentation (see shared/data README):
its training and test rows, labels and breakpoints, to score exactly what the reference scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.errors import DataError
from model.segmentation.base import Segmentation, reference_cuts


@dataclass(frozen=True)
class ReferenceSegmentation:
    """The reference implementation's cached TwoLeadECG segmentation (see shared/data README)."""

    train_rows: np.ndarray
    test_rows: np.ndarray
    test_labels: np.ndarray
    train_cuts: np.ndarray  # (N_train, 2) inner breakpoints b1, b2
    test_cuts: np.ndarray  # (N_test, 2)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceSegmentation:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"reference segmentation file not found: {p}")
        with np.load(p, allow_pickle=False) as z:
            return cls(
                train_rows=z["train_rows"],
                test_rows=z["test_rows"],
                test_labels=z["test_labels"],
                train_cuts=z["train_cuts"],
                test_cuts=z["test_cuts"],
            )


@dataclass(frozen=True)
class ReferenceSplit:
    """TwoLeadECG exactly as the reference scored it: its rows, labels and cached cuts."""

    train: list[np.ndarray]
    test: list[np.ndarray]
    test_labels: np.ndarray  # (N_test,) 0 normal / 1 anomalous
    train_segmentation: Segmentation
    test_segmentation: Segmentation


def load_reference_split(folder: str | Path) -> ReferenceSplit:
    """Read ``TwoLeadECG_{TRAIN,TEST}.tsv`` and the reference segmentation from ``folder``."""
    from model.evaluation.data import load_ucr, ucr_windows

    folder = Path(folder)
    ref = ReferenceSegmentation.load(folder / "TwoLeadECG_reference_segmentation.npz")
    _, x_train = load_ucr(folder / "TwoLeadECG_TRAIN.tsv")
    _, x_test = load_ucr(folder / "TwoLeadECG_TEST.tsv")
    train = ucr_windows(x_train[ref.train_rows])
    test = ucr_windows(x_test[ref.test_rows])
    return ReferenceSplit(
        train=train,
        test=test,
        test_labels=np.asarray(ref.test_labels, dtype=np.int64),
        train_segmentation=Segmentation(
            reference_cuts(ref.train_cuts, np.array([len(w) for w in train]))
        ),
        test_segmentation=Segmentation(
            reference_cuts(ref.test_cuts, np.array([len(w) for w in test]))
        ),
    )
