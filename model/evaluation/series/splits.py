"""Long labelled series split in time: the NAB series as the VAE-LSTM paper split them, KPI
series 70/30, or any labelled series (:func:`make_split`). The protocol that scores them is
:mod:`model.evaluation.series.protocol`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.errors import DataError
from model.evaluation.data import load_series_csv, sliding_windows

#: the five NAB series of the VAE-LSTM paper (keys of nab/vae_lstm_splits.json)
NAB_SERIES = ("ambient_temp", "cpu_utilization", "ec2_request", "machine_temp", "nyc_taxi")
#: the KPI series of ../shared/data/kpi
KPI_SERIES = ("cpu4", "server_res_eth1out_curve_6", "server_res_eth1out_curve_61")


@dataclass(frozen=True)
class SeriesSplit:
    """One long series split in time into training windows and test range(s).

    ``values`` is the whole series, already normalised (T, F). ``labels`` holds its point
    labels (T,). Training: every window of ``window_length`` samples at hop ``train_hop`` inside
    ``train_range``. ``train_labels`` marks a window 1 when any of its points is anomalous.
    Unsupervised detectors train on the windows labelled 0 (:attr:`normal_train`); supervised
    ones train on all of them with their labels. Test: the windows of each ``test_ranges`` entry
    at hop ``hop``. All ranges are ``[start, end)`` row indices of the original file.
    """

    name: str
    values: np.ndarray  # (T, F) float64, normalised
    labels: np.ndarray  # (T,) int64 point labels
    window_length: int
    hop: int  # test hop
    train_hop: int
    train_range: tuple[int, int]
    test_ranges: tuple[tuple[int, int], ...]
    train: np.ndarray  # (N, L, F) training windows (labelled ones included)
    train_labels: np.ndarray  # (N,) int64 window labels
    train_starts: np.ndarray  # (N,) int64 first row of each training window
    normalisation: tuple[np.ndarray, np.ndarray]  # (mean (F,), std (F,)) applied to the raw file
    #: NAB: the paper's test ranges and anomaly positions (see :func:`paper_window_metrics`)
    paper_ranges: tuple[tuple[int, int], ...] = ()
    paper_anomalies: tuple[int, ...] = ()
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def normal_train(self) -> np.ndarray:
        """(N0, L, F) training windows without any labelled point (what one-class kinds see)."""
        return self.train[self.train_labels == 0]

    @property
    def test_values(self) -> np.ndarray:
        """(T_test, F) the test ranges' values, concatenated in time order."""
        return np.concatenate([self.values[a:b] for a, b in self.test_ranges])

    @property
    def test_labels(self) -> np.ndarray:
        """(T_test,) the test ranges' point labels, concatenated in time order."""
        return np.concatenate([self.labels[a:b] for a, b in self.test_ranges])

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])


