"""The bytes between the worker and its scoring process: a tiny explicit framing, no pickle.

A frame is ``MAGIC`` (4 bytes), a kind (1 byte), the number of parts (u32) and each part's
length (u64), then the parts one after the other; all little-endian. Arrays travel as raw
little-endian bytes and are read back with :func:`numpy.frombuffer` after their sizes were
checked, so nothing from the other process is ever unpickled. The messages:

* ``LOAD`` (worker -> child): name, version, the registry version's metadata (JSON) and its
  safetensors weights; the child rebuilds the detector with ``checkpoint_from_bytes``, which
  checks the weights' sha256 again. Answered by ``LOADED``.
* ``SCORE``: name, version, the windows' shapes ((n, 2) int64: length and width, width -1 for
  1-D windows) and their values (float64, concatenated). Answered by ``SCORED``: per window
  energy and percentile (float64), its number of segments (int64), then every segment's start,
  end (int64) and energy (float64).
* ``FAILED`` (either request): whether the windows are at fault (a ``Seq2GMMError`` while
  scoring them: the core then isolates and dead-letters the bad one, as in process) and the
  message.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model.errors import Seq2GMMError
from worker.stream.served import ScoredWindow, SegmentScore

MAGIC = b"S2G1"
LOAD, LOADED, SCORE, SCORED, FAILED = b"L", b"K", b"S", b"R", b"E"
KINDS = frozenset({LOAD, LOADED, SCORE, SCORED, FAILED})
_HEAD = struct.Struct("<4scI")
_LENGTH = struct.Struct("<Q")
MAX_PARTS = 16

F64 = np.dtype("<f8")
I64 = np.dtype("<i8")


class FrameError(Seq2GMMError):
    """A frame between the worker and its scoring process is malformed (a bug or a version
    mismatch between the two sides): restart the worker; report it if it persists."""


def pack(kind: bytes, parts: Sequence[bytes]) -> bytes:
    """One frame of ``kind`` holding ``parts``."""
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind!r}")
    if len(parts) > MAX_PARTS:
        raise FrameError(f"a frame holds at most {MAX_PARTS} parts, not {len(parts)}")
    head = _HEAD.pack(MAGIC, kind, len(parts))
    lengths = b"".join(_LENGTH.pack(len(p)) for p in parts)
    return b"".join([head, lengths, *parts])


def unpack(frame: bytes, expected: bytes | None = None) -> tuple[bytes, list[memoryview]]:
    """(kind, parts) of a frame; :class:`FrameError` unless it is well formed (and of kind
    ``expected`` or ``FAILED`` when ``expected`` is given)."""
    view = memoryview(frame)
    if len(view) < _HEAD.size:
        raise FrameError(f"frame of {len(view)} bytes is shorter than its header")
    magic, kind, count = _HEAD.unpack_from(view)
    if magic != MAGIC:
        raise FrameError(f"frame starts with {bytes(magic)!r}, not {MAGIC!r}")
    if kind not in KINDS or (expected is not None and kind not in (expected, FAILED)):
        raise FrameError(f"unexpected frame kind {kind!r} (expected {expected!r})")
    if count > MAX_PARTS:
        raise FrameError(f"frame claims {count} parts (at most {MAX_PARTS})")
    at = _HEAD.size + count * _LENGTH.size
    if len(view) < at:
        raise FrameError("frame is truncated in its part lengths")
    lengths = [_LENGTH.unpack_from(view, _HEAD.size + i * _LENGTH.size)[0] for i in range(count)]
    if at + sum(lengths) != len(view):
        raise FrameError(f"frame parts add up to {at + sum(lengths)} bytes, not {len(view)}")
    parts = []
    for n in lengths:
        parts.append(view[at : at + n])
        at += n
    return kind, parts


def _array(part: memoryview, dtype: np.dtype[Any], count: int | None = None) -> np.ndarray:
    if len(part) % dtype.itemsize:
        raise FrameError(f"array part of {len(part)} bytes is not a whole number of {dtype}")
    arr = np.frombuffer(part, dtype=dtype)
    if count is not None and len(arr) != count:
        raise FrameError(f"array part holds {len(arr)} values, expected {count}")
    return arr


def _text(part: memoryview) -> str:
    try:
        return bytes(part).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"text part is not UTF-8: {exc}") from None


def _parts(parts: list[memoryview], n: int, what: str) -> list[memoryview]:
    if len(parts) != n:
        raise FrameError(f"a {what} frame has {n} parts, this one {len(parts)}")
    return parts


def _version(part: memoryview) -> int:
    text = _text(part)
    if not text.isdigit():
        raise FrameError(f"model version {text[:20]!r} is not a number")
    return int(text)


# --------------------------------------------------------------------------- messages


def load_frame(name: str, version: int, metadata: Mapping[str, Any], weights: bytes) -> bytes:
    meta = json.dumps(dict(metadata)).encode()
    return pack(LOAD, [name.encode(), str(version).encode(), meta, weights])


def read_load(parts: list[memoryview]) -> tuple[str, int, dict[str, Any], bytes]:
    name, version, meta, weights = _parts(parts, 4, "load")
    try:
        metadata = json.loads(_text(meta))
    except json.JSONDecodeError as exc:
        raise FrameError(f"model metadata is not JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise FrameError("model metadata must be a JSON object")
    return _text(name), _version(version), metadata, bytes(weights)


def score_frame(name: str, version: int, windows: Sequence[np.ndarray]) -> bytes:
    arrays = [np.ascontiguousarray(w, dtype=F64) for w in windows]
    if any(a.ndim not in (1, 2) for a in arrays):
        raise FrameError("windows must be (L,) or (L, F) arrays")
    shapes = np.array(
        [(a.shape[0], a.shape[1] if a.ndim == 2 else -1) for a in arrays], dtype=I64
    ).reshape(-1, 2)
    values = b"".join(a.tobytes() for a in arrays)
    return pack(SCORE, [name.encode(), str(version).encode(), shapes.tobytes(), values])


def read_score(parts: list[memoryview]) -> tuple[str, int, list[np.ndarray]]:
    name, version, shapes_part, values_part = _parts(parts, 4, "score")
    flat = _array(shapes_part, I64)
    if len(flat) % 2:
        raise FrameError("window shapes must be (length, width) pairs")
    shapes = flat.reshape(-1, 2)
    if (shapes[:, 0] < 0).any() or (shapes[:, 1] < -1).any():
        raise FrameError("window shapes must not be negative")
    sizes = shapes[:, 0] * np.where(shapes[:, 1] < 0, 1, shapes[:, 1])
    values = _array(values_part, F64, int(sizes.sum()))
    windows, at = [], 0
    for (length, width), size in zip(shapes.tolist(), sizes.tolist(), strict=True):
        w = values[at : at + size]
        windows.append(w if width < 0 else w.reshape(length, width))
        at += size
    return _text(name), _version(version), windows


def scored_frame(scored: Sequence[ScoredWindow]) -> bytes:
    segs = [s for w in scored for s in w.segments]
    arrays = [
        np.array([w.energy for w in scored], dtype=F64),
        np.array([w.percentile for w in scored], dtype=F64),
        np.array([len(w.segments) for w in scored], dtype=I64),
        np.array([s.start_index for s in segs], dtype=I64),
        np.array([s.end_index for s in segs], dtype=I64),
        np.array([s.energy for s in segs], dtype=F64),
    ]
    return pack(SCORED, [a.tobytes() for a in arrays])


def read_scored(parts: list[memoryview], n_windows: int) -> list[ScoredWindow]:
    p = _parts(parts, 6, "scored")
    energy, pct = _array(p[0], F64, n_windows), _array(p[1], F64, n_windows)
    counts = _array(p[2], I64, n_windows)
    if (counts < 0).any():
        raise FrameError("negative segment count")
    n_segs = int(counts.sum())
    starts, ends = _array(p[3], I64, n_segs).tolist(), _array(p[4], I64, n_segs).tolist()
    seg_energy = _array(p[5], F64, n_segs).tolist()
    out, at = [], 0
    for e, q, c in zip(energy.tolist(), pct.tolist(), counts.tolist(), strict=True):
        segments = tuple(SegmentScore(starts[i], ends[i], seg_energy[i]) for i in range(at, at + c))
        out.append(ScoredWindow(energy=e, percentile=q, segments=segments))
        at += c
    return out


def failed_frame(windows_at_fault: bool, message: str) -> bytes:
    return pack(FAILED, [b"1" if windows_at_fault else b"0", message.encode()])


def read_failed(parts: list[memoryview]) -> tuple[bool, str]:
    fault, message = _parts(parts, 2, "failed")
    return bytes(fault) == b"1", _text(message)
