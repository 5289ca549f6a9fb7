"""Message schemas of the two topics, shared by producers, the worker and the tests.

``ts.raw`` (key = series id, value = JSON), one of:

* one sample: ``{"series_id": str, "timestamp": float | ISO-8601, "value": float | [float]}``
* a regularly sampled chunk:
  ``{"series_id": str, "start": float | ISO-8601, "interval": float > 0, "values": [...]}``

A list value is one multivariate sample; every sample of one message has the same width.
Timestamps are seconds (ISO-8601 strings are converted to Unix seconds, naive ones as UTC).

``ts.anomalies`` (key = series id): one :class:`AnomalyRecord` per scored window.
``ts.incidents`` (key = series id): :class:`~worker.stream.incident_record.IncidentRecord`.

:func:`decode_raw` turns raw bytes into a validated message or raises
:class:`~worker.errors.MessageError` whose ``reason`` is routed to the dead-letter topic;
:func:`decode_samples` (the worker's) gives the same verdicts and reasons, and the arrays, faster.
Run ``python -m worker.stream.messages DIR`` to export the JSON Schema files kept under ``docs/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema

from worker.errors import MessageError
from worker.stream.incident_record import IncidentRecord

MAX_MESSAGE_BYTES = 1_048_576
MAX_SAMPLES_PER_MESSAGE = 10_000
MAX_FEATURES = 256
MAX_SERIES_ID_LENGTH = 256


def _finite_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("number is too large") from None
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _sample_value(value: Any) -> float | list[float]:
    if isinstance(value, list):
        if not 1 <= len(value) <= MAX_FEATURES:
            raise ValueError(
                f"a multivariate sample needs 1..{MAX_FEATURES} numbers, got {len(value)}"
            )
        return [_finite_number(v) for v in value]
    try:
        return _finite_number(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (or a list of numbers)") from None


def _timestamp(value: Any) -> float | str:
    if isinstance(value, str):
        to_seconds(value)
        return value
    try:
        return _finite_number(value)
    except ValueError as exc:
        raise ValueError(f"{exc} or an ISO-8601 string") from None


_NUMBER_SCHEMA: dict[str, Any] = {"type": "number"}
Number = Annotated[float, PlainValidator(_finite_number), WithJsonSchema(_NUMBER_SCHEMA)]
SampleValue = Annotated[
    float | list[float],
    PlainValidator(_sample_value),
    WithJsonSchema(
        {
            "oneOf": [
                _NUMBER_SCHEMA,
                {"type": "array", "items": _NUMBER_SCHEMA, "minItems": 1, "maxItems": MAX_FEATURES},
            ],
            "description": "a finite number, or a list of them (one multivariate sample)",
        }
    ),
]
Timestamp = Annotated[
    float | str,
    PlainValidator(_timestamp),
    WithJsonSchema(
        {
            "oneOf": [_NUMBER_SCHEMA, {"type": "string", "format": "date-time"}],
            "description": "Unix seconds, or an ISO-8601 string (naive = UTC)",
        }
    ),
]
SeriesId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_SERIES_ID_LENGTH,
        description="1-256 printable characters",
    ),
]


def _check_series_id(value: str) -> str:
    if not value.isprintable():
        raise ValueError("series_id must contain printable characters only")
    return value


def to_seconds(ts: float | str) -> float:
    """Unix seconds from a number or an ISO-8601 string (naive strings are taken as UTC)."""
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            raise ValueError(f"timestamp {ts[:64]!r} is neither a number nor ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    value = float(ts)
    if not math.isfinite(value):
        raise ValueError("timestamp must be finite")
    return value


def _width(value: float | list[float]) -> int:
    return len(value) if isinstance(value, list) else 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RawSample(_Strict):
    """One sample of one series."""

    series_id: SeriesId
    timestamp: Timestamp
    value: SampleValue

    _series_id = field_validator("series_id")(_check_series_id)

    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps (1,), values (1, F)) as float64 arrays."""
        row = self.value if isinstance(self.value, list) else [self.value]
        return np.array([to_seconds(self.timestamp)]), np.array([row], dtype=np.float64)