def make_split(
    name: str,
    values: np.ndarray,
    labels: np.ndarray,
    *,
    train_range: tuple[int, int],
    test_ranges: Sequence[tuple[int, int]],
    window: int,
    hop: int = 1,
    train_hop: int = 1,
    normalisation: tuple[np.ndarray, np.ndarray] | None = None,
    paper_ranges: Sequence[tuple[int, int]] = (),
    paper_anomalies: Sequence[int] = (),
    source: dict[str, Any] | None = None,
) -> SeriesSplit:
    """A :class:`SeriesSplit` of an already normalised series ``values`` (T,) or (T, F) with
    point ``labels`` (T,): the training windows are cut here. :func:`nab_split` and
    :func:`kpi_split` build theirs with it; use it for any other labelled series."""
    vals = np.asarray(values, dtype=np.float64)
    vals = vals[:, None] if vals.ndim == 1 else vals
    lab = np.asarray(labels).astype(np.int64)
    if vals.ndim != 2 or lab.shape != (vals.shape[0],):
        raise DataError(
            f"values must be (T,) or (T, F) and labels (T,), got {vals.shape} and {lab.shape}"
        )
    if window < 2 or hop < 1 or train_hop < 1:
        raise DataError(
            f"window must be >= 2 and hops >= 1, got window={window}, hop={hop},"
            f" train_hop={train_hop}"
        )
    T = vals.shape[0]
    ranges = [(int(a), int(b)) for a, b in (train_range, *test_ranges)]
    if any(not 0 <= a < b <= T for a, b in ranges):
        raise DataError(f"ranges must be [start, end) with 0 <= start < end <= {T}, got {ranges}")
    a, b = ranges[0]
    if b - a < window:
        raise DataError(
            f"the training range [{a}, {b}) holds {b - a} samples, fewer than one window of"
            f" {window}; use a shorter window"
        )
    w = sliding_windows(vals[a:b], window, train_hop, lab[a:b])
    assert w.labels is not None
    if normalisation is None:
        F = vals.shape[1]
        normalisation = (np.zeros(F), np.ones(F))
    return SeriesSplit(
        name=name,
        values=vals,
        labels=lab,
        window_length=window,
        hop=hop,
        train_hop=train_hop,
        train_range=(a, b),
        test_ranges=tuple(ranges[1:]),
        train=w.windows.reshape(len(w.starts), window, -1),
        train_labels=w.labels,
        train_starts=w.starts + a,
        normalisation=normalisation,
        paper_ranges=tuple((int(p), int(q)) for p, q in paper_ranges),
        paper_anomalies=tuple(int(x) for x in paper_anomalies),
        source=dict(source or {}),
    )


def _nab_timestamp_rows(path: Path) -> tuple[list[str], np.ndarray]:
    """The timestamps (as written) and the values of a NAB CSV file."""
    stamps: list[str] = []
    vals: list[float] = []
    with path.open(encoding="utf-8") as fh:
        next(fh)  # header: timestamp,value
        for line in fh:
            line = line.strip()
            if line:
                t, v = line.split(",")
                stamps.append(t)
                vals.append(float(v))
    return stamps, np.asarray(vals, dtype=np.float64)


def nab_point_labels(stamps: list[str], windows: list[list[str]]) -> np.ndarray:
    """(T,) 1 for rows inside any NAB anomaly window (``combined_windows.json``, both ends
    inclusive; the file's timestamps carry microseconds, the CSVs do not)."""
    index = {t: i for i, t in enumerate(stamps)}
    labels = np.zeros(len(stamps), dtype=np.int64)
    for start, end in windows:
        try:
            a, b = index[start[:19]], index[end[:19]]
        except KeyError as exc:
            raise DataError(f"NAB window bound {exc} is not a timestamp of the series") from None
        labels[a : b + 1] = 1
    return labels


