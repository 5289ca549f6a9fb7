"""``seq2gmm backtest``: the streaming core replayed offline gives the worker's scores, and its
precision / recall / F1 are the evaluation harness's on the same labelled windows."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_worker_stream import Stream, test_messages

from model.checkpoint import load_checkpoint, save_checkpoint
from model.evaluation.data import OneClassSplit, load_ucr, ucr_windows
from model.evaluation.metrics import precision_recall_f1
from worker.cli import main
from worker.dev.services import Endpoints
from worker.stream.messages import AnomalyRecord


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    capsys.readouterr()  # what came before (e.g. log lines of a publish)
    assert main(argv) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


@pytest.mark.integration
def test_backtest_scores_equal_the_streamed_scores(
    services: Endpoints,
    unique: str,
    tmp_path: Path,
    twolead: tuple[OneClassSplit, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real worker streams a topic; the backtest of the same topic's history scores the
    same windows with the same energies, window by window, and dead-letters the same record."""
    split, model_dir = twolead
    stream = Stream(services, unique, tmp_path / "model-cache")
    try:
        assert stream.publish(model_dir) == 1
        since = datetime.fromtimestamp(time.time() - 60, UTC).isoformat()
        messages = test_messages(split)[:120]
        stream.produce([*messages[:60], ("ecg-1", b"{broken"), *messages[60:]])
        summary = stream.finish(stream.worker("--stop-at-end"))
        assert summary["scored"] == 120 and summary["dead_lettered"] == 1
        streamed = {
            (r.series_id, r.window.start): r
            for r in (AnomalyRecord.model_validate_json(m.value) for m in stream.read(stream.out))
        }
        assert len(streamed) == 120
        incident_records = stream.read(stream.env["SEQ2GMM_INCIDENTS__TOPIC"])
        streamed_incidents = {json.loads(m.value)["id"] for m in incident_records}
        for name, value in stream.env.items():
            if name.startswith("SEQ2GMM_"):
                monkeypatch.setenv(name, value)

        # a second version flagging more: the same weights, a lower threshold
        detector = load_checkpoint(model_dir)
        energies = np.array([r.energy for r in streamed.values()])
        low = float(np.quantile(energies, 0.5))
        assert low < detector.threshold.value
        detector.threshold = dataclasses.replace(detector.threshold, value=low)
        low_dir = save_checkpoint(detector, tmp_path / "low")
        assert stream.registry.publish_dir(low_dir, "ecg", promote=True, alias="candidate") == 2

        argv = ["backtest", "--model", "ecg", "--topic", stream.raw, "--since", since]
        doc = _json(capsys, [*argv, "--compare", "candidate", "--json", "--list-windows"])
    finally:
        stream.close()
    backtested = {(w["series_id"], w["start"]): w for w in doc["all_windows"]}
    assert sorted(backtested) == sorted(streamed)
    # the incidents that would open are those the worker opened
    assert {i["id"] for i in doc["incidents"]} == streamed_incidents
    assert len(streamed_incidents) > 0
    # equal up to float rounding: the worker's microbatches hold other windows than the
    # backtest's (batched forward passes may round the last bits differently)
    keys = sorted(streamed)
    got = np.array([backtested[k]["energy"] for k in keys])
    want = np.array([streamed[k].energy for k in keys])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert [backtested[k]["anomalous"] for k in keys] == [streamed[k].anomalous for k in keys]
    assert doc["model"] == {"name": "ecg", "version": 1, "threshold": detector_threshold(streamed)}
    assert doc["dead_letters"] == {"invalid_message": 1} and doc["records"] == 121
    assert doc["flagged"] == sum(r.anomalous for r in streamed.values())
    top = sorted(energies, reverse=True)[:10]
    assert [w["energy"] for w in doc["top"]] == top

    compare = doc["compare"]
    high = detector_threshold(streamed)
    only_low = int(np.sum((energies > low) & (energies <= high)))
    assert compare["b"] == {"name": "ecg", "version": 2}
    assert compare["common_windows"] == 120 and compare["flagged_by_a_only"] == 0
    assert compare["flagged_by_b_only"] == only_low > 0
    assert compare["agreement"] == (120 - only_low) / 120


def detector_threshold(streamed: dict[Any, AnomalyRecord]) -> float:
    (threshold,) = {r.threshold for r in streamed.values()}
    return threshold