class RawChunk(_Strict):
    """Consecutive, regularly sampled values of one series starting at ``start``."""

    series_id: SeriesId
    start: Timestamp
    interval: Annotated[
        float,
        PlainValidator(_finite_number),
        WithJsonSchema({"type": "number", "exclusiveMinimum": 0}),
        Field(description="seconds between samples (> 0)"),
    ]
    values: Annotated[list[SampleValue], Field(min_length=1, max_length=MAX_SAMPLES_PER_MESSAGE)]

    _series_id = field_validator("series_id")(_check_series_id)

    @model_validator(mode="after")
    def _same_width(self) -> RawChunk:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        widths = {_width(v) for v in self.values}
        if len(widths) > 1:
            raise ValueError(f"all samples of a chunk must have one width, got {sorted(widths)}")
        return self

    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps (n,), values (n, F)) as float64 arrays."""
        rows = [v if isinstance(v, list) else [v] for v in self.values]
        t0 = to_seconds(self.start)
        ts = t0 + float(self.interval) * np.arange(len(rows), dtype=np.float64)
        return ts, np.array(rows, dtype=np.float64)


RawMessage = RawSample | RawChunk


def decode_raw(value: bytes | None, key: bytes | None = None) -> RawMessage:
    """Validate one ``ts.raw`` record; raises MessageError with the reason on any problem."""
    if value is None:
        raise MessageError("empty record value (tombstone); expected a JSON object")
    if len(value) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(value)} bytes exceeds the {MAX_MESSAGE_BYTES} limit")
    try:
        payload = json.loads(value, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise MessageError("value is not UTF-8 text; expected a JSON object") from None
    except json.JSONDecodeError as exc:
        raise MessageError(f"value is not valid JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:  # ~1000 nested brackets: a poison pill if it escaped the worker
        raise MessageError(
            "value nests arrays or objects too deeply to decode; expected a flat JSON object"
        ) from None
    except ValueError as exc:
        raise MessageError(str(exc)) from None
    if not isinstance(payload, dict):
        raise MessageError(f"expected a JSON object, got {type(payload).__name__}")
    model: type[RawSample] | type[RawChunk] = RawChunk if "values" in payload else RawSample
    try:
        msg = model.model_validate(payload)
    except ValidationError as exc:
        raise MessageError(_reason(exc, model.__name__)) from None
    if key is not None and key != msg.series_id.encode():
        raise MessageError(
            f"record key {key[:64]!r} differs from series_id {msg.series_id[:64]!r};"
            " produce with key = series_id so one series stays on one partition"
        )
    return msg


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in message; only finite numbers are accepted")


def _reason(exc: ValidationError, model: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return f"invalid {model}: " + "; ".join(parts) + more


# --------------------------------------------------------------------------- fast path


@dataclass(frozen=True, slots=True)
class Decoded:
    """What the streaming core needs of one valid ``ts.raw`` record."""

    series_id: str
    timestamps: np.ndarray  # (n,) float64, Unix seconds
    values: np.ndarray  # (n, F) float64


def decode_samples(value: bytes | None, key: bytes | None = None) -> Decoded:
    """:func:`decode_raw` then ``samples()``, with the same reasons and bit-identical arrays.

    A fast path accepts only records it is certain the pydantic models accept (the common
    shapes: numbers, numeric or ISO timestamps, one width per record); anything else goes
    through :func:`decode_raw`, which accepts or raises the reason. The fast path never
    rejects, so the dead-letter reasons are :func:`decode_raw`'s by construction
    (tests/test_decoding.py fuzzes the agreement).
    """
    fast = _fast_decode(value, key)
    if fast is not None:
        return fast
    msg = decode_raw(value, key)
    timestamps, values = msg.samples()
    return Decoded(msg.series_id, timestamps, values)


_SAMPLE_KEYS = frozenset(("series_id", "timestamp", "value"))
_CHUNK_KEYS = frozenset(("series_id", "start", "interval", "values"))


def _fast_decode(value: bytes | None, key: bytes | None) -> Decoded | None:
    """The record's arrays when it is certainly valid, None when in any doubt."""
    if value is None or len(value) > MAX_MESSAGE_BYTES:
        return None
    try:
        # orjson is stricter than decode_raw's json.loads (no NaN/Infinity, BOM, UTF-16/32
        # or lone surrogates) and gives the same objects, except integers beyond 64 bits,
        # which come as floats, rounded as the models' float(int) rounds them
        payload = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(payload) is not dict:
        return None
    series_id = payload.get("series_id")
    if not (
        type(series_id) is str
        and 0 < len(series_id) <= MAX_SERIES_ID_LENGTH
        and series_id.isprintable()
        and (key is None or key == series_id.encode())
    ):
        return None
    keys = payload.keys()
    if keys == _SAMPLE_KEYS:
        return _fast_sample(series_id, payload["timestamp"], payload["value"])
    if keys == _CHUNK_KEYS:
        return _fast_chunk(series_id, payload["start"], payload["interval"], payload["values"])
    return None


def _fast_sample(series_id: str, timestamp: Any, value: Any) -> Decoded | None:
    t = _fast_seconds(timestamp)
    if t is None:
        return None
    if type(value) is list:
        row = _fast_numbers(value) if 0 < len(value) <= MAX_FEATURES else None
    else:
        number = _fast_number(value)
        row = None if number is None else [number]
    if row is None:
        return None
    return Decoded(series_id, np.array([t]), np.array([row], dtype=np.float64))


