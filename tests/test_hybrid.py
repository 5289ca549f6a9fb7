"""The default Seq2GMM: segment energies plus whole-cycle evidence, cross-fitted references."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes
from model.detectors.seq2gmm.config import Seq2GMMConfig, default_config
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.detectors.seq2gmm.evidence import compress
from model.errors import CheckpointError, DataError


def _cycles(seed: int, n: int) -> list[np.ndarray]:
    """Quasi-periodic cycles: one bump each, lengths 36..44, jitter and phase."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(36, 45))
        t = np.linspace(0, 1, length)
        bump = np.exp(-(((t - 0.4 - rng.normal(0, 0.03)) / 0.08) ** 2))
        out.append(bump * rng.uniform(0.9, 1.1) + 0.03 * rng.normal(size=length))
    return out


def _small(cfg: Seq2GMMConfig, **scoring: object) -> Seq2GMMConfig:
    return cfg.replace(
        network=replace(cfg.network, hidden_size=5, estimator_hidden=[6], shape_points=8),
        train=replace(cfg.train, epochs=3),
        scoring=replace(cfg.scoring, **scoring),
    )


@pytest.fixture(scope="module")
def fitted() -> Seq2GMMDetector:
    return Seq2GMMDetector(_small(default_config())).fit(_cycles(0, 30), seed=2)


def test_default_scores_segments_and_whole_cycles(fitted: Seq2GMMDetector) -> None:
    assert fitted.evidence is not None
    assert fitted.evidence.cycles.metrics == ("euclidean", "dtw", "sbd")
    # cross-fitted: every training window is a normal reference, not only the held-out ones
    assert fitted.reference_scores is not None and fitted.reference_scores.shape == (30,)
    normal = fitted.score(_cycles(1, 10))
    flat = [np.zeros(40) + 0.5, np.linspace(0, 1, 40)]
    assert np.min(fitted.score(flat)) > np.max(normal)


def test_deterministic_per_seed_and_through_a_checkpoint(fitted: Seq2GMMDetector) -> None:
    test = _cycles(3, 12)
    again = Seq2GMMDetector(_small(default_config())).fit(_cycles(0, 30), seed=2)
    np.testing.assert_array_equal(again.score(test), fitted.score(test))
    np.testing.assert_array_equal(again.reference_scores, fitted.reference_scores)
    loaded = checkpoint_from_bytes(*checkpoint_to_bytes(fitted))
    assert isinstance(loaded, Seq2GMMDetector) and loaded.evidence is not None
    np.testing.assert_array_equal(loaded.score(test), fitted.score(test))
    assert loaded.threshold == fitted.threshold
    details = loaded.score_detailed(test)
    assert [d.score for d in details] == list(fitted.score(test))
    # segments on the window's scale: the worst one is the window score, so the worker's
    # per-segment flag (segment score > threshold) agrees with the window's
    for d in details:
        assert d.segment_energies.max() == pytest.approx(d.score)


def test_a_checkpoint_without_its_reference_cycles_is_refused(fitted: Seq2GMMDetector) -> None:
    tensors = {k: v for k, v in fitted.checkpoint_tensors().items() if "evidence" not in k}
    with pytest.raises(CheckpointError, match="reference cycles"):
        Seq2GMMDetector.from_checkpoint(
            fitted.checkpoint_config(), tensors, n_features=1
        )  # fmt: skip


def test_cross_fitting_removes_the_optimism_of_in_sample_energies() -> None:
    wins = _cycles(4, 40)
    plain = Seq2GMMDetector(_small(default_config(), cycle_metrics=[], cross_fit_folds=0))
    plain.fit(wins, seed=0)
    crossed = Seq2GMMDetector(_small(default_config(), cycle_metrics=[], cross_fit_folds=5))
    crossed.fit(wins, seed=0)
    in_sample = plain.score(wins)
    assert crossed.evidence is None and crossed.reference_scores is not None
    np.testing.assert_array_equal(crossed.score(wins), in_sample)  # same model, same scores
    assert np.median(crossed.reference_scores) > np.median(in_sample)


def test_compress_is_monotone_and_bounds_heavy_tails() -> None:
    z = np.array([-1e6, -2.0, 0.0, 0.5, 3.0, 1e6])
    c = compress(z)
    assert np.all(np.diff(c) > 0) and c[2] == 0.0
    assert c[-1] < 15.0  # one energy far out in the tail cannot outvote three other scores


def test_config_checks() -> None:
    cfg = default_config()
    with pytest.raises(DataError, match="cycle_metrics"):
        cfg.replace(scoring=replace(cfg.scoring, cycle_metrics=["cosine"]))
    with pytest.raises(DataError, match="cross_fit_folds needs"):
        cfg.replace(
            network=replace(cfg.network, membership="estimator"),
            train=replace(cfg.train, component_candidates=None),
        )
