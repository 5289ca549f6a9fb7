"""Plots, the HTML report and `seq2gmm plot ...` / `seq2gmm report`, rendered headless.

A tiny seeded Seq2GMM model (a few epochs on synthetic quasi-periodic rows written as UCR
files) is trained once per module; every figure goes to a temporary PNG or SVG file that is
checked to be a valid image of a sane size.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from model.base import WindowScore
from model.checkpoint import load_checkpoint, save_checkpoint
from model.detectors.seq2gmm.config import default_config
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.errors import DataError
from model.evaluation import plots
from model.evaluation.data import one_class_split, sliding_windows
from model.evaluation.plots.scales import scale_for
from model.evaluation.report import build_report
from model.evaluation.synthetic import SyntheticConfig, generate
from worker.cli import main
from worker.stream.messages import AnomalyRecord, ModelRef, SegmentRecord, WindowRef

PERIOD = 32
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- helpers


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC, "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def check_image(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    data = path.read_bytes()
    if path.suffix == ".png":
        w, h = png_size(data)
        assert 200 <= w <= 5000 and 200 <= h <= 5000, (w, h)
    else:
        root = ET.fromstring(data)
        assert root.tag.rsplit("}", 1)[-1] == "svg"


def write_ucr(path: Path, rows: list[np.ndarray], labels: list[int]) -> Path:
    lines = [
        "\t".join([str(lab)] + [f"{v:.6f}" for v in np.ravel(r)])
        for r, lab in zip(rows, labels, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def cycles(seed: int, n_cycles: int, anomaly_rate: float) -> tuple[list[np.ndarray], np.ndarray]:
    cfg = SyntheticConfig(
        n_series=1, n_cycles=n_cycles, period=PERIOD, anomaly_rate=anomaly_rate, seed=seed
    )
    s = generate(cfg)[0]
    w = sliding_windows(s.values[:, 0], PERIOD, PERIOD, labels=s.point_labels)
    assert w.labels is not None
    return list(w.windows), w.labels


@dataclasses.dataclass
class Fixture:
    model_dir: Path
    detector: Any
    train_tsv: Path
    test_tsv: Path
    windows: list[np.ndarray]  # the one-class protocol's test windows
    labels: np.ndarray
    scores: np.ndarray


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    d = tmp_path_factory.mktemp("plots")
    train_rows, _ = cycles(seed=0, n_cycles=40, anomaly_rate=0.0)
    test_rows, test_labels = cycles(seed=1, n_cycles=80, anomaly_rate=0.25)
    train_tsv = write_ucr(d / "Synth_TRAIN.tsv", train_rows, [1] * len(train_rows))
    test_tsv = write_ucr(d / "Synth_TEST.tsv", test_rows, [2 if lab else 1 for lab in test_labels])
    cfg = default_config()
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, epochs=3, patience=None))
    det = Seq2GMMDetector(cfg).fit(train_rows, seed=0)
    det.training_summary.update({"source": str(train_tsv), "format": "ucr", "normal_label": 1})
    model_dir = save_checkpoint(det, d / "model")
    loaded: Any = load_checkpoint(model_dir)
    split = one_class_split(train_tsv, test_tsv)
    assert 0 < split.n_anomalous < len(split.test)
    scores = loaded.score(split.test)
    return Fixture(model_dir, loaded, train_tsv, test_tsv, split.test, split.test_labels, scores)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


# --------------------------------------------------------------------------- figures


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_every_figure_renders_to_a_valid_image(tiny: Fixture, tmp_path: Path, fmt: str) -> None:
    det = tiny.detector
    thr = det.threshold.value
    result = det.score_detailed(tiny.windows[:1])[0]
    recon = plots.reconstruction_of(det, tiny.windows[0])
    figures = {
        "window": plots.plot_window(
            tiny.windows[0], result, reconstruction=recon, threshold=thr, title="a <title>"
        ),
        "energies": plots.plot_energies(
            det.quantiles, tiny.scores, threshold=thr, labels=tiny.labels, label="synth:1"
        ),
        "training": plots.plot_training(det.history, best_epoch=1, label="synth:1"),
        "roc_pr": plots.plot_roc_pr(tiny.labels, tiny.scores, threshold=thr),
        "examples": plots.plot_examples(tiny.windows, tiny.scores, tiny.labels, k=2),
    }
    for name, fig in figures.items():
        check_image(plots.save_figure(fig, tmp_path / f"{name}.{fmt}"))


def test_window_plot_handles_one_whole_window_segment_and_many_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    window = rng.normal(size=(50, 3))
    whole = WindowScore(
        score=2.0,
        segment_energies=np.array([2.0]),
        raw_energies=np.array([2.0]),
        intervals=[(0, 49)],
        top_segment=0,
    )
    fig = plots.plot_window(window, whole, reconstruction=window * 0.9, threshold=1.0)
    check_image(plots.save_figure(fig, tmp_path / "whole.png"))
    # equal energies, a one-sample segment, an infinite energy, no threshold, no percentile
    odd = WindowScore(
        score=np.inf,
        segment_energies=np.array([1.0, 1.0, np.inf]),
        raw_energies=np.array([1.0, 1.0, np.inf]),
        intervals=[(0, 0), (0, 30), (30, 49)],
        top_segment=2,
    )
    check_image(plots.save_figure(plots.plot_window(window[:, 0], odd), tmp_path / "odd.svg"))
    check_image(plots.save_figure(plots.plot_window(window, None), tmp_path / "bare.png"))


def test_energy_histogram_switches_to_a_log_axis_over_decades(tmp_path: Path) -> None:
    assert scale_for(np.array([1.0, 2.0, 3.0]))[0] == "linear"
    assert scale_for(np.geomspace(1, 1e5, 20))[0] == "log"
    assert scale_for(np.r_[np.linspace(-1, 1, 50), 1e6])[0] == "symlog"
    train = np.r_[np.linspace(-1, 1, 200), 5e4]
    fig = plots.plot_energies(train, np.r_[np.linspace(-1, 3, 20), np.nan], threshold=2.0)
    assert fig.axes[0].get_xscale() == "symlog"
    check_image(plots.save_figure(fig, tmp_path / "energies.png"))


def test_training_panels_group_each_metric_with_its_validation_curve() -> None:
    history: list[dict[str, Any]] = [
        {"epoch": 0.0, "loss": 2.0, "val_loss": 2.5, "recon": 1.0, "flag": True, "note": "x"},
        {"epoch": 1.0, "loss": 1.5, "val_loss": 2.0, "recon": 0.9, "custom": 3.0},
    ]
    assert plots.training_groups(history) == {
        "loss": ["loss", "val_loss"],
        "recon": ["recon"],
        "custom": ["custom"],
    }
    with pytest.raises(Exception, match="no training history"):
        plots.plot_training([])


def test_write_evaluation_plots_writes_each_file(tiny: Fixture, tmp_path: Path) -> None:
    written = plots.write_evaluation_plots(
        tmp_path / "eval",
        labels=tiny.labels,
        scores=tiny.scores,
        windows=tiny.windows,
        detector=tiny.detector,
    )
    assert [p.name for p in written] == [
        "roc_pr.png",
        "energies.png",
        "examples.png",
        "top_window.png",
    ]
    for p in written:
        check_image(p)
    # no detector: no segment details, so no detailed window; SVG on request
    bare = plots.write_evaluation_plots(
        tmp_path / "bare",
        labels=tiny.labels,
        scores=tiny.scores,
        windows=tiny.windows,
        threshold=float(np.median(tiny.scores)),
        fmt="svg",
    )
    assert [p.name for p in bare] == ["roc_pr.svg", "energies.svg", "examples.svg"]
    for p in bare:
        check_image(p)


def test_missing_matplotlib_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for mod in [m for m in list(sys.modules) if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(
        plots.PlotsUnavailableError, match=re.escape("pip install 'seq2gmm-worker[plots]'")
    ):
        plots.plot_training([{"epoch": 0.0, "loss": 1.0}])
    with pytest.raises(plots.PlotsUnavailableError):
        plots.plot_roc_pr([0, 1], [0.1, 0.9])


def test_unknown_image_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\*\.png or \*\.svg"):
        plots.figure_format(tmp_path / "x.jpg")


# --------------------------------------------------------------------------- the report


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_is_one_self_contained_page(tiny: Fixture) -> None:
    page = build_report(tiny.model_dir, test_windows=tiny.windows, test_labels=tiny.labels)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    srcs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    images = embedded_pngs(page)
    assert len(images) == len(srcs) >= 5  # ROC/PR, training, energies, examples, window
    for img in images:
        w, h = png_size(img)
        assert 200 <= w <= 5000 and 200 <= h <= 5000
    assert "ROC AUC" in page and "Training curves" in page and "Synth_TRAIN.tsv" in page


def test_report_escapes_metadata_and_falls_back_to_the_training_rows(tiny: Fixture) -> None:
    metadata = json.loads((tiny.model_dir / "metadata.json").read_text())
    evil = "<script>alert('x')</script>"
    metadata["training_data"]["note"] = evil
    metadata["config"]["name"] = evil
    page = build_report((metadata, tiny.detector), label=evil)
    assert "<script" not in page and "&lt;script&gt;" in page
    # no test set: examples come from the readable training source
    assert "normal-class rows of Synth_TRAIN.tsv" in page and len(embedded_pngs(page)) >= 3
    # an unreadable source: the page says so instead of failing
    metadata["training_data"]["source"] = "/nonexistent/X_TRAIN.tsv"
    page = build_report((metadata, tiny.detector))
    assert "No windows to show" in page


# --------------------------------------------------------------------------- the CLI


def anomaly_record(tiny: Fixture, i: int, *, samples: bool) -> dict[str, Any]:
    det = tiny.detector
    w = tiny.windows[i]
    r = det.score_detailed([w])[0]
    thr = det.threshold.value
    rec = AnomalyRecord(
        id="0" * 32,
        series_id="synth-0",
        model=ModelRef(name="synth", version=1),
        window=WindowRef(start=100.0, end=100.0 + len(w) - 1, n_samples=len(w)),
        energy=r.score,
        threshold=thr,
        anomalous=r.score > thr,
        percentile=float(r.percentile or 0.0),
        segments=[
            SegmentRecord(
                start=100.0 + a,
                end=100.0 + b,
                start_index=a,
                end_index=b,
                energy=float(e),
                anomalous=bool(e > thr),
            )
            for (a, b), e in zip(r.intervals, r.segment_energies, strict=True)
        ],
        scored_at=0.0,
        samples=np.asarray(w).reshape(len(w), -1).tolist() if samples else None,
    )
    return json.loads(rec.to_bytes())


def test_cli_plot_window_from_a_dataset_row_and_a_record(
    tiny: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = str(tiny.model_dir)
    out = tmp_path / "row.png"
    rc, stdout, err = run_cli(
        capsys,
        "plot",
        "window",
        "--model",
        m,
        "--ucr",
        str(tiny.test_tsv),
        "--row",
        "3",
        "--out",
        str(out),
        "--json",
    )
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["out"] == str(out) and summary["threshold"] == tiny.detector.threshold.value
    check_image(out)

    i = int(np.argmax(tiny.scores))
    lines = [anomaly_record(tiny, 0, samples=True), anomaly_record(tiny, i, samples=True)]
    rec_file = tmp_path / "alerts.jsonl"
    rec_file.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    # the record alone: its own energies and threshold, no model needed
    out = tmp_path / "record.svg"
    rc, stdout, err = run_cli(
        capsys,
        "plot",
        "window",
        "--record",
        str(rec_file),
        "--index",
        "1",
        "--out",
        str(out),
        "--json",
    )
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["score"] == pytest.approx(lines[1]["energy"])
    assert summary["anomalous"] == lines[1]["anomalous"] and not summary["reconstruction"]
    check_image(out)
    # with the model: the reconstruction is overlaid when the detector offers one
    out = tmp_path / "record.png"
    rc, stdout, err = run_cli(
        capsys,
        "plot",
        "window",
        "--record",
        str(rec_file),
        "--model",
        m,
        "--out",
        str(out),
        "--json",
    )
    assert rc == 0, err
    assert json.loads(stdout)["reconstruction"] == hasattr(tiny.detector, "reconstruct")
    check_image(out)


def test_cli_plot_window_errors_are_actionable(
    tiny: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec_file = tmp_path / "rec.json"
    rec_file.write_text(json.dumps(anomaly_record(tiny, 0, samples=False)))
    m, ucr, png = str(tiny.model_dir), str(tiny.test_tsv), str(tmp_path / "x.png")
    cases = [  # (arguments after `plot window`, what the error message must say)
        (["--record", str(rec_file), "--out", png], "SEQ2GMM_WORKER__INCLUDE_SAMPLES=true"),
        (["--model", m, "--ucr", ucr, "--row", "0", "--out", str(tmp_path / "x.jpg")],
         "*.png or *.svg"),
        (["--ucr", ucr, "--row", "0", "--out", png], "--model"),
        (["--model", m, "--ucr", ucr, "--row", "100000", "--out", png], "out of range"),
    ]  # fmt: skip
    for args, message in cases:
        rc, _, err = run_cli(capsys, "plot", "window", *args)
        assert rc == 1 and message in err, (args, err)


def test_cli_plot_window_from_a_csv_series(
    tiny: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = np.concatenate(tiny.windows[:4])
    csv = tmp_path / "series.csv"
    csv.write_text("timestamp,value\n" + "".join(f"{t},{v:.6f}\n" for t, v in enumerate(series)))
    out = tmp_path / "csv.png"
    rc, _, err = run_cli(
        capsys,
        "plot",
        "window",
        "--model",
        str(tiny.model_dir),
        "--csv",
        str(csv),
        "--start",
        str(PERIOD),
        "--out",
        str(out),
    )
    assert rc == 0, err
    check_image(out)


def test_cli_plot_energies_training_and_report(
    tiny: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = str(tiny.model_dir)
    out = tmp_path / "energies.png"
    rc, stdout, err = run_cli(
        capsys,
        "plot",
        "energies",
        "--model",
        m,
        "--test",
        str(tiny.test_tsv),
        "--out",
        str(out),
        "--json",
    )
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["n_scored"] == len(tiny.windows)  # the one-class protocol of `evaluate`
    check_image(out)
    out = tmp_path / "held_out.svg"
    assert run_cli(capsys, "plot", "energies", "--model", m, "--out", str(out))[0] == 0
    check_image(out)

    out = tmp_path / "training.svg"
    rc, stdout, err = run_cli(capsys, "plot", "training", "--model", m, "--out", str(out), "--json")
    assert rc == 0, err
    assert json.loads(stdout)["epochs"] == 3
    check_image(out)

    out = tmp_path / "report.html"
    rc, stdout, err = run_cli(
        capsys, "report", m, "--test", str(tiny.test_tsv), "--out", str(out), "--json"
    )
    assert rc == 0, err
    page = out.read_text()
    assert json.loads(stdout)["out"] == str(out) and len(embedded_pngs(page)) >= 5
    rc, _, err = run_cli(capsys, "report", m, "--out", str(tmp_path / "report.png"))
    assert rc == 1 and "*.html" in err


@pytest.mark.integration
def test_cli_plots_a_registry_version(
    tiny: Fixture,
    services: Any,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEQ2GMM_REDIS__URL", services.redis_url)
    monkeypatch.setenv("SEQ2GMM_REDIS__KEY_PREFIX", unique)
    monkeypatch.delenv("SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    rc, _, err = run_cli(
        capsys, "models", "publish", str(tiny.model_dir), "--name", "synth", "--promote"
    )
    assert rc == 0, err
    out = tmp_path / "training.png"
    rc, _, err = run_cli(capsys, "plot", "training", "--registry", "synth:1", "--out", str(out))
    assert rc == 0, err
    check_image(out)
    out = tmp_path / "report.html"
    assert run_cli(capsys, "report", "--registry", "synth", "--out", str(out))[0] == 0
    assert "synth:1" in out.read_text()


def test_cli_evaluate_writes_its_plots(
    tiny: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plots"
    rc, stdout, err = run_cli(
        capsys,
        "evaluate",
        "--model",
        str(tiny.model_dir),
        "--test",
        str(tiny.test_tsv),
        "--plots",
        str(out),
        "--json",
    )
    assert rc == 0, err
    files = [Path(p) for p in json.loads(stdout)["plots"]]
    assert {f.name for f in files} >= {"roc_pr.png", "energies.png", "examples.png"}
    for f in files:
        check_image(f)
