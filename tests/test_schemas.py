import json
from pathlib import Path

import numpy as np
import pytest

from worker.errors import MessageError
from worker.stream.messages import (
    MAX_MESSAGE_BYTES,
    MAX_SAMPLES_PER_MESSAGE,
    AnomalyRecord,
    RawChunk,
    RawSample,
    decode_raw,
    json_schemas,
    record_id,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_single_sample_numeric_and_iso_timestamps() -> None:
    m = decode_raw(enc({"series_id": "if-eth0", "timestamp": 1700000000.5, "value": 3}))
    assert isinstance(m, RawSample)
    ts, values = m.samples()
    assert ts.tolist() == [1700000000.5] and values.shape == (1, 1)
    iso = decode_raw(enc({"series_id": "a", "timestamp": "2024-01-01T00:00:00Z", "value": 1.0}))
    naive = decode_raw(enc({"series_id": "a", "timestamp": "2024-01-01T00:00:00", "value": 1.0}))
    assert iso.samples()[0][0] == naive.samples()[0][0] == 1704067200.0


def test_multivariate_sample_and_chunk() -> None:
    m = decode_raw(enc({"series_id": "a", "timestamp": 5, "value": [1.0, 2.0, 3.0]}))
    assert m.samples()[1].shape == (1, 3)
    c = decode_raw(
        enc({"series_id": "a", "start": 10, "interval": 0.5, "values": [[1, 2], [3, 4], [5, 6]]})
    )
    assert isinstance(c, RawChunk)
    ts, values = c.samples()
    np.testing.assert_allclose(ts, [10.0, 10.5, 11.0])
    assert values.shape == (3, 2)


def test_key_must_match_series_id() -> None:
    body = enc({"series_id": "a", "timestamp": 1, "value": 1})
    assert decode_raw(body, key=b"a").series_id == "a"
    with pytest.raises(MessageError, match="key"):
        decode_raw(body, key=b"b")


BAD = {
    "nan": (b'{"series_id": "a", "timestamp": 1, "value": NaN}', "non-finite"),
    "infinity": (b'{"series_id": "a", "timestamp": 1, "value": Infinity}', "non-finite"),
    "overflow": (b'{"series_id": "a", "timestamp": 1, "value": 1e400}', "finite"),
    "nan in chunk": (
        b'{"series_id": "a", "start": 0, "interval": 1, "values": [1, NaN]}',
        "non-finite",
    ),
    "string value": (enc({"series_id": "a", "timestamp": 1, "value": "1.0"}), "expected a number"),
    "bool value": (enc({"series_id": "a", "timestamp": 1, "value": True}), "expected a number"),
    "int series id": (enc({"series_id": 7, "timestamp": 1, "value": 1}), "series_id"),
    "empty series id": (enc({"series_id": "", "timestamp": 1, "value": 1}), "series_id"),
    "oversized series id": (enc({"series_id": "x" * 257, "timestamp": 1, "value": 1}), "series_id"),
    "control char id": (enc({"series_id": "a\nb", "timestamp": 1, "value": 1}), "printable"),
    "bad timestamp": (enc({"series_id": "a", "timestamp": "yesterday", "value": 1}), "ISO-8601"),
    "missing value": (enc({"series_id": "a", "timestamp": 1}), "value"),
    "unknown field": (enc({"series_id": "a", "timestamp": 1, "value": 1, "x": 1}), "x"),
    "zero interval": (
        enc({"series_id": "a", "start": 0, "interval": 0, "values": [1]}),
        "interval",
    ),
    "mixed width": (
        enc({"series_id": "a", "start": 0, "interval": 1, "values": [1, [1, 2]]}),
        "width",
    ),
    "empty chunk": (enc({"series_id": "a", "start": 0, "interval": 1, "values": []}), "values"),
    "oversized batch": (
        enc(
            {
                "series_id": "a",
                "start": 0,
                "interval": 1,
                "values": [0] * (MAX_SAMPLES_PER_MESSAGE + 1),
            }
        ),
        "values",
    ),
    "oversized message": (b" " * (MAX_MESSAGE_BYTES + 1), "exceeds"),
    "not json": (b"\xff\xfenot json", "JSON"),
    "json array": (b"[1, 2]", "JSON object"),
    "tombstone": (None, "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_messages_are_rejected_with_a_reason(case: str) -> None:
    raw, fragment = BAD[case]
    with pytest.raises(MessageError) as exc:
        decode_raw(raw)
    assert fragment in exc.value.reason


def test_record_id_is_deterministic_and_distinguishes_versions() -> None:
    a = record_id("s", 100.0, "ecg", 1)
    assert a == record_id("s", 100.0, "ecg", 1)
    assert a != record_id("s", 100.0, "ecg", 2) != record_id("s", 101.0, "ecg", 1)


def test_anomaly_record_round_trip() -> None:
    rec = AnomalyRecord(
        id=record_id("s", 0.0, "ecg", 3),
        series_id="s",
        model={"name": "ecg", "version": 3},
        window={"start": 0.0, "end": 81.0, "n_samples": 82},
        energy=12.5,
        threshold=10.0,
        anomalous=True,
        percentile=99.7,
        segments=[
            {
                "start": 0,
                "end": 40,
                "start_index": 0,
                "end_index": 40,
                "energy": 12.5,
                "anomalous": True,
            }
        ],
        scored_at=1.7e9,
    )
    again = AnomalyRecord.model_validate_json(rec.to_bytes())
    assert again == rec


def test_exported_json_schemas_are_current() -> None:
    """docs/schemas must match the models: regenerate with `make schemas`."""
    for name, schema in json_schemas().items():
        path = DOCS / name
        assert path.is_file(), f"{path} missing: run `make schemas`"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run `make schemas`"