def nab_split(
    data_root: str | Path,
    name: str,
    *,
    window: int = 576,
    hop: int = 1,
    train_hop: int = 1,
    test: str = "outside",
) -> SeriesSplit:
    """One of the five NAB series of the VAE-LSTM paper, split as that paper did.

    From ``nab/vae_lstm_splits.json``: training rows ``[start, end)`` (anomaly-free) and the
    mean/std the paper normalised the whole series with (the training rows' own; both are used
    as published). Test rows (``test``):

    - ``"outside"`` (default): every row outside the training range, as two separate ranges
      when the training range is in the middle (machine_temp: ``[0, 5000)`` and
      ``[15500, 22695)``). Windows never span the gap;
    - ``"paper"``: the rows the paper's notebook evaluated. That is ``[end, T)`` when training
      starts at row 0 (the other four series: the same as "outside"), and only ``[0, 5000)``
      for machine_temp (the notebook kept ``test[0]``).

    Point labels: the NAB anomaly windows of ``labels/combined_windows.json`` (rows inside a
    window are 1). The JSON's ``anomaly_rows`` are NAB's single anomaly timestamps
    (``labels/combined_labels.json``) as 1-based row numbers, i.e. 0-based row + 1. They
    are kept in ``paper_anomalies``, as published, for :func:`paper_window_metrics`.
    """
    root = Path(data_root) / "nab"
    spec_path = root / "vae_lstm_splits.json"
    if not spec_path.is_file():
        raise DataError(f"{spec_path} not found; pass the shared data folder as data_root")
    specs = json.loads(spec_path.read_text(encoding="utf-8"))
    if name not in specs:
        raise DataError(f"unknown NAB series {name!r}; choose from {sorted(specs)}")
    if test not in ("outside", "paper"):
        raise DataError(f"test must be 'outside' or 'paper', got {test!r}")
    spec = specs[name]
    stamps, raw = _nab_timestamp_rows(root / spec["csv"])
    T = raw.shape[0]
    if spec["n_rows"] != T:
        raise DataError(f"{spec['csv']} has {T} rows, the split file expects {spec['n_rows']}")
    nab_windows = json.loads((root / "labels" / "combined_windows.json").read_text("utf-8"))
    labels = nab_point_labels(stamps, nab_windows[spec["csv"]])
    mean, std = float(spec["train_mean"]), float(spec["train_std"])
    values = ((raw - mean) / std)[:, None]  # (T, 1)

    a, b = (int(v) for v in spec["train_rows"])
    outside = tuple(r for r in ((0, a), (b, T)) if r[1] > r[0])
    paper = ((b, T),) if a == 0 else ((0, a),)
    return make_split(
        name,
        values,
        labels,
        train_range=(a, b),
        test_ranges=outside if test == "outside" else paper,
        window=window,
        hop=hop,
        train_hop=train_hop,
        normalisation=(np.array([mean]), np.array([std])),
        paper_ranges=paper,
        paper_anomalies=[int(r) for r in spec["anomaly_rows"]],
        source={"file": f"nab/{spec['csv']}", "test": test, "labels": "combined_windows.json"},
    )


def kpi_split(
    data_root: str | Path,
    name: str,
    *,
    window: int = 576,
    hop: int = 1,
    train_hop: int = 1,
    train_fraction: float = 0.7,
) -> SeriesSplit:
    """A KPI series (``kpi/<name>.csv``: timestamp,value,label), split in time.

    The first ``int(train_fraction * T)`` rows (70%) are for training, the rest for testing.
    Values are standardised with the mean/std of the training rows whose label is 0 (the
    values are already normalised in the file, so this changes little). The training windows
    keep their labels. One-class detectors train on the windows without a labelled point
    (:attr:`SeriesSplit.normal_train`, the usual "drop labelled points" protocol at window
    level); supervised ones train on all of them.
    """
    path = Path(data_root) / "kpi" / f"{name}.csv"
    if not path.is_file():
        raise DataError(f"KPI series {path} not found; choose from {KPI_SERIES}")
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train_fraction must be in (0, 1), got {train_fraction}")
    series = load_series_csv(path, labels=True)
    assert series.labels is not None
    raw = series.values.reshape(len(series), -1)
    labels = series.labels
    T = raw.shape[0]
    cut = int(train_fraction * T)
    normal = raw[:cut][labels[:cut] == 0]
    mean = normal.mean(axis=0)
    std = normal.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    values = (raw - mean) / std
    return make_split(
        name,
        values,
        labels,
        train_range=(0, cut),
        test_ranges=[(cut, T)],
        window=window,
        hop=hop,
        train_hop=train_hop,
        normalisation=(mean, std),
        source={"file": f"kpi/{name}.csv", "train_fraction": train_fraction},
    )


def load_split(data_root: str | Path, spec: str, **kwargs: Any) -> SeriesSplit:
    """``"nab:<name>"`` or ``"kpi:<name>"`` -> :func:`nab_split` / :func:`kpi_split`."""
    source, _, name = spec.partition(":")
    if source == "nab":
        return nab_split(data_root, name, **kwargs)
    if source == "kpi":
        kwargs.pop("test", None)
        return kpi_split(data_root, name, **kwargs)
    raise DataError(f"dataset {spec!r} must be 'nab:<name>' or 'kpi:<name>'")
