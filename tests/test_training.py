"""Seq2GMMDetector end to end: training, scoring, thresholds, configs, the reference check."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model.base import Detector
from model.detectors.seq2gmm.config import (
    Seq2GMMConfig,
    default_config,
    faithful_config,
    load_config,
)
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.errors import DataError, NotFittedError, ThresholdNotSetError
from model.segmentation.base import Segmentation


def tiny(cfg: Seq2GMMConfig, epochs: int = 6, **train: object) -> Seq2GMMConfig:
    """A small, fast version of ``cfg`` for unit tests."""
    net = replace(cfg.network, hidden_size=6, estimator_hidden=[8], shape_points=8)
    return cfg.replace(
        network=net,
        train=replace(cfg.train, epochs=epochs, batch_size=32, **train),  # type: ignore[arg-type]
        segmentation=replace(cfg.segmentation, method="dp"),
    )


def quasi_periodic(rng: np.random.Generator, n: int, length: int = 48) -> list[np.ndarray]:
    """Heartbeat-like windows with jittered timing and amplitude."""
    out = []
    for _ in range(n):
        t = np.arange(length, dtype=np.float64)
        c = length * rng.uniform(0.35, 0.45)
        w = np.exp(-0.5 * ((t - c) / 2.0) ** 2) * rng.uniform(2.5, 3.0)
        w += 0.5 * np.sin(2 * np.pi * t / length) + 0.05 * rng.normal(size=length)
        out.append(w)
    return out


@pytest.fixture(scope="module")
def data() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    train = quasi_periodic(rng, 40)
    test = quasi_periodic(rng, 12)
    anomalous = test[3].copy()
    anomalous[30:36] += 4.0  # a planted bump where normal windows are smooth
    test[3] = anomalous
    labels = np.zeros(12, dtype=np.int64)
    labels[3] = 1
    return train, test, labels


@pytest.fixture(scope="module")
def fitted(data: tuple[list[np.ndarray], list[np.ndarray], np.ndarray]) -> Seq2GMMDetector:
    train, _, _ = data
    return Seq2GMMDetector(tiny(default_config(), epochs=8)).fit(train, seed=0)


def test_detector_protocol_and_shapes(fitted: Seq2GMMDetector, data: tuple) -> None:
    _, test, _ = data
    assert isinstance(fitted, Detector)
    assert fitted.kind == "seq2gmm"
    scores = fitted.score(test)
    assert scores.shape == (len(test),) and scores.dtype == np.float64
    assert np.all(np.isfinite(scores))
    assert fitted.window_length == 48 and fitted.n_features == 1
    assert len(fitted.history) == fitted.training_summary["epochs_run"] >= 1


def test_planted_anomaly_ranks_first(fitted: Seq2GMMDetector, data: tuple) -> None:
    _, test, labels = data
    scores = fitted.score(test)
    assert int(np.argmax(scores)) == int(np.argmax(labels))


def test_score_detailed_localises(fitted: Seq2GMMDetector, data: tuple) -> None:
    _, test, _ = data
    details = fitted.score_detailed(test)
    scores = fitted.score(test)
    assert len(details) == len(test)
    k = fitted.config.segmentation.n_segments
    assert fitted.evidence is not None  # the default config adds whole-cycle evidence
    for d, s in zip(details, scores, strict=True):
        assert d.score == s
        assert d.segment_energies.shape == (k,) and d.raw_energies.shape == (k,)
        assert d.intervals[0][0] == 0 and d.intervals[-1][1] == 47
        for (a, b), (c, _) in zip(d.intervals, d.intervals[1:], strict=False):
            assert a < b == c  # neighbours share one sample
        # each segment's score is the window score it alone would give: the max is the score
        assert d.score == pytest.approx(float(d.segment_energies.max()))
        assert 0.0 <= (d.percentile or 0.0) <= 100.0
        assert d.is_anomaly is not None  # default config infers a threshold
    top = details[3].top_interval
    assert top[0] <= 35 and top[1] >= 30  # the planted bump lies in the top segment
    assert json.dumps(details[0].to_dict())


def test_same_seed_same_scores(data: tuple) -> None:
    train, test, _ = data
    cfg = tiny(default_config(), epochs=3)
    a = Seq2GMMDetector(cfg).fit(train, seed=5).score(test)
    b = Seq2GMMDetector(cfg).fit(train, seed=5).score(test)
    c = Seq2GMMDetector(cfg).fit(train, seed=6).score(test)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_scores_are_deterministic_and_batch_shaped(fitted: Seq2GMMDetector, data: tuple) -> None:
    _, test, _ = data
    assert np.array_equal(fitted.score(test), fitted.score(test))
    one = np.array([fitted.score([w])[0] for w in test[:3]])
    np.testing.assert_allclose(one, fitted.score(test[:3]), rtol=1e-5, atol=1e-5)


def test_on_epoch_reports_losses(data: tuple) -> None:
    train, _, _ = data
    seen: list[tuple[int, dict[str, float]]] = []
    det = Seq2GMMDetector(tiny(default_config(), epochs=4, patience=None))
    det.fit(train, seed=0, on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [0, 1, 2, 3]
    for key in ("loss", "recon", "energy", "em_log_likelihood", "val_loss", "seconds"):
        assert key in seen[0][1]
    assert det.training_summary["n_validation_windows"] == 8  # 20% of 40, from training windows


def test_not_fitted_and_no_threshold_errors(data: tuple) -> None:
    train, test, _ = data
    det = Seq2GMMDetector(tiny(faithful_config(), epochs=2))
    with pytest.raises(NotFittedError):
        det.score(test)
    with pytest.raises(NotFittedError):
        det.infer_threshold(fpr=0.01)
    with pytest.raises(NotFittedError):
        det.percentile(1.0)
    det.fit(train, seed=0)
    with pytest.raises(ThresholdNotSetError):
        _ = det.threshold
    with pytest.raises(ThresholdNotSetError):
        det.predict(test)
    thr = det.infer_threshold(quantile=0.9)
    assert thr.method == "quantile" and det.has_threshold
    assert det.predict(test).dtype == bool
    thr2 = det.infer_threshold(fpr=0.1)
    assert thr2.value == pytest.approx(thr.value)


def test_percentile_is_monotone(fitted: Seq2GMMDetector) -> None:
    lo, mid, hi = fitted.percentile(np.array([-1e9, 0.0, 1e9]))
    assert lo == 0.0 and hi == 100.0 and 0.0 <= mid <= 100.0
    assert isinstance(fitted.percentile(0.5), float)


def test_bad_input_is_refused(fitted: Seq2GMMDetector) -> None:
    with pytest.raises(DataError):
        fitted.score([np.ones((48, 2))])  # wrong number of features
    with pytest.raises(DataError):
        fitted.score([np.ones(2)])  # too short for 3 segments
    with pytest.raises(DataError):
        fitted.score([np.r_[np.ones(47), np.nan]])


def test_multivariate_windows(data: tuple) -> None:
    train, test, _ = data
    mv_train = [np.stack([w, -w], 1) for w in train[:20]]
    mv_test = [np.stack([w, -w], 1) for w in test]
    det = Seq2GMMDetector(tiny(default_config(), epochs=2)).fit(mv_train, seed=0)
    assert det.n_features == 2
    assert np.all(np.isfinite(det.score(mv_test)))


def test_faithful_mini_batches_and_precomputed_segmentation(data: tuple) -> None:
    train, test, _ = data
    cuts = np.tile([0, 15, 30, 47], (len(train), 1))
    seg = Segmentation(cuts)
    cfg = tiny(faithful_config(), epochs=2)
    det = Seq2GMMDetector(cfg).fit(train, seed=0, segmentation=seg)
    scores = det.score(test, segmentation=Segmentation(cuts[: len(test)]))
    assert np.all(np.isfinite(scores))
    with pytest.raises(DataError):
        det.score(test, segmentation=Segmentation(np.tile([0, 47], (len(test), 1))))


def test_config_json_round_trip(tmp_path: Path) -> None:
    for cfg in (faithful_config(), default_config()):
        path = tmp_path / f"{cfg.name}.json"
        cfg.to_json(path)
        assert load_config(path) == cfg
        assert Seq2GMMConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert load_config("faithful") == faithful_config()
    with pytest.raises(DataError, match="unknown config"):
        load_config("nonsense")
    with pytest.raises(DataError, match="unknown"):
        Seq2GMMConfig.from_dict({"network": {"hiden_size": 3}})
    with pytest.raises(DataError, match="covariance"):
        Seq2GMMConfig.from_dict({"network": {"covariance": "tied"}})
    with pytest.raises(DataError, match=r"train\.selection"):
        Seq2GMMConfig.from_dict({"train": {"selection": "auc"}})


def test_selection_by_held_out_energy_keeps_the_lowest_energy_epoch(data: tuple) -> None:
    train, _, _ = data
    cfg = tiny(default_config(), epochs=6, patience=None)
    cfg = cfg.replace(train=replace(cfg.train, selection="energy", component_candidates=None))
    det = Seq2GMMDetector(cfg).fit(train, seed=0)
    energies = [h["val_energy"] for h in det.history]
    assert det.training_summary["best_epoch"] == int(np.argmin(energies))


def test_faithful_matches_the_reference_settings() -> None:
    cfg = faithful_config()
    n, t = cfg.network, cfg.train
    assert cfg.segmentation.method == "pwlf" and cfg.segmentation.n_segments == 3
    assert n.hidden_size == 15 and n.n_components == 1 and n.covariance == "diag"
    assert n.estimator_hidden == [128, 128] and n.estimator_activation is None
    assert n.decoder == "free_running" and n.eos_in_target and n.z_parts == ["rd", "code", "cs"]
    assert t.energy_weight == 1e-4 and t.recon_loss == "distance" and t.batch_size is None
    assert t.warmup_steps == 1 and t.warmup_lr == 0.01 and t.lr == 1e-3
    assert cfg.scoring.aggregate == "max"
    assert build_width(cfg) == 17


def build_width(cfg: Seq2GMMConfig) -> int:
    from model.detectors.seq2gmm.detector import build_model

    return build_model(cfg, 1).z_dim


@pytest.mark.slow
def test_faithful_on_two_lead_ecg_with_the_reference_segmentation(shared_data: Path) -> None:
    """Trains the reference configuration on TwoLeadECG with the reference's own cuts."""
    from model.evaluation.metrics import roc_auc
    from model.segmentation.reference import load_reference_split

    ref = load_reference_split(shared_data / "ucr" / "TwoLeadECG")
    det = Seq2GMMDetector(faithful_config()).fit(
        ref.train, seed=0, segmentation=ref.train_segmentation
    )
    auc = roc_auc(ref.test_labels, det.score(ref.test, segmentation=ref.test_segmentation))
    assert auc >= FAITHFUL_AUC_BOUND, auc