def _fast_chunk(series_id: str, start: Any, interval: Any, values: Any) -> Decoded | None:
    t0 = _fast_seconds(start)
    step = _fast_number(interval)
    if t0 is None or step is None or step <= 0:
        return None
    if type(values) is not list or not 0 < len(values) <= MAX_SAMPLES_PER_MESSAGE:
        return None
    kinds = set(map(type, values))
    if kinds == {list}:  # multivariate: one width, every row numbers only
        if len(set(map(len, values))) != 1 or not 0 < len(values[0]) <= MAX_FEATURES:
            return None
        rows = [_fast_numbers(row) for row in values]
        if any(row is None for row in rows):
            return None
        array = np.array(rows, dtype=np.float64)
    else:  # univariate (a mix of numbers and one-number lists is left to decode_raw)
        numbers = _fast_numbers(values, kinds)
        if numbers is None:
            return None
        array = np.array(numbers, dtype=np.float64).reshape(-1, 1)
    timestamps = t0 + step * np.arange(len(values), dtype=np.float64)
    return Decoded(series_id, timestamps, array)


def _fast_number(value: Any) -> float | None:
    """:func:`_finite_number`'s float, None where it would raise."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:  # never bool: type() is exact; float(int) is finite or raises
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _fast_numbers(items: list[Any], kinds: set[type] | None = None) -> list[float] | None:
    """``[_finite_number(v) for v in items]``, None where that would raise."""
    kinds = set(map(type, items)) if kinds is None else kinds
    if kinds == {float}:
        numbers = items
    elif kinds == {int} or kinds == {int, float}:
        try:
            numbers = [float(v) for v in items]  # exactly pydantic's conversion
        except OverflowError:
            return None
    else:
        return None
    # a non-finite item makes the sum non-finite; a sum that overflows only costs a fallback
    return numbers if math.isfinite(sum(numbers)) else None


def _fast_seconds(ts: Any) -> float | None:
    """:func:`to_seconds` of a valid :data:`Timestamp`, None where validation might fail."""
    if type(ts) is str:
        try:
            return to_seconds(ts)  # the very call the models' validator and samples() make
        except Exception:  # any doubt: decode_raw decides (and reports) it
            return None
    return _fast_number(ts)


# --------------------------------------------------------------------------- ts.anomalies


class ModelRef(_Strict):
    name: str
    version: int = Field(ge=1)


class WindowRef(_Strict):
    """The window scored: one cycle of the series as the model's cutter found it (cycles vary
    in length), or a fixed window for models without cycles."""

    start: float = Field(description="timestamp of the first sample (Unix seconds)")
    end: float = Field(description="timestamp of the last sample (Unix seconds)")
    n_samples: int = Field(ge=1, description="samples in the window (varies from cycle to cycle)")


class SegmentRecord(_Strict):
    start: float = Field(description="timestamp of the segment's first sample")
    end: float = Field(description="timestamp of the segment's last sample")
    start_index: int = Field(ge=0, description="sample index in the window (inclusive)")
    end_index: int = Field(ge=0, description="sample index in the window (inclusive)")
    energy: float
    anomalous: bool


class SourceRef(_Strict):
    topic: str
    partition: int = Field(ge=0)
    first_offset: int = Field(ge=0)
    last_offset: int = Field(ge=0)


class AnomalyRecord(_Strict):
    """One scored window on ``ts.anomalies``."""

    schema_version: Literal[1] = 1
    id: str = Field(description="deterministic: same series, window start and model -> same id")
    series_id: SeriesId
    model: ModelRef
    window: WindowRef
    energy: float = Field(description="window score (max of segment energies by default)")
    threshold: float
    score: float | None = Field(
        default=None, description="energy / threshold: > 1 = anomalous (see window_score)"
    )
    anomalous: bool
    percentile: float = Field(ge=0, le=100, description="of the score among normal scores")
    segments: list[SegmentRecord]
    scored_at: float = Field(description="Unix seconds")
    source: SourceRef | None = None
    quality: list[str] = Field(default_factory=list, description="data-quality flags")
    samples: list[list[float]] | None = Field(
        default=None, description="the window's values (n_samples x F), when enabled"
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def window_score(energy: float, threshold: float) -> float | None:
    """``energy / threshold`` (> 1 means anomalous) for a positive threshold; for a negative one
    ``1 + (energy - threshold) / |threshold|`` (still > 1 exactly when anomalous); None for 0."""
    if threshold > 0:
        return energy / threshold
    return 1.0 + (energy - threshold) / -threshold if threshold < 0 else None


def record_id(series_id: str, window_start: float, model_name: str, model_version: int) -> str:
    """Deterministic record id, so consumers can de-duplicate replays."""
    raw = f"{series_id}\x1f{window_start!r}\x1f{model_name}\x1f{model_version}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


# --------------------------------------------------------------------------- JSON Schema

SCHEMAS: dict[str, type[BaseModel]] = {
    "ts.raw.sample.schema.json": RawSample,
    "ts.raw.chunk.schema.json": RawChunk,
    "ts.anomalies.schema.json": AnomalyRecord,
    "ts.incidents.schema.json": IncidentRecord,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    return {name: model.model_json_schema() for name, model in SCHEMAS.items()}


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - exercised by `make schemas`
    for p in export_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
        print(p)
