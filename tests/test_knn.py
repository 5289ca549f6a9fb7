"""The servable nearest-cycle detector (kind ``knn``): 1-NN on raw windows, any window length,
cross-fitted calibration, seeded reference sampling and bit-identical checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import (
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_checkpoint,
    save_checkpoint,
)
from model.detectors.nearest import METRICS, NearestConfig, NearestCycleDetector
from model.errors import CheckpointError, DataError, NotFittedError
from model.evaluation.data import ucr_one_class_split
from model.evaluation.metrics import roc_auc
from model.evaluation.oneclass import evaluate
from model.kinds import SERVABLE_KINDS, make_detector


def _sines(seed: int, n: int, lengths: tuple[int, int] = (48, 48)) -> list[np.ndarray]:
    """Noisy single periods of a sine, of lengths drawn in ``lengths`` (inclusive)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        t = np.linspace(0.0, 2 * np.pi, length)
        out.append(np.sin(t + rng.normal(0, 0.1)) + 0.05 * rng.normal(size=length))
    return out


def _brute_force(train: list[np.ndarray], test: list[np.ndarray]) -> np.ndarray:
    """(Nq, Nr) Euclidean distances of the flattened raw windows, in float64."""
    X = np.stack([np.asarray(w, dtype=np.float64).ravel() for w in train])
    Q = np.stack([np.asarray(w, dtype=np.float64).ravel() for w in test])
    return np.sqrt(((Q[:, None] - X[None]) ** 2).sum(-1))


@pytest.fixture(scope="module")
def fitted() -> NearestCycleDetector:
    return NearestCycleDetector().fit(_sines(0, 40, (40, 56)), seed=0)


# ------------------------------------------------------------------ 1-NN


def test_equal_length_univariate_scores_are_1nn_distances_over_the_training_std() -> None:
    rng = np.random.default_rng(4)
    train = [rng.normal(size=12) for _ in range(15)]
    test = [rng.normal(size=12) for _ in range(7)]
    det = NearestCycleDetector().fit(train, seed=0)
    std = np.concatenate(train).std()
    d = _brute_force(train, test)
    np.testing.assert_allclose(det.score(test) * std, d.min(axis=1), rtol=1e-5)
    dtt = _brute_force(train, train)
    np.fill_diagonal(dtt, np.inf)  # leave-one-out: a training window's distance to itself
    assert det.reference_scores is not None
    np.testing.assert_allclose(det.reference_scores * std, dtt.min(axis=1), rtol=1e-5)
    assert np.all(det.score(train) < det.reference_scores)  # in-sample would be optimistic
    assert det.window_length == 12 and det.training_summary["points"] == 12


def test_multivariate_windows_are_compared_with_each_feature_standardised() -> None:
    rng = np.random.default_rng(5)
    scale = np.array([1.0, 100.0])
    train = [rng.normal(size=(10, 2)) * scale for _ in range(12)]
    test = [rng.normal(size=(10, 2)) * scale for _ in range(5)]
    det = NearestCycleDetector().fit(train, seed=0)
    stacked = np.concatenate(train)
    mean, std = stacked.mean(0), stacked.std(0)
    d = _brute_force([(w - mean) / std for w in train], [(w - mean) / std for w in test])
    np.testing.assert_allclose(det.score(test), d.min(axis=1), rtol=1e-5)
    with pytest.raises(DataError, match="trained on 2 features"):
        det.score([np.zeros((10, 3))])


def test_ranks_ucr_test_windows_exactly_like_raw_1nn(shared_data: Path) -> None:
    split = ucr_one_class_split(shared_data / "ucr", "TwoLeadECG")
    det = make_detector("knn")
    report = evaluate(det, split, seed=0)
    raw = _brute_force(split.train, split.test).min(axis=1)
    assert report.roc_auc == roc_auc(split.test_labels, raw)
    assert round(report.roc_auc, 3) == 0.850 and report.threshold_reference == "reference_scores"
    std = np.concatenate([np.asarray(w, dtype=np.float64) for w in split.train]).std()
    np.testing.assert_allclose(det.score(split.test) * std, raw, rtol=1e-5)


# ------------------------------------------------------------------ windows of any length