#: Measured: faithful (100 epochs) on the reference cuts, seeds 0-9: ROC AUC 0.913 +- 0.029,
#: min 0.873 (seed 0), max 0.956. The reference's 0.945 picks the best of 50 checkpoints by
#: test AUC (0.951 +- 0.023 with our model under that protocol); without it 0.93 is not
#: reached reliably, so this test checks a sanity bound below the worst measured seed.
FAITHFUL_AUC_BOUND = 0.85


def test_component_count_is_chosen_on_held_out_normals() -> None:
    rng = np.random.default_rng(7)
    t = np.linspace(0, 1, 40)
    a = [np.sin(2 * np.pi * t) + 0.05 * rng.normal(size=40) for _ in range(40)]
    b = [np.sign(np.sin(2 * np.pi * t)) * 0.7 + 0.05 * rng.normal(size=40) for _ in range(40)]
    cfg = tiny(default_config(), epochs=3, component_candidates=[1, 2])
    det = Seq2GMMDetector(cfg).fit(a + b, seed=0)
    ll = det.training_summary["component_validation_log_likelihood"]
    assert set(ll) == {"1", "2"}
    assert det.config.network.n_components == 2 == det.training_summary["n_components"]
    assert ll["2"] > ll["1"]  # two kinds of normal windows: two components fit held-out data better
    assert det.model is not None and det.model.gmm.n_components == 2
    with pytest.raises(DataError, match="mixture"):
        Seq2GMMConfig.from_dict(
            {"network": {"membership": "estimator"}, "train": {"component_candidates": [1, 2]}}
        )


