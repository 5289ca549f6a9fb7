"""Evaluation on cycles: the oracle cutter, cycle labels, beat coverage, resampling, the
train/test protocol on a continuous series, and `seq2gmm train/evaluate --cycles`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import load_checkpoint
from model.cycles import Cycle, FixedCutter, cut
from model.errors import DataError
from model.evaluation.cycles import (
    AnnotatedCutter,
    cutter_from_spec,
    cycle_labels,
    cycle_split,
    evaluate_cycles,
    event_coverage,
    event_scores,
    resample,
    resampled,
)
from model.evaluation.synthetic import SyntheticConfig, generate
from model.kinds import make_detector
from worker.cli import main


@pytest.fixture
def series():  # type: ignore[no-untyped-def]
    cfg = SyntheticConfig(
        n_series=1, n_cycles=120, period=40, period_jitter=0.15, anomaly_rate=0.1,
        kinds=("pattern", "spike"), seed=3,
    )  # fmt: skip
    return generate(cfg)[0]


def test_the_oracle_cuts_from_a_fraction_of_the_interval_before_each_event() -> None:
    cutter = AnnotatedCutter((10, 30, 60, 70), fraction=0.5)
    # starts: 10 - 10 (first: next interval), 30 - 10, 60 - 15, 70 - 5; last ends 70 + 5
    assert [(c.start, c.end) for c in cut(cutter, np.zeros(100))] == [
        (0, 20), (20, 45), (45, 65), (65, 75),
    ]  # fmt: skip
    assert cutter.max_length == 25
    # cycles starting before sample 0 are skipped; a cycle past the data is not complete yet
    early = AnnotatedCutter((5, 30, 55), fraction=0.4)
    assert [(c.start, c.end) for c in cut(early, np.zeros(60))] == [(20, 45)]
    assert AnnotatedCutter.from_config(cutter.to_config()) == cutter
    with pytest.raises(DataError, match="strictly increasing"):
        AnnotatedCutter((3, 3))
    with pytest.raises(DataError, match="fraction"):
        AnnotatedCutter((3, 9), fraction=1.0)


@pytest.mark.parametrize("sizes", [[1], [7, 1, 30], [1000]])
def test_the_oracle_stream_is_the_same_for_any_split_into_pushes(sizes: list[int]) -> None:
    events = tuple(int(e) for e in np.cumsum(np.random.default_rng(0).integers(20, 40, 30)))
    cutter = AnnotatedCutter(events, fraction=0.3)
    x = np.arange(events[-1] + 40, dtype=np.float64)[:, None]
    whole = cut(cutter, x)
    stream, got, i, k = cutter.stream(), [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        got += stream.push(np.arange(i, i + n)[: len(x) - i] * 1.0, x[i : i + n])
        assert stream.keep_from <= (got[-1].end if got else len(x))
        i, k = i + n, k + 1
    assert got == whole and len(whole) == len(events)


def test_cycle_labels_from_points_and_from_abnormal_events(series) -> None:  # type: ignore[no-untyped-def]
    cutter = AnnotatedCutter(tuple(int(s) for s in series.cycle_starts), fraction=0.0)
    cycles = cut(cutter, series.values)
    n = len(cycles)  # the last cycle ends past the series: the stream never completes it
    assert n == len(series.cycle_starts) - 1
    truth = series.cycle_labels[:n]
    assert truth.sum() > 3
    np.testing.assert_array_equal(cycle_labels(cycles, point_labels=series.point_labels), truth)
    abnormal = series.cycle_labels == 1
    by_event = cycle_labels(cycles, events=series.cycle_starts, abnormal=abnormal)
    np.testing.assert_array_equal(by_event, truth)
    with pytest.raises(DataError, match="abnormal flags"):
        cycle_labels(cycles, events=series.cycle_starts)


def test_event_coverage_counts_events_in_exactly_one_cycle() -> None:
    events = np.array([5, 15, 25, 35, 95])
    tiles = [Cycle(0, 10), Cycle(10, 20), Cycle(20, 30), Cycle(30, 40)]
    assert event_coverage(tiles, events) == pytest.approx(4 / 5)  # 95 is in no cycle
    overlapping = cut(FixedCutter(20, 10), np.zeros(100))  # [0, 20), [10, 30) ... [80, 100)
    assert event_coverage(overlapping, events) == pytest.approx(2 / 5)  # 5 and 95 in one only
    scores = np.arange(len(overlapping), dtype=np.float64)
    # an event takes the highest score of its cycles; NaN outside every cycle
    np.testing.assert_array_equal(event_scores(overlapping, scores, np.array([5, 15, 100])),
                                  [0.0, 1.0, np.nan])  # fmt: skip


def test_resample_keeps_the_ends_and_a_linear_shape() -> None:
    w = np.linspace(2.0, 5.0, 31)
    out = resample(w, 7)
    np.testing.assert_allclose(out, np.linspace(2.0, 5.0, 7))
    two = resample(np.stack([w, -w], axis=1), 100)
    assert two.shape == (100, 2) and two[0, 1] == -2.0 and two[-1, 1] == -5.0
    with pytest.raises(DataError, match="2 samples"):
        resample(np.ones(1), 5)


def test_the_protocol_trains_on_early_normal_cycles_and_tests_the_rest(series) -> None:  # type: ignore[no-untyped-def]
    cutter = AnnotatedCutter(tuple(int(s) for s in series.cycle_starts), fraction=0.0)
    split = cycle_split(
        series.values, cutter, events=series.cycle_starts,
        abnormal=series.cycle_labels == 1, train_fraction=0.35,
    )  # fmt: skip
    at = split.info["split_sample"]
    assert at == int(0.35 * len(series.values))
    assert all(c.start >= at for c in split.test_cycles)
    assert split.info["event_coverage"] > 0.97 and split.info["flagged_cycles"] == 0
    assert len({len(w) for w in split.train}) > 3  # cycles keep their own lengths
    assert split.test_labels.sum() > 0 and split.info["dropped_labelled_train_cycles"] >= 0
    same = resampled(split, 40)
    assert {w.shape for w in same.train + same.test} == {(40, 1)}
    report = evaluate_cycles(make_detector("knn"), same, seed=0)
    assert report["n_test"] == len(split.test)
    # the events of the cycle straddling the split and of the last, incomplete cycle
    assert report["n_events"] + report["events_outside"] == len(split.test_events)
    assert report["events_outside"] <= 2
    assert report["roc_auc"] > 0.95 and report["event_roc_auc"] > 0.95
    # fixed windows of the mean period drift across the true cycles: clearly worse
    fixed = cycle_split(
        series.values, FixedCutter(40, 40), events=series.cycle_starts,
        abnormal=series.cycle_labels == 1,
    )  # fmt: skip
    drifting = evaluate_cycles(make_detector("knn"), fixed, seed=0)
    assert drifting["event_roc_auc"] < report["event_roc_auc"] - 0.1
    # knn resamples cycles of any length itself (here to their median length): the same
    # cycles resampled beforehand to that length score the same
    own = evaluate_cycles(make_detector("knn"), split, seed=0)
    median = int(np.median([len(w) for w in split.train]))
    before = evaluate_cycles(make_detector("knn"), resampled(split, median), seed=0)
    assert own["roc_auc"] == before["roc_auc"] > 0.95
    with pytest.raises(DataError, match="one length"):
        evaluate_cycles(make_detector("iforest"), split, seed=0)


def test_cutters_by_spec() -> None:
    assert cutter_from_spec("fixed:287") == FixedCutter(287, 287)
    assert cutter_from_spec("fixed:50:10") == FixedCutter(50, 10)
    assert cutter_from_spec("oracle:0.25", events=np.array([3, 9])).fraction == 0.25
    for bad in ("fixed", "fixed:a", "fixed:1:2:3", "oracle:1:2"):
        with pytest.raises(DataError, match=r"bad cycles? spec"):
            cutter_from_spec(bad, events=np.array([3, 9]))
    with pytest.raises(DataError, match="annotated events"):
        cutter_from_spec("oracle")
    with pytest.raises(DataError, match="unknown cycles spec 'nonesuch:3'"):
        cutter_from_spec("nonesuch:3")


# ------------------------------------------------------------------ the CLI


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:  # type: ignore[type-arg]
    assert main(list(args)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_train_on_cycles_saves_the_cutter(
    series,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    csv = tmp_path / "s.csv"
    rows = [
        f"{i},{v:.6f},{y}"
        for i, (v, y) in enumerate(zip(series.values[:, 0], series.point_labels, strict=True))
    ]
    csv.write_text("timestamp,value,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "m"
    summary = _json(
        capsys, "train", "--train", str(csv), "--cycles", "fixed:40:20", "--detector", "dagmm",
        "--epochs", "2", "--out", str(out), "--json",
    )  # fmt: skip
    labelled = cycle_labels(
        cut(FixedCutter(40, 20), series.values), point_labels=series.point_labels
    )
    assert summary["windows"] == int((labelled == 0).sum()) and summary["hop"] == 20
    model = load_checkpoint(out)
    assert model.cycles == {"kind": "fixed", "length": 40, "hop": 20}
    assert model.training_summary["dropped_labelled_cycles"] == int(labelled.sum())
    assert main(["train", "--train", str(csv), "--cycles", "fixed:40", "--window", "40",
                 "--out", str(out)]) == 1  # fmt: skip
    assert "replaces --window" in capsys.readouterr().err
    assert main(["train", "--synthetic", "--cycles", "fixed:40", "--out", str(out)]) == 1
    assert "cuts a --train CSV series" in capsys.readouterr().err
    assert main(["train", "--train", str(csv), "--cycles", "oracle", "--out", str(out)]) == 1
    assert "annotated events" in capsys.readouterr().err


def test_evaluate_mitdb_on_cycles(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (shared_data / "mitdb" / "100.hea").is_file():
        pytest.skip("MIT-BIH record 100 not found")
    common = ("evaluate", "--series", "mitdb:100", "--data", str(shared_data), "--detector", "knn")
    oracle = _json(capsys, *common, "--cycles", "oracle", "--json")
    fixed = _json(capsys, *common, "--cycles", "fixed:287", "--json")
    # issue 16: 1-NN scores ~0.64 on fixed 287-sample windows and 0.999 on one beat per cycle
    assert oracle["event_roc_auc"] > 0.99 and fixed["event_roc_auc"] < 0.75
    assert oracle["event_coverage"] >= 0.99 and oracle["n_anomalous_events"] > 20
    assert oracle["n_events"] == fixed["n_events"] and "resample_to" not in oracle
    # knn resamples the cycles itself (its max_points); --resample-to is for iforest and ocsvm
    assert main([*common, "--cycles", "oracle", "--resample-to", "287"]) == 1
    assert "--resample-to applies to iforest and ocsvm" in capsys.readouterr().err
    assert main([*common, "--json"]) == 1
    assert "needs --cycles" in capsys.readouterr().err
    assert main(["evaluate", "--series", "kpi:cpu4", "--cycles", "fixed:10"]) == 1
    assert "--cycles applies to" in capsys.readouterr().err
