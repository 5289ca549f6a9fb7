"""The worker's fast decoder (``decode_samples``) against the pydantic path
(``decode_raw(...).samples()``): a seeded fuzz of valid and broken ``ts.raw`` records must get
the same accept/reject, the same exception and reason, and bit-identical arrays; and the
fast path must carry the common valid shapes (else it saves nothing).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from worker.errors import MessageError
from worker.stream.messages import (
    MAX_FEATURES,
    MAX_MESSAGE_BYTES,
    MAX_SAMPLES_PER_MESSAGE,
    MAX_SERIES_ID_LENGTH,
    Decoded,
    _fast_decode,
    _fast_number,
    _fast_numbers,
    decode_raw,
    decode_samples,
)

SEED = 18
N_MESSAGES = 6000

Record = tuple[bytes | None, bytes | None]
Decoder = Callable[[bytes | None, bytes | None], Decoded]


def reference(value: bytes | None, key: bytes | None) -> Decoded:
    msg = decode_raw(value, key)
    timestamps, values = msg.samples()
    return Decoded(msg.series_id, timestamps, values)


def _bits(a: np.ndarray) -> tuple[Any, ...]:
    return (a.dtype.str, a.shape, a.flags.c_contiguous, a.tobytes())


def accepted(d: Decoded) -> tuple[Any, ...]:
    return ("accepted", d.series_id, _bits(d.timestamps), _bits(d.values))


def outcome(decode: Decoder, value: bytes | None, key: bytes | None) -> tuple[Any, ...]:
    try:
        d = decode(value, key)
    except Exception as exc:  # the reference may raise anything; the fast one must match it
        return ("rejected", type(exc).__name__, str(exc))
    return accepted(d)


# --------------------------------------------------------------------------- the fuzz

BIG_INTS = (
    2**53 + 1,
    2**63,
    2**64 + 1,
    -(2**63) - 1,
    10**308,
    2**1024 - 2**970,  # rounds to inf: float() overflows
    2**1024 - 2**971,  # the largest double exactly
    2**1024 - 2**970 - 1,  # just below the rounding boundary: the largest double
)
BAD_VALUES: tuple[Any, ...] = (
    "1.0",
    "",
    True,
    False,
    None,
    {},
    {"x": 1},
    [],
    [[]],
    [True],
    [1, "2"],
    [1, None],
    [[1, 2], [3]],
    [1.0] * (MAX_FEATURES + 1),
    10**400,
    -(10**400),
    0,
    -1,
    -0.0,
    "yesterday",
    "2024-13-01",
    "2024-01-01T00:00:00+25:00",
)
BAD_SERIES_IDS: tuple[Any, ...] = (
    7,
    "",
    "x" * (MAX_SERIES_ID_LENGTH + 1),
    "a\nb",
    "a\tb",
    "\x00",
    "\u2028",
    "\u00a0",
    "\ud800",
    ["a"],
    None,
)
NUMBER_SPELLINGS = (
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"-0",
    b"-0.0",
    b"9" * 5000,
    str(2**1024).encode(),
    b"true",
    b'"1"',
    b"null",
    b"{}",
    b"[]",
)
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


class Fuzz:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def number(self) -> Any:
        r = self.rng
        pick = r.random()
        if pick < 0.5:
            return r.uniform(-1e3, 1e3)
        if pick < 0.7:
            return r.randint(-(10**6), 10**6)
        if pick < 0.8:
            return r.choice((0, 0.0, -0.0, 5e-324, -1e-320, 1.7976931348623157e308, 0.1 + 0.2))
        if pick < 0.9:
            return r.choice(BIG_INTS)
        bits = r.choice((r.randint(54, 64), r.randint(65, 1030)))  # rounded by float()
        return r.getrandbits(bits) * r.choice((1, -1))

    def series_id(self) -> str:
        r = self.rng
        pick = r.random()
        if pick < 0.6:
            return "".join(r.choices("abcxyz019-_./: ", k=r.randint(1, 24)))
        if pick < 0.9:
            return r.choice(("é", "日本-eth0", "😀", "Ωmega", " ", "a b", "\\", '"q"'))
        return "s" * MAX_SERIES_ID_LENGTH

    def timestamp(self) -> Any:
        r = self.rng
        pick = r.random()
        if pick < 0.5:
            return 1.7e9 + r.uniform(0, 1e6)
        if pick < 0.6:
            return r.randint(0, 2 * 10**9)
        return r.choice(
            (
                "2024-01-01T00:00:00",
                "2024-01-01T00:00:00Z",
                "2024-02-29T12:34:56.123456+05:30",
                "2024-01-01",
                "2024-01-01 12:00:00",
                "0001-01-01T00:00:00+01:00",
                "9999-12-31T23:59:59-05:00",
            )
        )

    def sample_value(self, width: int | None) -> Any:
        if width is None:
            return self.number()
        return [self.number() for _ in range(width)]

    def width(self) -> int | None:
        r = self.rng
        return r.choice((None, None, None, 1, 2, 3, 5, r.choice((MAX_FEATURES, 1))))

    def valid(self) -> dict[str, Any]:
        r = self.rng
        width = self.width()
        if r.random() < 0.5:
            return {
                "series_id": self.series_id(),
                "timestamp": self.timestamp(),
                "value": self.sample_value(width),
            }
        n = r.choice((1, 2, 82, r.randint(1, 100)))
        if width == MAX_FEATURES:
            n = r.randint(1, 3)
        elif r.random() < 0.002:
            n, width = r.choice((MAX_SAMPLES_PER_MESSAGE, MAX_SAMPLES_PER_MESSAGE + 1)), None
        values = [self.sample_value(width) for _ in range(n)]
        if r.random() < 0.05:  # numbers and one-number lists: valid, left to decode_raw
            values = [
                v if i % 2 else [v] for i, v in enumerate(self.sample_value(None) for _ in range(n))
            ]
        interval = r.choice((0.004, 1, 60.0, 5e-324, 1e300, r.uniform(1e-3, 10)))
        return {
            "series_id": self.series_id(),
            "start": self.timestamp(),
            "interval": interval,
            "values": values,
        }

    def mutate(self, msg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        r = self.rng
        msg = dict(msg)
        pick = r.randrange(6)
        if pick == 0:
            msg[r.choice(sorted(msg))] = r.choice(BAD_VALUES)
            return "bad field", msg
        if pick == 1 and "values" in msg:
            values = list(msg["values"])
            values[r.randrange(len(values))] = r.choice((*BAD_VALUES, [1, 2]))
            msg["values"] = values
            return "bad element", msg
        if pick == 2:
            del msg[r.choice(sorted(msg))]
            return "missing key", msg
        if pick == 3:
            msg[r.choice(("x", "values", "value", "timestamp", "start", "Series_id"))] = (
                self.number()
            )
            return "extra key", msg
        if pick == 4:
            msg["series_id"] = r.choice(BAD_SERIES_IDS)
            return "bad series_id", msg
        msg["interval" if "interval" in msg else "timestamp"] = r.choice(
            (0, -1, -0.0, 0.0, "1", True)
        )
        return "bad interval/timestamp", msg

    def encode(self, msg: dict[str, Any]) -> tuple[str, bytes]:
        r = self.rng
        text = json.dumps(
            msg, separators=r.choice(((",", ":"), (", ", ": "))), ensure_ascii=r.random() < 0.5
        )
        raw = text.encode("utf-8", "surrogatepass")
        pick = r.random()
        if pick < 0.55:
            return "plain", raw
        if pick < 0.7:
            numbers = list(NUMBER.finditer(raw))
            if numbers:
                m = r.choice(numbers)
                return "number spelling", raw[: m.start()] + r.choice(NUMBER_SPELLINGS) + raw[
                    m.end() :
                ]
        if pick < 0.75:
            return "truncated", raw[: r.randrange(len(raw))]
        if pick < 0.8:
            at = r.randrange(len(raw) + 1)
            return "bad utf-8", raw[:at] + r.choice(
                (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00")
            ) + raw[at:]
        if pick < 0.83:
            return "bom", b"\xef\xbb\xbf" + raw
        if pick < 0.86:
            return "utf-16", text.encode(
                "utf-16" if r.random() < 0.5 else "utf-16-le", "surrogatepass"
            )
        if pick < 0.9:
            return "duplicate key", b'{"series_id": "dup", ' + raw[1:]
        if pick < 0.93:
            return "whitespace", b" \n\t" + raw + b"\r\n "
        if pick < 0.96:
            depth = r.choice((3, 900, 1100, 5000))
            nested = b"[" * depth + b"1" + b"]" * depth
            return "nested", raw.replace(b'"values": [', b'"values": [' + nested + b",", 1)
        return "not an object", r.choice((b"[1, 2]", b'"a"', b"1", b"null", b"", b"{}"))

    def key(self, raw: bytes, msg: dict[str, Any]) -> bytes | None:
        r = self.rng
        sid = msg.get("series_id")
        own = sid.encode("utf-8", "surrogatepass") if isinstance(sid, str) else b"7"
        return r.choice((None, None, own, own, own, own, b"other", own + b"x", own.upper()))

    def record(self) -> tuple[str, bytes | None, bytes | None]:
        r = self.rng
        if r.random() < 0.002:
            return "tombstone", None, r.choice((None, b"a"))
        msg = self.valid()
        label = "valid"
        if r.random() < 0.4:
            label, msg = self.mutate(msg)
        how, raw = self.encode(msg)
        if r.random() < 0.001:
            how, raw = "oversized", raw + b" " * (MAX_MESSAGE_BYTES + 1 - len(raw))
        return f"{label}/{how}", raw, self.key(raw, msg)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # both paths: inf stamps
def test_fuzz_fast_path_agrees_with_the_pydantic_path() -> None:
    fuzz = Fuzz(SEED)
    tally: Counter[str] = Counter()
    for _ in range(N_MESSAGES):
        label, value, key = fuzz.record()
        expected = outcome(reference, value, key)
        got = outcome(decode_samples, value, key)
        assert got == expected, (label, value[:300] if value else value, key)
        fast = _fast_decode(value, key)
        if fast is not None:  # the fast path accepts only what the models accept, identically
            assert accepted(fast) == expected, (label, value, key)
        tally["fast" if fast is not None else expected[0]] += 1
    # all outcomes are exercised, and the fast path carries most of the valid records (the
    # rest: BOM, UTF-16, numbers and one-number lists mixed, sums beyond the float range)
    assert tally["rejected"] > 0.3 * N_MESSAGES and tally["accepted"] > 50, tally
    assert tally["fast"] > 0.75 * (tally["fast"] + tally["accepted"]), tally


# --------------------------------------------------------------------------- fast-path reach


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


COMMON = {
    "one sample": {"series_id": "a", "timestamp": 1700000000.5, "value": 3.25},
    "int sample": {"series_id": "a", "timestamp": 17, "value": -4},
    "huge int": {"series_id": "a", "timestamp": 1, "value": 2**70 + 1},
    "iso sample": {"series_id": "a", "timestamp": "2024-01-01T00:00:00Z", "value": 1.0},
    "multivariate sample": {"series_id": "a", "timestamp": 5, "value": [1.0, 2, -0.0]},
    "chunk": {"series_id": "a", "start": 10, "interval": 0.5, "values": [1.0, 2, 3.5]},
    "multivariate chunk": {
        "series_id": "a",
        "start": 10,
        "interval": 1,
        "values": [[1, 2], [3.0, 4]],
    },
}


@pytest.mark.parametrize("case", sorted(COMMON))
def test_common_shapes_take_the_fast_path(case: str) -> None:
    raw = enc(COMMON[case])
    fast = _fast_decode(raw, b"a")
    assert fast is not None
    assert accepted(fast) == outcome(reference, raw, b"a")


def test_decoded_arrays_have_the_documented_shapes() -> None:
    d = decode_samples(enc(COMMON["multivariate chunk"]))
    assert d.series_id == "a"
    assert d.timestamps.tolist() == [10.0, 11.0] and d.values.tolist() == [[1, 2], [3, 4]]
    one = decode_samples(enc(COMMON["one sample"]))
    assert one.timestamps.shape == (1,) and one.values.shape == (1, 1)


def sample(**fields: Any) -> dict[str, Any]:
    return {"series_id": "a", "timestamp": 1.5, "value": 2.5, **fields}


def chunk(**fields: Any) -> dict[str, Any]:
    return {"series_id": "a", "start": 1.5, "interval": 0.25, "values": [2.5], **fields}


#: (at the limit: valid, beyond it: invalid)
LIMITS = {
    "series_id length": (
        sample(series_id="s" * MAX_SERIES_ID_LENGTH),
        sample(series_id="s" * (MAX_SERIES_ID_LENGTH + 1)),
    ),
    "sample width": (sample(value=[1.0] * MAX_FEATURES), sample(value=[1.0] * (MAX_FEATURES + 1))),
    "empty sample": (sample(value=[1.0]), sample(value=[])),
    "chunk width": (
        chunk(values=[[1.0] * MAX_FEATURES] * 2),
        chunk(values=[[1.0] * (MAX_FEATURES + 1)] * 2),
    ),
    "chunk length": (
        chunk(values=[1] * MAX_SAMPLES_PER_MESSAGE),
        chunk(values=[1] * (MAX_SAMPLES_PER_MESSAGE + 1)),
    ),
    "empty chunk": (chunk(values=[1.0]), chunk(values=[])),
    "empty row": (chunk(values=[[1.0]]), chunk(values=[[]])),
    "one width": (chunk(values=[[1, 2], [3, 4]]), chunk(values=[[1, 2], [3]])),
    "interval": (chunk(interval=5e-324), chunk(interval=0)),
    "negative zero interval": (chunk(interval=0.25), chunk(interval=-0.0)),
}


@pytest.mark.parametrize("case", sorted(LIMITS))
def test_limits_fast_path_at_the_limit_and_the_models_reason_beyond(case: str) -> None:
    at, beyond = (enc(m) for m in LIMITS[case])
    fast = _fast_decode(at, None)
    assert fast is not None
    assert accepted(fast) == outcome(reference, at, None)
    assert _fast_decode(beyond, None) is None
    with pytest.raises(MessageError) as exc:
        decode_samples(beyond, None)
    assert outcome(reference, beyond, None) == ("rejected", "MessageError", exc.value.reason)


def test_non_finite_numbers_never_take_the_fast_path() -> None:
    """orjson rejects NaN, Infinity and 1e400 today; the checks hold should the parser change."""
    for bad in (math.inf, -math.inf, math.nan):
        assert _fast_number(bad) is None
        assert _fast_numbers([1.0, bad]) is None
        assert _fast_numbers([1, bad]) is None
    assert _fast_number(10**400) is None and _fast_numbers([1, 10**400]) is None


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting_is_a_dead_letter_not_a_crash(depth: int) -> None:
    """json.loads raises RecursionError, which ingest does not catch: the worker would die on
    the record, restart, read it again and die again."""
    nested = b"[" * depth + b"]" * depth
    for raw in (nested, b'{"series_id": "a", "timestamp": 1, "value": ' + nested + b"}"):
        with pytest.raises(MessageError, match="nests arrays or objects too deeply"):
            decode_samples(raw)
