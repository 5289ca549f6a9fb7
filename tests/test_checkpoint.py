"""Checkpoints: safetensors + JSON, bit-identical round trips, refused tampering."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import model
from model.checkpoint import (
    METADATA_FILE,
    WEIGHTS_FILE,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_checkpoint,
    save_checkpoint,
)
from model.detectors.seq2gmm.config import Seq2GMMConfig, default_config, faithful_config
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.errors import CheckpointError, DataError, NotFittedError
from model.segmentation.base import Segmentation


def _windows(seed: int, n: int, length: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, length)
    return [
        np.sin(t + rng.normal(0, 0.1)) * rng.uniform(0.8, 1.2) + 0.05 * rng.normal(size=length)
        for _ in range(n)
    ]


def _small(cfg: Seq2GMMConfig) -> Seq2GMMConfig:
    return cfg.replace(
        network=replace(cfg.network, hidden_size=5, estimator_hidden=[6], shape_points=8),
        train=replace(cfg.train, epochs=3),
        segmentation=replace(cfg.segmentation, method="dp"),
    )


@pytest.fixture(scope="module")
def detector() -> Seq2GMMDetector:
    det = Seq2GMMDetector(_small(default_config())).fit(_windows(0, 30), seed=1)
    det.hop = 20
    det.metrics = {"roc_auc": 0.5}
    return det


def test_directory_round_trip_is_bit_identical(detector: Seq2GMMDetector, tmp_path: Path) -> None:
    test = _windows(1, 10)
    save_checkpoint(detector, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [METADATA_FILE, WEIGHTS_FILE]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert np.array_equal(loaded.score(test), detector.score(test))
    a, b = loaded.score_detailed(test), detector.score_detailed(test)
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    assert loaded.threshold == detector.threshold
    assert loaded.quantiles == detector.quantiles
    assert np.array_equal(loaded.reference_scores, detector.reference_scores)  # type: ignore[arg-type]
    assert loaded.percentile(0.3) == detector.percentile(0.3)
    assert loaded.config == detector.config
    assert (loaded.window_length, loaded.hop, loaded.n_features) == (40, 20, 1)
    # thresholds inferred after loading match those inferred before saving
    assert loaded.infer_threshold(fpr=0.05) == detector.infer_threshold(fpr=0.05)


def test_metadata_contents(detector: Seq2GMMDetector, tmp_path: Path) -> None:
    save_checkpoint(detector, tmp_path)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    weights = (tmp_path / WEIGHTS_FILE).read_bytes()
    for key in (
        "kind",
        "config",
        "segmentation",
        "window_length",
        "hop",
        "n_features",
        "normalisation",
        "threshold",
        "energy_quantiles",
        "metrics",
        "training_data",
        "package_version",
        "weights_sha256",
    ):
        assert key in meta, key
    assert meta["kind"] == "seq2gmm"
    assert meta["package_version"] == model.__version__
    assert meta["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert meta["segmentation"] == {"method": "dp", "n_segments": 3}
    assert meta["metrics"] == {"roc_auc": 0.5}
    assert len(meta["normalisation"]["mean"]) == 1
    assert meta["training_data"]["n_windows"] == 30
    # safetensors: 8-byte little-endian header length, then a JSON header; no pickle anywhere
    (n,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8 : 8 + n])
    assert "model.gmm.means" in header and "scoring.reference_scores" in header


def test_bytes_round_trip_and_tampering(detector: Seq2GMMDetector) -> None:
    test = _windows(2, 6)
    meta, weights = checkpoint_to_bytes(detector)
    meta = json.loads(json.dumps(meta))  # as stored in the registry
    assert np.array_equal(checkpoint_from_bytes(meta, weights).score(test), detector.score(test))
    tampered = bytearray(weights)
    tampered[-3] ^= 0x01
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint_from_bytes(meta, bytes(tampered))
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint_from_bytes(meta, weights[:-1])
    bad = dict(meta, kind="iforest")  # an evaluation-only kind
    with pytest.raises(CheckpointError, match="iforest"):
        checkpoint_from_bytes(bad, weights)
    with pytest.raises(CheckpointError, match="format"):
        checkpoint_from_bytes(dict(meta, format="pickle"), weights)
    with pytest.raises(CheckpointError, match="newer"):
        checkpoint_from_bytes(dict(meta, format_version=99), weights)


def test_mismatched_config_is_refused(detector: Seq2GMMDetector) -> None:
    meta, weights = checkpoint_to_bytes(detector)
    cfg = dict(meta["config"])
    cfg["network"] = dict(cfg["network"], hidden_size=7)
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint_from_bytes(dict(meta, config=cfg), weights)


def test_missing_files_and_unfitted_models(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(NotFittedError):
        save_checkpoint(Seq2GMMDetector(), tmp_path / "x")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / METADATA_FILE).write_text("{not json")
    (tmp_path / "y" / WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(tmp_path / "y")


def test_faithful_checkpoint_without_threshold(tmp_path: Path) -> None:
    train = _windows(3, 12)
    cuts = np.tile([0, 12, 26, 39], (12, 1))
    det = Seq2GMMDetector(_small(faithful_config())).fit(
        train, seed=0, segmentation=Segmentation(cuts)
    )
    assert not det.has_threshold
    save_checkpoint(det, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert not loaded.has_threshold and loaded.hop is None
    seg = Segmentation(cuts[:5])
    assert np.array_equal(
        loaded.score(train[:5], segmentation=seg), det.score(train[:5], segmentation=seg)
    )


def test_round_trip_after_component_selection(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    t = np.linspace(0, 1, 40)
    a = [np.sin(2 * np.pi * t) + 0.05 * rng.normal(size=40) for _ in range(30)]
    b = [np.cos(2 * np.pi * t) + 0.05 * rng.normal(size=40) for _ in range(30)]
    cfg = _small(default_config())
    cfg = cfg.replace(train=replace(cfg.train, component_candidates=[1, 2, 3]))
    det = Seq2GMMDetector(cfg).fit(a + b, seed=0)
    assert det.config.network.n_components > 1
    save_checkpoint(det, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.config.network.n_components == det.config.network.n_components
    test = _windows(5, 8)
    assert np.array_equal(loaded.score(test), det.score(test))


def test_context_descriptor_model_round_trips_and_scores_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _small(default_config())
    cfg = cfg.replace(
        network=replace(
            cfg.network, descriptors=[*cfg.network.descriptors, "context"], context_points=6
        )
    )
    det = Seq2GMMDetector(cfg).fit(_windows(3, 24), seed=2)
    assert det.model is not None and det.model.context_points == 6
    test = [*_windows(4, 7), np.zeros(40), np.linspace(-3, 3, 40)]
    scores = det.score(test)
    assert np.all(np.isfinite(scores))
    save_checkpoint(det, tmp_path / "ckpt")
    assert np.array_equal(load_checkpoint(tmp_path / "ckpt").score(test), scores)
    # scoring in sub-batches of a few segments splits windows across chunks: same scores
    monkeypatch.setattr("model.detectors.seq2gmm.detector.SCORE_CHUNK", 4)
    np.testing.assert_allclose(det.score(test), scores, rtol=1e-6, atol=1e-6)


def test_context_points_below_two_are_refused() -> None:
    cfg = default_config()
    with pytest.raises(DataError, match="context_points"):
        cfg.replace(network=replace(cfg.network, context_points=1))


def test_cycle_cutter_travels_in_the_metadata(detector: Seq2GMMDetector, tmp_path: Path) -> None:
    metadata, weights = checkpoint_to_bytes(detector)
    assert metadata["cycles"] is None  # fixed windows of window_length every hop
    assert checkpoint_from_bytes(metadata, weights).cycles is None
    cycles = {"kind": "fixed", "length": 40, "hop": 10}
    loaded = checkpoint_from_bytes({**metadata, "cycles": cycles}, weights)
    assert loaded.cycles == cycles
    with pytest.raises(CheckpointError, match="cycle cutter is invalid"):
        checkpoint_from_bytes({**metadata, "cycles": {"kind": "lunar"}}, weights)