def test_variable_length_windows_are_resampled_to_the_median_length(
    fitted: NearestCycleDetector,
) -> None:
    assert fitted.window_length is None
    summary = fitted.training_summary
    assert (summary["window_length_min"], summary["window_length_max"]) >= (40, 50)
    assert summary["points"] == int(np.median([len(w) for w in _sines(0, 40, (40, 56))]))
    assert summary["n_windows"] == summary["n_references"] == 40
    normal = _sines(1, 10, (30, 90))  # shorter and longer periods than any training one
    flat = [np.zeros(47), np.linspace(-1, 1, 60)]
    scores = fitted.score([*normal, *flat])
    assert scores.shape == (12,) and scores.dtype == np.float64
    assert scores[10:].min() > scores[:10].max()
    # a training cycle stretched to another length is (almost) its own nearest reference
    w = _sines(0, 40, (40, 56))[3]
    stretched = np.interp(np.linspace(0, 1, 2 * len(w)), np.linspace(0, 1, len(w)), w)
    assert fitted.score([stretched])[0] < 0.2 * scores[:10].min()


def test_long_windows_keep_at_most_max_points() -> None:
    train = _sines(2, 8, (300, 320))
    det = NearestCycleDetector(NearestConfig(max_points=64)).fit(train, seed=0)
    assert det.training_summary["points"] == 64
    assert det.model is not None and tuple(det.model.cycles.shape) == (8, 64, 1)
    assert np.isfinite(det.score(_sines(3, 3, (280, 330)))).all()


@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_separates_planted_anomalies(metric: str) -> None:
    det = NearestCycleDetector(NearestConfig(metric=metric)).fit(_sines(4, 30, (44, 52)), seed=0)
    odd = _sines(5, 3, (44, 52))
    for k, w in enumerate(odd):
        w[10 + 5 * k : 20 + 5 * k] += 3.0  # a bump no normal cycle has
    scores = det.score([*_sines(6, 10, (44, 52)), *odd])
    assert scores[10:].min() > scores[:10].max()
    assert det.training_summary["metric"] == metric


# ------------------------------------------------------------------ calibration and seeds


def test_calibration_threshold_and_percentiles(fitted: NearestCycleDetector) -> None:
    ref = fitted.reference_scores
    assert ref is not None and ref.shape == (40,) and np.all(ref > 0)
    assert fitted.threshold.method == "fpr" and fitted.threshold.parameter == 0.01
    assert fitted.threshold.value == pytest.approx(np.quantile(ref, 0.99))
    assert fitted.percentile(ref.max() + 1.0) == 100.0
    assert fitted.percentile(0.0) == 0.0
    details = fitted.score_detailed([np.zeros(47), _sines(7, 1)[0]])
    assert details[0].is_anomaly and not details[1].is_anomaly
    assert details[0].intervals == [(0, 46)] and details[1].percentile is not None
    unset = NearestCycleDetector(NearestConfig(threshold_fpr=None)).fit(_sines(0, 5), seed=0)
    assert not unset.has_threshold


def test_deterministic_per_seed_with_a_sample_of_references() -> None:
    train, test = _sines(8, 60, (40, 56)), _sines(9, 12, (40, 56))
    cfg = NearestConfig(max_references=20)
    a = NearestCycleDetector(cfg).fit(train, seed=3)
    b = NearestCycleDetector(cfg).fit(train, seed=3)
    c = NearestCycleDetector(cfg).fit(train, seed=4)
    np.testing.assert_array_equal(a.score(test), b.score(test))
    assert a.reference_scores is not None and b.reference_scores is not None
    np.testing.assert_array_equal(a.reference_scores, b.reference_scores)
    assert not np.array_equal(a.score(test), c.score(test))
    assert a.training_summary["n_references"] == 20 and a.reference_scores.shape == (60,)
    # every training window still has a (cross-fitted) reference score, none of them 0
    assert np.all(a.reference_scores > 0)


