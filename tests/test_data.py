"""Data adapters: UCR files, the reference one-class protocol, CSV series, sliding windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.errors import DataError
from model.evaluation.data import (
    Series,
    load_series_csv,
    load_ucr,
    normal_class,
    one_class_split,
    sliding_windows,
    ucr_one_class_split,
    ucr_windows,
)
from model.segmentation.reference import ReferenceSegmentation


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------ UCR files


def test_load_ucr_equal_length(tmp_path: Path) -> None:
    p = _write(tmp_path, "x.tsv", "1\t0.5\t1.5\t2.5\n-1\t3\t4\t5\n\n")
    labels, X = load_ucr(p)
    assert labels.dtype == np.int64
    assert labels.tolist() == [1, -1]
    np.testing.assert_array_equal(X, [[0.5, 1.5, 2.5], [3, 4, 5]])


def test_load_ucr_variable_length_rows_are_trimmed(tmp_path: Path) -> None:
    p = _write(tmp_path, "v.tsv", "2\t1\t2\t3\t4\n3\t5\t6\tNaN\tNaN\n2\t7\t8\t9\n")
    labels, X = load_ucr(p)
    assert X.shape == (3, 4) and labels.tolist() == [2, 3, 2]
    wins = ucr_windows(X)
    assert [w.tolist() for w in wins] == [[1, 2, 3, 4], [5, 6], [7, 8, 9]]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1\t0.1\t0.2\n1\t0.3\tabc\n", r"x\.tsv:2: column 2 is not a number: 'abc'"),
        ("1\t0.1\tNaN\t0.3\n", r"x\.tsv:1: NaN or infinite value inside the series"),
        ("1\t0.1\tinf\n", r"x\.tsv:1: NaN or infinite"),
        ("NaN\t0.1\t0.2\n", r"x\.tsv:1: the label"),
        ("1\n", r"x\.tsv:1: expected a label and at least one value"),
        ("\n\n", r"holds no data rows"),
    ],
)
def test_load_ucr_bad_rows(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_ucr(_write(tmp_path, "x.tsv", text))


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_ucr(tmp_path / "nope.tsv")
    with pytest.raises(DataError, match="not found"):
        load_series_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="not found"):
        ucr_one_class_split(tmp_path, "Nope")


def test_normal_class_ties_go_to_smallest() -> None:
    assert normal_class(np.array([3, 2, 3, 2, 5])) == 2
    assert normal_class(np.array([-1, 1, 1])) == 1


# ------------------------------------------------------------------ one-class protocol


def test_protocol_matches_reference_rows_and_labels(shared_data: Path) -> None:
    ref = ReferenceSegmentation.load(
        shared_data / "ucr" / "TwoLeadECG" / "TwoLeadECG_reference_segmentation.npz"
    )
    state = np.random.get_state()
    split = ucr_one_class_split(shared_data / "ucr", "TwoLeadECG")
    after = np.random.get_state()
    # the global legacy RNG is untouched
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]
    np.testing.assert_array_equal(split.train_rows, ref.train_rows)
    np.testing.assert_array_equal(split.test_rows, ref.test_rows)
    np.testing.assert_array_equal(split.test_labels, ref.test_labels)
    assert split.normal_label == 1
    assert (len(split.train), len(split.test), split.n_anomalous) == (12, 625, 56)
    # windows are the corresponding file rows
    _, X = load_ucr(shared_data / "ucr" / "TwoLeadECG" / "TwoLeadECG_TEST.tsv")
    np.testing.assert_array_equal(split.test[5], X[ref.test_rows[5]])


@pytest.mark.parametrize(
    ("name", "normal", "n_train", "n_test", "n_anom"),
    [("ECG200", 1, 69, 70, 6), ("GunPoint", 2, 26, 81, 7)],
)
def test_protocol_sizes(
    shared_data: Path, name: str, normal: int, n_train: int, n_test: int, n_anom: int
) -> None:
    split = ucr_one_class_split(shared_data / "ucr", name)
    assert split.normal_label == normal
    assert (len(split.train), len(split.test), split.n_anomalous) == (n_train, n_test, n_anom)
    assert np.all(np.diff(split.test_rows) > 0)


def test_protocol_equals_legacy_global_shuffle(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    y_tr = np.array([0] * 8 + [1] * 5 + [2] * 8)  # tie 0/2: normal = 0
    y_te = rng.integers(0, 3, 300)
    for name, y in (("a_TRAIN.tsv", y_tr), ("a_TEST.tsv", y_te)):
        rows = [f"{lab}\t" + "\t".join(f"{v:.3f}" for v in rng.normal(size=6)) for lab in y]
        _write(tmp_path, name, "\n".join(rows) + "\n")
    split = one_class_split(tmp_path / "a_TRAIN.tsv", tmp_path / "a_TEST.tsv")
    # the reference's code, literally, on the global RNG
    normal_te = np.where(y_te == 0)[0]
    other = np.where(y_te != 0)[0]
    np.random.seed(1)
    np.random.shuffle(other)
    expected = np.sort(np.concatenate([normal_te, other[: int(0.1 * len(normal_te))]]))
    assert split.normal_label == 0
    np.testing.assert_array_equal(split.train_rows, np.arange(8))
    np.testing.assert_array_equal(split.test_rows, expected)
    np.testing.assert_array_equal(split.test_labels, (y_te[expected] != 0).astype(int))
    assert split.name == "a"


def test_full_protocol_tests_every_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    y_tr, y_te = np.array([0] * 6 + [1] * 3), rng.integers(0, 3, 120)
    for name, y in (("b_TRAIN.tsv", y_tr), ("b_TEST.tsv", y_te)):
        rows = [f"{lab}\t" + "\t".join(f"{v:.3f}" for v in rng.normal(size=5)) for lab in y]
        _write(tmp_path, name, "\n".join(rows) + "\n")
    tr, te = tmp_path / "b_TRAIN.tsv", tmp_path / "b_TEST.tsv"
    ref, full = one_class_split(tr, te), one_class_split(tr, te, protocol="full")
    np.testing.assert_array_equal(full.train_rows, ref.train_rows)
    np.testing.assert_array_equal(full.test_rows, np.arange(120))
    np.testing.assert_array_equal(full.test_labels, (y_te != 0).astype(int))
    assert full.n_anomalous == int((y_te != 0).sum()) and len(full.test) == 120
    assert set(ref.test_rows.tolist()) <= set(full.test_rows.tolist())
    np.testing.assert_array_equal(full.test_labels[ref.test_rows], ref.test_labels)
    with pytest.raises(DataError, match="unknown protocol 'all'; valid: reference, full"):
        one_class_split(tr, te, protocol="all")


def test_full_protocol_on_real_data(shared_data: Path) -> None:
    ref = ucr_one_class_split(shared_data / "ucr", "GunPoint")
    full = ucr_one_class_split(shared_data / "ucr", "GunPoint", protocol="full")
    y_test, X_test = load_ucr(shared_data / "ucr" / "GunPoint" / "GunPoint_TEST.tsv")
    assert len(full.test) == 150 and full.n_anomalous == int((y_test != 2).sum())
    assert np.isin(ref.test_rows, full.test_rows).all()
    np.testing.assert_array_equal(full.test_labels[ref.test_rows], ref.test_labels)
    np.testing.assert_array_equal(full.test[149], X_test[149])
    assert (full.test_labels == 0).sum() == (ref.test_labels == 0).sum()


# ------------------------------------------------------------------ CSV series


def test_csv_numeric_timestamps_with_header_and_labels(tmp_path: Path) -> None:
    p = _write(tmp_path, "k.csv", "timestamp,value,label\n10,0.5,0\n20,1.5,1\n30,-2,0\n")
    s = load_series_csv(p)
    assert isinstance(s, Series)
    np.testing.assert_array_equal(s.timestamps, [10, 20, 30])
    np.testing.assert_array_equal(s.values, [0.5, 1.5, -2])
    assert s.labels is not None and s.labels.tolist() == [0, 1, 0]
    assert s.columns == ("value",) and s.n_features == 1 and len(s) == 3


def test_csv_iso_timestamps_no_header(tmp_path: Path) -> None:
    p = _write(tmp_path, "n.csv", "2014-07-01 00:00:00,10844\n2014-07-01T00:30:00Z,8127\n")
    s = load_series_csv(p)
    assert s.labels is None
    assert s.timestamps[0] == 1404172800.0  # 2014-07-01 UTC
    assert s.timestamps[1] - s.timestamps[0] == 1800.0


def test_csv_multivariate_and_label_rules(tmp_path: Path) -> None:
    p = _write(tmp_path, "m.csv", "t,cpu,mem,is_anomaly\n1,0.1,5,0\n2,0.2,6,1\n")
    s = load_series_csv(p)
    assert s.values.shape == (2, 2) and s.columns == ("cpu", "mem")
    assert s.labels is not None and s.labels.tolist() == [0, 1]
    # headerless: a 0/1 last column is a label in auto mode, a value with labels=False
    q = _write(tmp_path, "q.csv", "1,0.1,0\n2,0.2,1\n")
    assert load_series_csv(q).values.shape == (2,)
    assert load_series_csv(q, labels=False).values.shape == (2, 2)
    r = _write(tmp_path, "r.csv", "1,0.1,0.7\n2,0.2,0.9\n")
    assert load_series_csv(r).labels is None
    with pytest.raises(DataError, match="no label column"):
        load_series_csv(r, labels=True)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("timestamp,value\n1,0.5\n2,abc\n", r"b\.csv:3: column 1 is not a number"),
        ("timestamp,value\n1,0.5\n2,nan\n", r"b\.csv:3: column 1 is 'nan'; fill or drop"),
        ("timestamp,value\n1,0.5\n2,inf\n", r"b\.csv:3: .*non-finite"),
        ("timestamp,value\n1,0.5\n2\n", r"b\.csv:3: expected 2 columns, got 1"),
        ("timestamp,value\n2,0.5\n1,0.7\n", r"b\.csv:3: .*sort the file"),
        ("timestamp,value,label\n1,0.5,0\n2,0.7,3\n", r"b\.csv:3: label '3' must be 0"),
        ("1,0.5\nyesterday,0.7\n", r"b\.csv:2: timestamp 'yesterday'"),
        ("timestamp,value\n", r"header but no data rows"),
    ],
)
def test_csv_errors_name_the_line(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_series_csv(_write(tmp_path, "b.csv", text))


def test_csv_real_kpi_file(shared_data: Path) -> None:
    s = load_series_csv(shared_data / "kpi" / "cpu4.csv")
    assert len(s) == 17568 and s.values.ndim == 1
    assert s.labels is not None and 0 < s.labels.sum() < len(s)
    assert np.all(np.diff(s.timestamps) > 0)


# ------------------------------------------------------------------ sliding windows


def test_sliding_windows_univariate_and_labels() -> None:
    values = np.arange(10.0)
    labels = np.zeros(10, dtype=int)
    labels[7] = 1
    w = sliding_windows(values, length=4, hop=3, labels=labels)
    np.testing.assert_array_equal(w.starts, [0, 3, 6])
    np.testing.assert_array_equal(w.windows, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    assert w.labels is not None and w.labels.tolist() == [0, 0, 1]
    w.windows[0, 0] = 99.0  # a copy: the input is untouched
    assert values[0] == 0.0


def test_sliding_windows_multivariate_and_brute_force() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 3))
    labels = (rng.random(50) < 0.05).astype(int)
    w = sliding_windows(values, length=8, hop=5, labels=labels)
    assert w.windows.shape == (9, 8, 3)
    assert w.labels is not None
    for i, s in enumerate(w.starts):
        np.testing.assert_array_equal(w.windows[i], values[s : s + 8])
        assert w.labels[i] == int(labels[s : s + 8].any())
    assert sliding_windows(values, 8, 5).labels is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": np.ones(3), "length": 4, "hop": 1}, "fewer than one window"),
        ({"values": np.ones(5), "length": 0, "hop": 1}, "must be >= 1"),
        ({"values": np.array([1.0, np.nan, 2.0]), "length": 2, "hop": 1}, "NaN"),
        ({"values": np.ones(5), "length": 2, "hop": 1, "labels": np.ones(4)}, "shape"),
        ({"values": np.ones(5), "length": 2, "hop": 1, "labels": np.full(5, 2)}, "0 .normal"),
    ],
)
def test_sliding_windows_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(DataError, match=match):
        sliding_windows(**kwargs)  # type: ignore[arg-type]