def test_training_budget_samples_segments_and_caps_epochs(data: tuple) -> None:
    train, test, _ = data
    base = tiny(default_config(), epochs=8, patience=None)
    # a budget the small set never reaches changes nothing, bit for bit
    roomy = tiny(default_config(), epochs=8, patience=None, max_epoch_segments=10_000,
                 sample_budget=1e12)  # fmt: skip
    unbounded = replace(base.train, max_epoch_segments=None, sample_budget=None)
    a = Seq2GMMDetector(base.replace(train=unbounded)).fit(train, seed=0)
    b = Seq2GMMDetector(roomy).fit(train, seed=0)
    np.testing.assert_array_equal(a.score(test), b.score(test))
    # 40 windows x 3 segments, 32 training windows: sample 30 segments an epoch; the budget
    # (30 segments x ~16 samples x 3 epochs) stops after 3 of the 8 epochs
    tight = tiny(default_config(), epochs=8, patience=None, max_epoch_segments=30,
                 sample_budget=30 * 16 * 3.5)  # fmt: skip
    c = Seq2GMMDetector(tight).fit(train, seed=0)
    d = Seq2GMMDetector(tight).fit(train, seed=0)
    assert c.training_summary["epochs_run"] == 3
    np.testing.assert_array_equal(c.score(test), d.score(test))  # seeded sampling
    assert not np.array_equal(c.score(test), a.score(test))