def test_precision_recall_f1_are_the_evaluation_metrics(
    twolead: tuple[OneClassSplit, Path],
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """100 labelled TwoLeadECG test rows as a UCR file (a row = a window, class 1 normal) and
    as a CSV series with a label column: the same windows, the flags of ``score > threshold``
    and model.evaluation.metrics' precision, recall and F1."""
    monkeypatch.setenv("SEQ2GMM_DEVICE", "cpu")
    _, model_dir = twolead
    detector = load_checkpoint(model_dir)
    detector.training_summary["normal_label"] = 1  # as `seq2gmm train` records it for UCR
    model = save_checkpoint(detector, tmp_path / "model")
    lines = (shared_data / "ucr" / "TwoLeadECG" / "TwoLeadECG_TEST.tsv").read_text()
    ucr = tmp_path / "rows.tsv"
    ucr.write_text("\n".join(lines.splitlines()[:100]) + "\n")
    labels, x = load_ucr(ucr)
    rows = ucr_windows(x)
    truth = (labels != 1).astype(np.int64)
    assert 0 < truth.sum() < 100
    expected = precision_recall_f1(truth, detector.score(rows), detector.threshold.value)

    doc = _json(capsys, ["backtest", "--model", str(model), "--ucr", str(ucr), "--json"])
    got = doc["metrics"]
    assert (got["tp"], got["fp"], got["fn"]) == (expected.tp, expected.fp, expected.fn)
    assert (got["precision"], got["recall"], got["f1"]) == (
        expected.precision,
        expected.recall,
        expected.f1,
    )
    assert got["labelled_windows"] == doc["windows"] == 100
    assert got["anomalous_windows"] == int(truth.sum())

    csv = tmp_path / "rows.csv"
    body = [
        f"{i * len(rows[0]) + j},{v!r},{lab}"
        for i, (row, lab) in enumerate(zip(rows, truth, strict=True))
        for j, v in enumerate(np.asarray(row).reshape(-1).tolist())
    ]
    csv.write_text("timestamp,value,label\n" + "\n".join(body) + "\n")
    doc_csv = _json(capsys, ["backtest", "--model", str(model), "--csv", str(csv), "--json"])
    assert doc_csv["metrics"] == got

    assert main(["backtest", "--model", str(model), "--csv", str(csv), "--since", "1d"]) == 1
    assert main(["backtest", "--model", str(model), "--ucr", str(ucr)]) == 0
    printed = capsys.readouterr().out
    assert f"precision {expected.precision:.3f} recall {expected.recall:.3f}" in printed


def test_replay_compare_and_labels_on_a_fake_model() -> None:
    """Transport-free: every window is kept even with only_anomalous, a bad record is counted,
    windows are labelled from point labels, and two versions cutting differently are compared
    on the windows both scored."""
    from worker.stream.backtest import compare, metrics, replay, window_labels
    from worker.stream.core import CoreOptions, InRecord
    from worker.stream.testing import FakeModel

    values = [1.0, 2.0, 1.0, 2.0, 9.0, 1.0, 2.0, 1.0, 1.0, 6.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    msg = {"series_id": "s", "start": 0, "interval": 1, "values": values}
    records = [
        InRecord("raw", 0, 0, b"s", json.dumps(msg).encode()),
        InRecord("raw", 0, 1, b"s", b"[]"),
    ]
    only = CoreOptions(only_anomalous=True, max_windows=2)
    a = replay(FakeModel(threshold=5.0), records, only)
    assert [(w.start, w.energy, w.anomalous) for w in a.windows] == [
        (0.0, 2.0, False),
        (4.0, 9.0, True),
        (8.0, 6.0, True),
        (12.0, 1.0, False),
    ]
    assert a.dead_letters == {"invalid_message": 1} and a.records == 2
    assert a.summary(top=1)["top"][0]["score"] == 9.0 / 5.0
    assert a.summary()["rate"] == 0.5

    points = {"s": (np.arange(16.0), np.array([0] * 9 + [1] + [0] * 6))}
    labels = window_labels(a.windows, points)
    assert labels.tolist() == [0, 0, 1, 0]
    got = metrics(a, labels)
    assert (got["tp"], got["fp"], got["fn"], got["precision"], got["recall"]) == (1, 1, 0, 0.5, 1)
    assert window_labels(a.windows, {}).tolist() == [-1] * 4

    b = replay(FakeModel(version=2, threshold=6.5, length=4, hop=2), records)  # 7 windows
    c = compare(a, b)
    assert (c["common_windows"], c["windows_only_in_a"], c["windows_only_in_b"]) == (4, 0, 3)
    assert c["flagged_by_a_only"] == 1 and c["a_only"][0]["start"] == 8.0
    assert c["flagged_by_b_only"] == 0 and c["agreement"] == 3 / 4
