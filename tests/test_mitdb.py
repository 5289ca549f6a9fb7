"""The MIT-BIH reader: format 212, the header's checks and MIT annotations, on record 100 and
on hand-built files (every special annotation code)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from model.errors import DataError
from model.evaluation.mitdb import (
    read_annotations,
    read_format212,
    read_header,
    read_record,
)


@pytest.fixture
def mitdb(shared_data: Path) -> Path:
    d = shared_data / "mitdb"
    if not (d / "100.hea").is_file():
        pytest.skip(f"MIT-BIH record 100 not found in {d}")
    return d


def test_record_100_signals_beats_and_header_checks(mitdb: Path) -> None:
    header = read_header(mitdb / "100.hea")
    rec = read_record(mitdb, "100")
    assert rec.signals.shape == (650_000, 2) and rec.fs == 360.0
    assert rec.signal_names == ("MLII", "V5") and rec.units == ("mV", "mV")
    # the first sample is the header's initial value, in mV: (ADC - baseline) / gain
    for j, spec in enumerate(header.signals):
        assert rec.signals[0, j] == pytest.approx((spec.initial - spec.baseline) / spec.gain)
    assert rec.signals[0, 0] == pytest.approx((995 - 1024) / 200)
    # the checksums of the header (16-bit sums of every sample) hold
    digital = read_format212(mitdb / "100.dat", 2)
    sums = (digital.sum(axis=0) + 2**15) % 2**16 - 2**15
    assert list(sums) == [s.checksum for s in header.signals] == [-22131, 20052]
    assert Counter(rec.beat_symbols) == {"N": 2239, "A": 33, "V": 1}
    assert int(rec.abnormal_beats.sum()) == 34
    assert np.all(np.diff(rec.beat_samples) > 0) and rec.beat_samples[-1] < 650_000
    assert rec.timestamps[360] == 1.0
    np.testing.assert_array_equal(rec.lead("MLII"), rec.signals[:, 0])
    # the median RR interval: 287 samples, the fixed window length
    assert int(np.median(np.diff(rec.beat_samples))) == 287


def test_a_corrupt_or_truncated_signal_file_is_refused(mitdb: Path, tmp_path: Path) -> None:
    for name in ("100.hea", "100.atr"):
        shutil.copy(mitdb / name, tmp_path / name)
    data = bytearray((mitdb / "100.dat").read_bytes())
    data[3000] ^= 0x01  # one sample changes by 1: the checksum no longer holds
    (tmp_path / "100.dat").write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum"):
        read_record(tmp_path)
    (tmp_path / "100.dat").write_bytes(bytes(data[:-300]))
    with pytest.raises(DataError, match="truncated"):
        read_record(tmp_path)
    with pytest.raises(DataError, match="no lead"):
        read_record(mitdb).lead("V1")


def test_format_212_packing(tmp_path: Path) -> None:
    # pairs (a, b) packed as [a & 0xFF, (a >> 8 & 0xF) | (b >> 8 & 0xF) << 4, b & 0xFF]
    values = np.array([[0, 1], [2047, -2048], [-1, 1000], [-500, 3]])
    packed = bytearray()
    for a, b in values:
        ua, ub = a & 0xFFF, b & 0xFFF
        packed += bytes([ua & 0xFF, (ua >> 8) | ((ub >> 8) << 4), ub & 0xFF])
    path = tmp_path / "x.dat"
    path.write_bytes(bytes(packed))
    np.testing.assert_array_equal(read_format212(path, 2), values)
    np.testing.assert_array_equal(read_format212(path, 1)[:, 0], values.reshape(-1))


def _word(code: int, value: int) -> bytes:
    return int((code << 10) | value).to_bytes(2, "little")


def test_annotations_with_every_special_code(tmp_path: Path) -> None:
    data = (
        _word(1, 100)  # N at 100
        + _word(61, 3)  # SUB of the N: ignored
        + _word(62, 1)  # CHN
        + _word(60, 2)  # NUM
        + _word(63, 3)  # AUX, 3 bytes + 1 pad byte
        + b"(N\x00\x00"
        + _word(59, 0)  # SKIP 70,000 samples: high word first
        + (70_000 >> 16).to_bytes(2, "little")
        + (70_000 & 0xFFFF).to_bytes(2, "little")
        + _word(5, 10)  # V at 100 + 70,000 + 10
        + _word(28, 0)  # a rhythm annotation (+) at the same sample
        + _word(0, 0)  # end of file
        + _word(1, 5)  # after the end: never read
    )
    (tmp_path / "a.atr").write_bytes(data)
    samples, symbols = read_annotations(tmp_path / "a.atr")
    assert list(samples) == [100, 70_110, 70_110]
    assert symbols == ("N", "V", "+")


def test_header_with_comments_baseline_and_units(tmp_path: Path) -> None:
    (tmp_path / "r.hea").write_text(
        "# a comment\n\nr 1 250 4\nr.dat 212 100(10)/uV 12 0 20 0 0 lead I\n# more\n"
    )
    h = read_header(tmp_path / "r.hea")
    assert (h.record, h.fs, h.n_samples) == ("r", 250.0, 4)
    spec = h.signals[0]
    assert (spec.gain, spec.baseline, spec.units, spec.name) == (100.0, 10, "uV", "lead I")
    (tmp_path / "r.hea").write_text("r 2 250 4\nr.dat 212 100 12 0 20 0 0 I\n")
    with pytest.raises(DataError, match="announces 2 signals"):
        read_header(tmp_path / "r.hea")
    with pytest.raises(DataError, match="no WFDB header"):
        read_record(tmp_path, "missing")
