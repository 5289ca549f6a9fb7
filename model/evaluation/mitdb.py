"""MIT-BIH Arrhythmia Database records (PhysioNet WFDB files): a small documented reader.

A record ``NAME`` is three files in one folder (e.g. ``../shared/data/mitdb/100.*``):

- ``NAME.hea`` — the header. Lines starting with ``#`` are comments. The record line is
  ``NAME N_SIGNALS FS N_SAMPLES``; then one line per signal:
  ``FILE FORMAT GAIN[(BASELINE)][/UNITS] RESOLUTION ADC_ZERO INITIAL CHECKSUM BLOCK NAME``.
  GAIN is ADC units per physical unit (mV when no units are given); BASELINE defaults to
  ADC_ZERO; INITIAL is the signal's first sample and CHECKSUM the 16-bit (two's complement)
  sum of all its samples, both checked on reading.
- ``NAME.dat`` — format 212: the signals' samples interleaved (sample 0 of every signal, then
  sample 1, ...), each pair of 12-bit two's-complement samples packed in 3 bytes: byte 0 holds
  the low 8 bits of the first sample, byte 1 the high 4 bits of the first (low nibble) and of
  the second (high nibble), byte 2 the low 8 bits of the second.
- ``NAME.atr`` — MIT annotation format: 16-bit little-endian words, the top 6 bits a code
  and the low 10 bits a time increment (samples since the previous annotation). Codes 1..49
  are annotation types (1 = N normal beat, 5 = V, 8 = A, ...: :data:`SYMBOLS`); the special
  codes are SKIP (59: the next two words are a 32-bit increment, high word first), NUM (60),
  SUB (61) and CHN (62) (the 10 bits are a field of the preceding annotation) and AUX (63:
  the 10 bits are a byte count, followed by that many bytes padded to an even number); the
  word 0 ends the file.

Only format 212 is read (the MIT-BIH records' format); numpy only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.errors import DataError
from model.evaluation.cycles import CycleSplit, cutter_from_spec, cycle_split

#: annotation code -> symbol (the WFDB standard codes 1..41)
SYMBOLS: dict[int, str] = {
    1: "N", 2: "L", 3: "R", 4: "a", 5: "V", 6: "F", 7: "J", 8: "A", 9: "S", 10: "E",
    11: "j", 12: "/", 13: "Q", 14: "~", 16: "|", 18: "s", 19: "T", 20: "*", 21: "D",
    22: '"', 23: "=", 24: "p", 25: "B", 26: "^", 27: "t", 28: "+", 29: "u", 30: "?",
    31: "!", 32: "[", 33: "]", 34: "e", 35: "n", 36: "@", 37: "x", 38: "f", 39: "(",
    40: ")", 41: "r",
}  # fmt: skip
#: the symbols of beat annotations (the others mark rhythm changes, noise, comments, ...)
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
#: normal beats: the AAMI "N" class (normal, bundle branch block and escape beats); every
#: other beat is abnormal
NORMAL_BEATS = frozenset("NLRej")

_SKIP, _NUM, _SUB, _CHN, _AUX = 59, 60, 61, 62, 63


@dataclass(frozen=True)
class SignalSpec:
    """One signal line of a header."""

    file: str
    fmt: str
    gain: float  # ADC units per physical unit
    baseline: int  # ADC value of 0 physical units
    units: str
    resolution: int
    adc_zero: int
    initial: int
    checksum: int
    name: str


@dataclass(frozen=True)
class Header:
    record: str
    fs: float  # samples per second
    n_samples: int
    signals: tuple[SignalSpec, ...]


@dataclass(frozen=True)
class Record:
    """A record: physical signals, their timestamps and the beat annotations."""

    name: str
    fs: float
    signal_names: tuple[str, ...]  # e.g. ("MLII", "V5")
    units: tuple[str, ...]
    signals: np.ndarray  # (T, n_signals) float64, physical units
    beat_samples: np.ndarray  # (B,) int64 sample index of each beat annotation (R peak)
    beat_symbols: tuple[str, ...]  # (B,) "N", "A", "V", ...

    @property
    def timestamps(self) -> np.ndarray:
        """(T,) seconds from the record's start: sample / fs."""
        return np.arange(self.signals.shape[0], dtype=np.float64) / self.fs

    def lead(self, name: str) -> np.ndarray:
        """The (T,) signal called ``name`` (e.g. "MLII")."""
        if name not in self.signal_names:
            raise DataError(f"record {self.name} has no lead {name!r}; leads: {self.signal_names}")
        return self.signals[:, self.signal_names.index(name)]

    @property
    def abnormal_beats(self) -> np.ndarray:
        """(B,) bool: the beats whose symbol is not a normal beat (:data:`NORMAL_BEATS`)."""
        return np.array([s not in NORMAL_BEATS for s in self.beat_symbols], dtype=bool)


