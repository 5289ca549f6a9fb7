"""Data adapters: UCR archive files, one-class splits, CSV series, sliding windows.

Everything here returns plain numpy arrays (float64 values, int64 labels and indices) and
raises :class:`~model.errors.DataError` with the file, line and what to do when the input is
not usable.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from model.errors import DataError

#: Column names (case-insensitive) recognised as the point-label column of a CSV with a header.
LABEL_COLUMNS = ("label", "labels", "is_anomaly", "anomaly")

# ---------------------------------------------------------------------------------------------
# UCR archive
# ---------------------------------------------------------------------------------------------


def _existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"data file not found: {p} (check the path; UCR files are <Name>_TRAIN.tsv)"
        )
    return p


def _parse_ucr_line(fields: list[str], p: Path, lineno: int) -> np.ndarray:
    try:
        return np.array(fields, dtype=np.float64)
    except ValueError:
        for col, tok in enumerate(fields):
            try:
                float(tok)
            except ValueError:
                raise DataError(
                    f"{p}:{lineno}: column {col} is not a number: {tok!r}"
                    " (a UCR file holds the label then the series, tab separated)"
                ) from None
        raise  # pragma: no cover - np.array failed although every token parses


def load_ucr(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a UCR archive TSV file: ``(labels (N,), X (N, L))``.

    Column 0 is the class label, columns 1..L the series; no header. Labels are int64 when
    they are all whole numbers (as in every UCR 2018 set), float64 otherwise. Rows of
    variable-length sets are NaN-padded at the end in ``X``; :func:`ucr_windows` trims them.
    A NaN or infinity anywhere else (inside a series, or a missing label) is an error.
    """
    p = _existing_file(path)
    rows: list[np.ndarray] = []
    linenos: list[int] = []
    with p.open("r", encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            sep = "\t" if "\t" in line else ","
            fields = [f.strip() for f in line.split(sep)]
            if len(fields) < 2:
                raise DataError(
                    f"{p}:{lineno}: expected a label and at least one value, got {line!r}"
                )
            rows.append(_parse_ucr_line(fields, p, lineno))
            linenos.append(lineno)
    if not rows:
        raise DataError(f"{p} holds no data rows")
    width = max(r.shape[0] for r in rows)
    data = np.full((len(rows), width), np.nan, dtype=np.float64)
    for i, r in enumerate(rows):
        data[i, : r.shape[0]] = r
    labels_f = data[:, 0]
    bad = np.flatnonzero(~np.isfinite(labels_f))
    if bad.size:
        raise DataError(f"{p}:{linenos[bad[0]]}: the label (column 0) is missing or not finite")
    X = data[:, 1:]
    for i in range(X.shape[0]):
        n = _valid_length(X[i])
        if n == 0:
            raise DataError(f"{p}:{linenos[i]}: the row has a label but no values")
        if not np.all(np.isfinite(X[i, :n])):
            raise DataError(
                f"{p}:{linenos[i]}: NaN or infinite value inside the series (only trailing NaN"
                " padding is allowed); impute or drop the row first"
            )
    labels: np.ndarray = labels_f
    if np.all(labels_f == np.round(labels_f)):
        labels = labels_f.astype(np.int64)
    return labels, X


def _valid_length(row: np.ndarray) -> int:
    """Length of ``row`` without its trailing NaN padding."""
    finite = np.flatnonzero(~np.isnan(row))
    return int(finite[-1]) + 1 if finite.size else 0


def ucr_windows(X: np.ndarray) -> list[np.ndarray]:
    """Rows of a (possibly NaN-padded) UCR matrix as windows, trailing NaN trimmed."""
    return [np.ascontiguousarray(row[: _valid_length(row)]) for row in np.asarray(X, np.float64)]


def ucr_paths(ucr_root: str | Path, name: str) -> tuple[Path, Path]:
    """``(<root>/<name>/<name>_TRAIN.tsv, <root>/<name>/<name>_TEST.tsv)``, checked to exist."""
    folder = Path(ucr_root) / name
    train, test = folder / f"{name}_TRAIN.tsv", folder / f"{name}_TEST.tsv"
    for f in (train, test):
        if not f.is_file():
            raise DataError(f"UCR dataset {name!r} not found: {f} is missing")
    return train, test


# ---------------------------------------------------------------------------------------------
# One-class protocols
# ---------------------------------------------------------------------------------------------

#: "reference": normal TEST rows + 10 % as many others (Seq2GMM's); "full": every TEST row
PROTOCOLS = ("reference", "full")


@dataclass(frozen=True)
class OneClassSplit:
    """A one-class train/test split of a labelled classification set.

    ``train`` holds only normal windows; ``test_labels`` is 1 for anomalous (other-class) rows.
    ``train_rows`` / ``test_rows`` index the rows of the TRAIN / TEST files, in split order.
    """

    train: list[np.ndarray]
    test: list[np.ndarray]
    test_labels: np.ndarray  # (N_test,) int64, 0 normal / 1 anomalous
    train_rows: np.ndarray  # (N_train,) int64
    test_rows: np.ndarray  # (N_test,) int64
    normal_label: int | float
    name: str = ""

    @property
    def n_anomalous(self) -> int:
        return int(self.test_labels.sum())


def normal_class(labels: np.ndarray) -> int | float:
    """The most frequent label; ties go to the smallest label."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    if values.size == 0:
        raise DataError("no labels to choose a normal class from")
    best = values[int(np.argmax(counts))]  # np.unique sorts, argmax takes the first maximum
    return best.item()


def one_class_split(
    train_path: str | Path,
    test_path: str | Path,
    *,
    protocol: str = "reference",
    anomaly_fraction: float = 0.1,
    seed: int = 1,
) -> OneClassSplit:
    """A one-class protocol on a UCR TRAIN/TEST pair (see :data:`PROTOCOLS`).

    ``protocol="reference"`` (the default) is the Seq2GMM reference implementation's:

    - normal class = most frequent TRAIN label (ties: the smallest);
    - train = the TRAIN rows of the normal class;
    - test = every normal TEST row plus ``int(anomaly_fraction * n_normal_test)`` rows of the
      other classes: the first ones after shuffling their indices with the legacy
      ``np.random.seed(seed); np.random.shuffle`` generator (reproduced with a private
      ``RandomState``, the global state is untouched), all sorted by original row index.

    The defaults are the reference's (0.1, seed 1). ``protocol="full"`` trains on the same rows
    and tests on EVERY TEST row (label 1 for each row not of the normal class);
    ``anomaly_fraction`` and ``seed`` are then unused. The reference test rows are a subset.
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if not anomaly_fraction >= 0.0:
        raise DataError(f"anomaly_fraction must be >= 0, got {anomaly_fraction}")
    y_train, X_train = load_ucr(train_path)
    y_test, X_test = load_ucr(test_path)
    normal = normal_class(y_train)
    train_rows = np.flatnonzero(y_train == normal).astype(np.int64)
    normal_test = np.flatnonzero(y_test == normal).astype(np.int64)
    if normal_test.size == 0:
        raise DataError(
            f"{test_path} has no row of the normal class {normal!r} (from {train_path})"
        )
    if protocol == "full":
        test_rows = np.arange(y_test.shape[0], dtype=np.int64)
    else:
        other = np.flatnonzero(y_test != normal).astype(np.int64)
        np.random.RandomState(seed).shuffle(other)  # same permutation as np.random.seed + shuffle
        n_other = int(anomaly_fraction * normal_test.size)
        test_rows = np.sort(np.concatenate([normal_test, other[:n_other]]))
    test_labels = (y_test[test_rows] != normal).astype(np.int64)
    return OneClassSplit(
        train=ucr_windows(X_train[train_rows]),
        test=ucr_windows(X_test[test_rows]),
        test_labels=test_labels,
        train_rows=train_rows,
        test_rows=test_rows,
        normal_label=normal,
        name=Path(train_path).name.removesuffix(".tsv").removesuffix("_TRAIN"),
    )


def ucr_one_class_split(
    ucr_root: str | Path, name: str, protocol: str = "reference"
) -> OneClassSplit:
    """:func:`one_class_split` of the dataset ``name`` under ``ucr_root``."""
    train, test = ucr_paths(ucr_root, name)
    return one_class_split(train, test, protocol=protocol)


# ---------------------------------------------------------------------------------------------
# CSV time series
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One (possibly multivariate) time series read from a CSV file."""

    timestamps: np.ndarray  # (T,) float64, seconds (Unix epoch, UTC, for ISO-8601 timestamps)
    values: np.ndarray  # (T,) univariate or (T, F) multivariate, float64
    labels: np.ndarray | None  # (T,) int64 0/1 point labels, when the file has them
    columns: tuple[str, ...]  # names of the value columns

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def n_features(self) -> int:
        return 1 if self.values.ndim == 1 else int(self.values.shape[1])


def _parse_timestamp(tok: str) -> float:
    """Seconds since the epoch from a number or an ISO-8601 string (naive = UTC)."""
    try:
        return float(tok)
    except ValueError:
        pass
    dt = datetime.fromisoformat(tok.strip())  # raises ValueError
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _looks_like_header(fields: list[str]) -> bool:
    if not all(_is_number(f) for f in fields[1:]):
        return True
    try:
        _parse_timestamp(fields[0])
    except ValueError:
        return True
    return False


def _read_rows(p: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank CSV line."""
    with p.open("r", encoding="utf-8", newline="") as fh:
        return [
            (i, row) for i, row in enumerate(csv.reader(fh), start=1) if any(c.strip() for c in row)
        ]


def _label_column(
    p: Path,
    header: list[str] | None,
    lines: list[tuple[int, list[str]]],
    ncol: int,
    labels: bool | None,
) -> int | None:
    """The index of the point-label column (see :func:`load_series_csv`), or None."""
    if labels is False:
        return None
    label_col: int | None = None
    if header is not None:
        named = [j for j, h in enumerate(header) if j > 0 and h.lower() in LABEL_COLUMNS]
        label_col = named[0] if named else None
    elif ncol >= 3 and all(r[-1].strip() in {"0", "1", "0.0", "1.0"} for _, r in lines):
        label_col = ncol - 1
    if labels is True and label_col is None:
        raise DataError(
            f"{p}: no label column found (name it one of {', '.join(LABEL_COLUMNS)} in a"
            " header, or pass labels=False)"
        )
    return label_col


def _parse_value(where: str, j: int, tok: str) -> float:
    try:
        v = float(tok)
    except ValueError:
        raise DataError(f"{where}: column {j} is not a number: {tok!r}") from None
    if not math.isfinite(v):
        raise DataError(f"{where}: column {j} is {tok!r}; fill or drop non-finite values first")
    return v


def _parse_label(where: str, tok: str) -> int:
    try:
        lab = float(tok)
    except ValueError:
        lab = float("nan")
    if lab not in (0.0, 1.0):
        raise DataError(f"{where}: label {tok!r} must be 0 (normal) or 1 (anomaly)")
    return int(lab)


def _parse_rows(
    p: Path,
    lines: list[tuple[int, list[str]]],
    ncol: int,
    value_cols: list[int],
    label_col: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(timestamps, values (T, F), labels or None) of the data rows, checked row by row."""
    ts = np.empty(len(lines), dtype=np.float64)
    vals = np.empty((len(lines), len(value_cols)), dtype=np.float64)
    labs = np.empty(len(lines), dtype=np.int64) if label_col is not None else None
    for i, (lineno, row) in enumerate(lines):
        where = f"{p}:{lineno}"
        if len(row) != ncol:
            raise DataError(f"{where}: expected {ncol} columns, got {len(row)}")
        try:
            ts[i] = _parse_timestamp(row[0])
        except ValueError:
            raise DataError(
                f"{where}: timestamp {row[0]!r} is neither a number nor ISO-8601"
            ) from None
        for k, j in enumerate(value_cols):
            vals[i, k] = _parse_value(where, j, row[j].strip())
        if labs is not None and label_col is not None:
            labs[i] = _parse_label(where, row[label_col].strip())
        if i and ts[i] <= ts[i - 1]:
            raise DataError(
                f"{where}: timestamp {row[0]!r} does not come after the previous row's;"
                " sort the file by time and drop duplicate timestamps"
            )
    return ts, vals, labs


def load_series_csv(path: str | Path, *, labels: bool | None = None) -> Series:
    """Read ``timestamp,value[,value...][,label]`` rows; an optional header line is detected.

    Timestamps are numbers or ISO-8601 strings (naive ones are taken as UTC). Several value
    columns give a multivariate series ``(T, F)``. Labels (point labels, 0/1):

    - ``labels=None`` (auto): with a header, the column named ``label`` (also ``is_anomaly``,
      ``anomaly``, ``labels``); without a header, the last of 3+ columns when it only holds
      0 and 1;
    - ``labels=True``: as auto, but it is an error if no label column is found;
    - ``labels=False``: every column after the timestamp is a value.

    Timestamps must increase strictly; values must be finite.
    """
    p = _existing_file(path)
    lines = _read_rows(p)
    if not lines:
        raise DataError(f"{p} is empty; expected timestamp,value[,label] rows")
    first_no, first = lines[0]
    header: list[str] | None = None
    if _looks_like_header(first):
        header = [c.strip() for c in first]
        lines = lines[1:]
        if not lines:
            raise DataError(f"{p} has a header but no data rows")
    ncol = len(header) if header is not None else len(lines[0][1])
    if ncol < 2:
        raise DataError(f"{p}:{first_no}: expected at least two columns (timestamp,value)")
    label_col = _label_column(p, header, lines, ncol, labels)
    value_cols = [j for j in range(1, ncol) if j != label_col]
    if not value_cols:
        raise DataError(f"{p}: no value column besides the timestamp and the label")
    ts, vals, labs = _parse_rows(p, lines, ncol, value_cols, label_col)
    names = tuple(
        header[j] if header is not None else f"value{k}" for k, j in enumerate(value_cols)
    )
    values = vals[:, 0] if vals.shape[1] == 1 else vals
    return Series(timestamps=ts, values=values, labels=labs, columns=names)


# ---------------------------------------------------------------------------------------------
# Sliding windows
# ---------------------------------------------------------------------------------------------


class Windows(NamedTuple):
    """Fixed-length windows cut from one series."""

    windows: np.ndarray  # (N, length) or (N, length, F) float64, a copy
    labels: np.ndarray | None  # (N,) int64: 1 if any point of the window is anomalous
    starts: np.ndarray  # (N,) int64 index of each window's first sample


def sliding_windows(
    values: np.ndarray | Sequence[float],
    length: int,
    hop: int,
    labels: np.ndarray | Sequence[int] | None = None,
) -> Windows:
    """Windows ``values[s : s + length]`` for ``s = 0, hop, 2*hop, ...`` fully inside the series.

    A trailing remainder shorter than ``length`` is not returned. With point ``labels``, a
    window is labelled 1 when any of its points is anomalous.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise DataError(f"values must have shape (T,) or (T, F), got {arr.shape}")
    if length < 1 or hop < 1:
        raise DataError(f"length and hop must be >= 1, got length={length}, hop={hop}")
    T = arr.shape[0]
    if length > T:
        raise DataError(f"the series has {T} samples, fewer than one window of {length}")
    if not np.all(np.isfinite(arr)):
        raise DataError("values contain NaN or infinite entries; fill or drop them first")
    starts = np.arange(0, T - length + 1, hop, dtype=np.int64)
    view = np.lib.stride_tricks.sliding_window_view(arr, length, axis=0)[starts]
    # sliding_window_view puts the window axis last: (N, F, length) -> (N, length, F)
    windows = np.ascontiguousarray(view if arr.ndim == 1 else np.moveaxis(view, -1, 1))
    win_labels: np.ndarray | None = None
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (T,):
            raise DataError(f"labels must have shape ({T},) like the values, got {lab.shape}")
        if not np.all(np.isin(lab, (0, 1))):
            raise DataError("labels must be 0 (normal) or 1 (anomaly)")
        # any anomalous point in [s, s+length): compare prefix sums
        csum = np.concatenate([[0], np.cumsum(lab.astype(np.int64))])
        win_labels = (csum[starts + length] - csum[starts] > 0).astype(np.int64)
    return Windows(windows=windows, labels=win_labels, starts=starts)
