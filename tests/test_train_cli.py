"""seq2gmm train / evaluate on real data (small epoch counts: the CLI, not accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.cli import main


@pytest.fixture
def ucr(shared_data: Path) -> tuple[Path, Path]:
    d = shared_data / "ucr" / "TwoLeadECG"
    return d / "TwoLeadECG_TRAIN.tsv", d / "TwoLeadECG_TEST.tsv"


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:  # type: ignore[type-arg]
    assert main(list(args)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, "--json prints exactly one JSON object"
    return json.loads(out[0])


def test_train_then_evaluate_the_saved_model(
    ucr: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = ucr
    out = tmp_path / "m"
    summary = run_json(
        capsys, "train", "--train", str(train), "--out", str(out), "--epochs", "5", "--json"
    )
    assert summary["windows"] == 12 and summary["window_length"] == 82
    assert (out / "metadata.json").is_file() and (out / "weights.safetensors").is_file()
    a = run_json(capsys, "evaluate", "--model", str(out), "--test", str(test), "--json")
    b = run_json(
        capsys,
        "evaluate",
        "--model",
        str(out),
        "--train",
        str(train),
        "--test",
        str(test),
        "--json",
    )
    assert a["n_test"] == 625 and a["n_anomalous"] == 56
    assert a["roc_auc"] == b["roc_auc"] and 0.5 < a["roc_auc"] <= 1.0
    assert a["threshold"]["value"] == pytest.approx(summary["threshold"])


def test_evaluate_a_baseline_prints_one_json_object(
    ucr: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = ucr
    r = run_json(
        capsys,
        "evaluate",
        "--detector",
        "knn",
        "--train",
        str(train),
        "--test",
        str(test),
        "--json",
    )
    assert r["detector"] == "knn" and round(r["roc_auc"], 3) == 0.850
    assert r["train_seconds"] >= 0 and r["score_seconds"] >= 0


def test_train_a_knn_model_then_evaluate_it(
    ucr: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """knn is servable: trained and saved like every kind, its cycles in the checkpoint."""
    train, test = ucr
    out = tmp_path / "knn"
    summary = run_json(
        capsys, "train", "--detector", "knn", "--train", str(train), "--out", str(out), "--json"
    )
    assert summary["detector"] == "knn" and summary["windows"] == 12
    assert summary["window_length"] == 82 and summary["threshold"] > 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["kind"] == "knn" and meta["n_references"] == 12 and meta["points"] == 82
    r = run_json(capsys, "evaluate", "--model", str(out), "--test", str(test), "--json")
    # the model's scores rank the test rows like the trained-in-place evaluation: 1-NN's AUC
    assert r["detector"] == "knn" and r["n_test"] == 625 and round(r["roc_auc"], 3) == 0.850
    config = tmp_path / "dtw.json"
    config.write_text(json.dumps({"metric": "dtw"}))
    argv = ["train", "--detector", "knn", "--train", str(train), "--config", str(config)]
    summary = run_json(capsys, *argv, "--out", str(tmp_path / "dtw"), "--json")
    assert json.loads((tmp_path / "dtw" / "metadata.json").read_text())["config"]["metric"] == "dtw"
    assert main([*argv, "--epochs", "3", "--out", str(tmp_path / "x")]) == 1
    assert "--epochs does not apply to the knn detector" in capsys.readouterr().err


def test_clear_errors(
    ucr: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = ucr
    assert main(["train", "--train", str(train), "--out", str(tmp_path), "--config", "nope"]) == 1
    assert "unknown config" in capsys.readouterr().err
    assert main(["train", "--train", str(tmp_path / "missing.tsv"), "--out", str(tmp_path)]) == 1
    assert "missing.tsv" in capsys.readouterr().err
    assert main(["evaluate", "--test", str(test)]) == 1
    assert "--train" in capsys.readouterr().err
    assert main(["train", "--train", str(train), "--out", str(tmp_path), "--promote"]) == 1
    assert "--publish" in capsys.readouterr().err


def test_other_detector_kinds_train_save_and_evaluate(
    ucr: tuple[Path, Path],
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train, test = ucr
    out = tmp_path / "dagmm"
    summary = run_json(
        capsys, "train", "--detector", "dagmm", "--train", str(train), "--epochs", "3",
        "--out", str(out), "--json",
    )  # fmt: skip
    assert summary["detector"] == "dagmm" and summary["windows"] == 12
    assert json.loads((out / "metadata.json").read_text())["kind"] == "dagmm"
    r = run_json(capsys, "evaluate", "--model", str(out), "--test", str(test), "--json")
    assert r["detector"] == "dagmm" and r["n_test"] == 625 and 0.0 <= r["roc_auc"] <= 1.0

    kpi = shared_data / "kpi" / "cpu4.csv"
    out = tmp_path / "classifier"
    summary = run_json(
        capsys, "train", "--detector", "classifier", "--train", str(kpi), "--window", "50",
        "--hop", "50", "--epochs", "2", "--out", str(out), "--json",
    )  # fmt: skip
    assert summary["detector"] == "classifier" and summary["hop"] == 50
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["kind"] == "classifier" and meta["training_data"]["anomalous_windows"] > 0

    # the supervised kind has no one-class UCR protocol: a clear pointer to --series
    argv = ["evaluate", "--detector", "classifier", "--train", str(train), "--test", str(test)]
    assert main(argv) == 1
    assert "--series kpi:NAME" in capsys.readouterr().err


def test_evaluate_a_long_series_split_in_time(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = run_json(
        capsys, "evaluate", "--series", "kpi:cpu4", "--data", str(shared_data),
        "--detector", "knn", "--window", "32", "--hop", "4", "--train-hop", "8", "--json",
    )  # fmt: skip
    assert r["detector"] == "knn" and r["dataset"].endswith("cpu4")
    assert r["n_anomalous_points"] > 0 and 0.5 < r["roc_auc"] <= 1.0
    assert 0.0 < r["best_f1"] <= 1.0 and r["best_pa_f1"] >= r["best_f1"]
    assert main(["evaluate", "--series", "kpi:cpu4", "--test", "x.tsv"]) == 1
    assert "--series takes neither" in capsys.readouterr().err