_GAIN = re.compile(r"^(?P<gain>[-+0-9.eE]+)(\((?P<base>-?\d+)\))?(/(?P<units>\S+))?$")


def _signal_spec(line: str, where: str) -> SignalSpec:
    f = line.split()
    if len(f) < 9:
        raise DataError(f"{where}: a signal line needs 9 fields (file ... name), got {line!r}")
    m = _GAIN.match(f[2])
    if m is None:
        raise DataError(f"{where}: cannot read the gain {f[2]!r} (GAIN[(BASELINE)][/UNITS])")
    adc_zero = int(f[4])
    base = m.group("base")
    return SignalSpec(
        file=f[0],
        fmt=f[1],
        gain=float(m.group("gain")) or 200.0,  # WFDB: a gain of 0 means the default, 200
        baseline=int(base) if base is not None else adc_zero,
        units=m.group("units") or "mV",
        resolution=int(f[3]),
        adc_zero=adc_zero,
        initial=int(f[5]),
        checksum=int(f[6]),
        name=" ".join(f[8:]),
    )


def read_header(path: str | Path) -> Header:
    """Parse a ``.hea`` file (comments and blank lines skipped)."""
    p = Path(path)
    lines = [ln.strip() for ln in p.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DataError(f"{p} has no record line; is it a WFDB header?")
    rec = lines[0].split()
    if len(rec) < 4:
        raise DataError(f"{p}: the record line needs NAME N_SIGNALS FS N_SAMPLES, got {lines[0]!r}")
    n_signals = int(rec[1])
    specs = tuple(_signal_spec(ln, str(p)) for ln in lines[1 : 1 + n_signals])
    if len(specs) != n_signals:
        raise DataError(f"{p}: the record line announces {n_signals} signals, {len(specs)} found")
    return Header(rec[0], float(rec[2].split("/")[0]), int(rec[3]), specs)


def read_format212(path: str | Path, n_signals: int) -> np.ndarray:
    """The (T, n_signals) int64 samples of a format-212 ``.dat`` file."""
    data = np.fromfile(Path(path), dtype=np.uint8)
    raw = data[: len(data) - len(data) % 3].astype(np.int64).reshape(-1, 3)
    first = raw[:, 0] | ((raw[:, 1] & 0x0F) << 8)
    second = raw[:, 2] | ((raw[:, 1] & 0xF0) << 4)
    samples = np.stack([first, second], axis=1).reshape(-1)
    samples = np.where(samples >= 2048, samples - 4096, samples)  # 12-bit two's complement
    n = len(samples) - len(samples) % n_signals
    return samples[:n].reshape(-1, n_signals)


def _check_signals(digital: np.ndarray, header: Header, where: str) -> None:
    """The header's sample count, initial values and checksums against the samples read."""
    if digital.shape[0] != header.n_samples:
        raise DataError(
            f"{where} holds {digital.shape[0]} samples per signal, the header says"
            f" {header.n_samples}: the file is truncated or not this record's"
        )
    for j, spec in enumerate(header.signals):
        checksum = int(((digital[:, j].sum() + 2**15) % 2**16) - 2**15)
        if digital[0, j] != spec.initial or checksum != spec.checksum:
            raise DataError(
                f"{where}, signal {spec.name}: first sample {digital[0, j]} / checksum"
                f" {checksum}, the header says {spec.initial} / {spec.checksum}; the file is"
                " corrupt: fetch the record again"
            )


def read_annotations(path: str | Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Every annotation of an MIT-format ``.atr`` file: (sample indices, symbols)."""
    p = Path(path)
    data = np.fromfile(p, dtype="<u2")
    samples: list[int] = []
    symbols: list[str] = []
    time, i = 0, 0
    while i < len(data):
        word = int(data[i])
        code, value = word >> 10, word & 0x3FF
        i += 1
        if word == 0:
            break
        if code == _SKIP:
            if i + 2 > len(data):
                raise DataError(f"{p}: truncated SKIP annotation at word {i - 1}")
            skip = (int(data[i]) << 16) | int(data[i + 1])
            time += skip - 2**32 if skip >= 2**31 else skip
            i += 2
        elif code == _AUX:
            i += (value + 1) // 2  # the bytes, padded to a whole number of words
        elif code in (_NUM, _SUB, _CHN):
            continue  # fields of the preceding annotation, not needed here
        else:
            time += value
            samples.append(time)
            symbols.append(SYMBOLS.get(code, f"#{code}"))
    return np.asarray(samples, dtype=np.int64), tuple(symbols)


def read_record(folder: str | Path, name: str = "100") -> Record:
    """The record ``name`` in ``folder``: signals in physical units, checked against the
    header's initial values and checksums, and its beat annotations (non-beat annotations
    such as rhythm changes dropped)."""
    root = Path(folder)
    hea = root / f"{name}.hea"
    if not hea.is_file():
        raise DataError(f"no WFDB header {hea}; pass the folder holding {name}.hea/.dat/.atr")
    header = read_header(hea)
    formats = {s.fmt for s in header.signals}
    files = {s.file for s in header.signals}
    if formats != {"212"} or len(files) != 1:
        raise DataError(
            f"{hea}: only one format-212 signal file is supported, got formats {sorted(formats)}"
            f" in files {sorted(files)}"
        )
    dat = root / files.pop()
    digital = read_format212(dat, len(header.signals))
    _check_signals(digital, header, str(dat))
    base = np.array([s.baseline for s in header.signals], dtype=np.float64)
    gain = np.array([s.gain for s in header.signals], dtype=np.float64)
    physical = (digital - base) / gain
    samples, symbols = read_annotations(root / f"{name}.atr")
    beat = np.array([s in BEAT_SYMBOLS for s in symbols], dtype=bool)
    return Record(
        name=header.record,
        fs=header.fs,
        signal_names=tuple(s.name for s in header.signals),
        units=tuple(s.units for s in header.signals),
        signals=physical,
        beat_samples=samples[beat],
        beat_symbols=tuple(s for s, b in zip(symbols, beat, strict=True) if b),
    )


def record_split(
    folder: str | Path,
    cycles: str,
    *,
    record: str = "100",
    lead: str = "MLII",
    train_fraction: float = 0.35,
) -> CycleSplit:
    """The protocol of an MIT-BIH record (:func:`model.evaluation.cycles.cycle_split`): lead
    ``lead`` cut by the ``cycles`` spec (``fixed:LEN[:HOP]``, ``oracle[:FRACTION]`` from the
    beat annotations, or a registered cutter fitted on the training part), the normal cycles
    of the first ``train_fraction`` train, the cycles of the rest test, labelled by their
    abnormal beats."""
    rec = read_record(folder, record)
    x = rec.lead(lead)
    n_train = int(train_fraction * len(x))
    training = [(rec.timestamps[:n_train], x[:n_train])]
    cutter = cutter_from_spec(cycles, events=rec.beat_samples, training=training)
    return cycle_split(
        x,
        cutter,
        name=f"mitdb:{rec.name}:{lead}",
        timestamps=rec.timestamps,
        events=rec.beat_samples,
        abnormal=rec.abnormal_beats,
        train_fraction=train_fraction,
    )
