"""Detector kinds, the shared calibration base and Seq2GMM's reconstruction."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model.base import CalibratedDetector
from model.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes
from model.detectors.seq2gmm.config import default_config
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.errors import CheckpointError, NotFittedError, Seq2GMMError, ThresholdNotSetError
from model.kinds import KINDS, SERVABLE_KINDS, detector_class, is_supervised


def _windows(seed: int, n: int, length: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, length)
    return [np.sin(t + rng.normal(0, 0.1)) + 0.05 * rng.normal(size=length) for _ in range(n)]


@pytest.fixture(scope="module")
def seq2gmm() -> Seq2GMMDetector:
    cfg = default_config()
    cfg = cfg.replace(
        network=replace(cfg.network, hidden_size=6, estimator_hidden=[6], shape_points=8),
        train=replace(cfg.train, epochs=20, component_candidates=None),
    )
    return Seq2GMMDetector(cfg).fit(_windows(0, 30), seed=0)


def test_every_kind_resolves_to_a_detector_class() -> None:
    assert set(SERVABLE_KINDS) <= set(KINDS)
    # "supervised" is declared by each class
    assert [k for k in KINDS if is_supervised(k)] == ["classifier"]
    assert not any(detector_class(k).supervised for k in KINDS if k != "classifier")
    for kind in SERVABLE_KINDS:
        cls = detector_class(kind)
        assert issubclass(cls, CalibratedDetector) and cls.kind == kind
    for kind in set(KINDS) - set(SERVABLE_KINDS):
        assert detector_class(kind).kind == kind
    with pytest.raises(Seq2GMMError, match="valid kinds: seq2gmm, dagmm"):
        detector_class("prophet")


def test_unfitted_detectors_say_what_to_do() -> None:
    for kind in SERVABLE_KINDS:
        det = detector_class(kind)()
        with pytest.raises(NotFittedError, match="fit"):
            det.score(_windows(0, 2))
        with pytest.raises(NotFittedError):
            checkpoint_to_bytes(det)
        with pytest.raises(ThresholdNotSetError):
            _ = det.threshold


def test_checkpoint_of_an_unknown_or_mislabelled_kind_is_refused(seq2gmm: Seq2GMMDetector) -> None:
    meta, weights = checkpoint_to_bytes(seq2gmm)
    with pytest.raises(CheckpointError, match="cannot be checkpointed"):
        checkpoint_from_bytes(dict(meta, kind="iforest"), weights)
    # seq2gmm weights and config claimed to be a TS-DAGMM: refused, not mis-loaded
    with pytest.raises(CheckpointError):
        checkpoint_from_bytes(dict(meta, kind="dagmm"), weights)
    with pytest.raises(CheckpointError, match="knn config is invalid"):
        checkpoint_from_bytes(dict(meta, kind="knn"), weights)


def test_reconstruction_has_the_window_shape_and_follows_it(seq2gmm: Seq2GMMDetector) -> None:
    wins = [*_windows(1, 4), np.linspace(-1, 1, 60)]
    recon = seq2gmm.reconstruct(wins)
    assert [r.shape for r in recon] == [(48, 1)] * 4 + [(60, 1)]
    assert all(np.isfinite(r).all() for r in recon)
    # trained on sines: reconstructing a normal window beats a flat guess at its mean
    w = wins[0].reshape(-1, 1)
    assert np.mean((recon[0] - w) ** 2) < np.mean((w - w.mean()) ** 2)


def test_single_interval_details_for_unsegmented_detectors(seq2gmm: Seq2GMMDetector) -> None:
    # the base class's describe(): one interval per window, percentile and decision filled in
    det = seq2gmm
    det.infer_threshold(fpr=0.1)
    scores = np.array([det.threshold.value - 1.0, det.threshold.value + 1.0])
    out = CalibratedDetector.describe(det, scores, [(0, 47), (0, 9)])
    assert [r.intervals for r in out] == [[(0, 47)], [(0, 9)]]
    assert [r.is_anomaly for r in out] == [False, True]
    assert out[0].percentile is not None and 0.0 <= out[0].percentile <= out[1].percentile <= 100