# ------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("metric", METRICS)
def test_checkpoint_round_trip_is_bit_identical(metric: str, tmp_path: Path) -> None:
    cfg = NearestConfig(metric=metric, max_references=25, candidates=4)
    det = NearestCycleDetector(cfg).fit(_sines(10, 30, (40, 56)), seed=2)
    det.hop = 12
    test = [*_sines(11, 6, (30, 70)), np.zeros(48)]
    loaded = load_checkpoint(save_checkpoint(det, tmp_path / "ckpt"))
    assert isinstance(loaded, NearestCycleDetector) and loaded.kind == "knn"
    np.testing.assert_array_equal(loaded.score(test), det.score(test))
    assert loaded.config == det.config
    assert loaded.threshold == det.threshold and loaded.quantiles == det.quantiles
    assert loaded.reference_scores is not None and det.reference_scores is not None
    np.testing.assert_array_equal(loaded.reference_scores, det.reference_scores)
    assert (loaded.window_length, loaded.hop, loaded.n_features, loaded.seed) == (None, 12, 1, 2)
    assert loaded.training_summary["n_references"] == 25
    meta, weights = checkpoint_to_bytes(det)
    meta = json.loads(json.dumps(meta))  # as the registry stores it
    assert meta["kind"] == "knn" and meta["n_references"] == 25 and meta["points"] == 48
    again = checkpoint_from_bytes(meta, weights)
    np.testing.assert_array_equal(again.score(test), det.score(test))


def test_checkpoint_with_bad_config_or_tensors_is_refused(fitted: NearestCycleDetector) -> None:
    meta, weights = checkpoint_to_bytes(fitted)
    with pytest.raises(CheckpointError, match="metric must be one of"):
        checkpoint_from_bytes({**meta, "config": {**meta["config"], "metric": "cosine"}}, weights)
    with pytest.raises(CheckpointError, match=r"cycles of shape \(references, points, 2\)"):
        checkpoint_from_bytes({**meta, "n_features": 2}, weights)
    with pytest.raises(CheckpointError, match="unknown knn config keys"):
        checkpoint_from_bytes({**meta, "config": {**meta["config"], "k": 1}}, weights)


# ------------------------------------------------------------------ config and errors


def test_config_round_trip_and_errors_name_the_key(tmp_path: Path) -> None:
    cfg = NearestConfig(metric="dtw", band=0.2, candidates=8, threshold_fpr=None)
    assert NearestConfig.from_dict(cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    for bad, key in [
        ({"metric": "manhattan"}, "metric"),
        ({"max_points": 1}, "max_points"),
        ({"max_references": 1}, "max_references"),
        ({"band": 1.5}, "band"),
        ({"candidates": 0}, "candidates"),
        ({"threshold_fpr": 1.0}, "threshold_fpr"),
        ({"max_points": "many"}, "max_points"),
        ({"max_points": True}, "max_points"),
        ({"band": "wide"}, "band"),
    ]:
        with pytest.raises(DataError, match=f"invalid knn config: {key}"):
            NearestConfig.from_dict(bad)
    with pytest.raises(DataError, match=r"unknown knn config keys \['k'\]"):
        NearestConfig.from_dict({"k": 3})
    assert "knn" in SERVABLE_KINDS
    assert isinstance(make_detector("knn"), NearestCycleDetector)
    assert make_detector("knn", config={"metric": "sbd"}).config.metric == "sbd"  # type: ignore[attr-defined]
    path = tmp_path / "knn.json"
    path.write_text(json.dumps({"metric": "dtw", "max_points": 128}))
    det = make_detector("knn", config=str(path))
    assert isinstance(det, NearestCycleDetector) and det.config.max_points == 128


def test_bad_input_and_not_fitted() -> None:
    det = NearestCycleDetector()
    with pytest.raises(NotFittedError, match="fit"):
        det.score([np.zeros(10)])
    with pytest.raises(DataError, match="at least 2 training windows"):
        det.fit([np.zeros(10)], seed=0)
    det.fit(_sines(0, 5), seed=0)
    with pytest.raises(DataError, match="NaN"):
        det.score([np.full(10, np.nan)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", METRICS)
def test_cuda_scores_match_cpu(metric: str) -> None:
    train, test = _sines(12, 40, (40, 56)), _sines(13, 8, (30, 70))
    cfg = NearestConfig(metric=metric)
    cpu = NearestCycleDetector(cfg).fit(train, seed=0)
    gpu = NearestCycleDetector(cfg, device="cuda").fit(train, seed=0)
    np.testing.assert_allclose(gpu.score(test), cpu.score(test), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cpu.to("cuda").score(test), cpu.to("cpu").score(test), rtol=1e-4)
