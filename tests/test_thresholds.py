"""Thresholds inferred from normal scores, and training-energy percentiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.errors import DataError, Seq2GMMError, ThresholdNotSetError
from model.thresholds import EnergyQuantiles, Threshold, infer_threshold, require_threshold


@pytest.mark.parametrize("fpr", [0.001, 0.01, 0.05, 0.2])
def test_fpr_threshold_lets_that_share_of_normals_through(fpr: float) -> None:
    rng = np.random.default_rng(0)
    normal = rng.gamma(2.0, size=20001)
    t = infer_threshold(normal, fpr=fpr)
    assert (t.method, t.parameter, t.n_reference) == ("fpr", fpr, 20001)
    # exactly round-down((n - 1) * fpr) scores lie strictly above the interpolated quantile
    assert int(t.is_anomalous(normal).sum()) == int(np.floor(20000 * fpr + 1e-9))
    # and on fresh normal data the false-positive rate is close to the target
    fresh = rng.gamma(2.0, size=200000)
    assert abs(t.is_anomalous(fresh).mean() - fpr) < 0.25 * fpr + 0.001


def test_quantile_threshold_and_ordering() -> None:
    s = np.arange(101.0)
    assert infer_threshold(s, quantile=0.9).value == pytest.approx(90.0)
    assert infer_threshold(s, quantile=1.0).value == 100.0
    assert infer_threshold(s, fpr=0.01).value == pytest.approx(99.0)
    # a lower fpr gives a higher threshold
    assert infer_threshold(s, fpr=0.01).value > infer_threshold(s, fpr=0.1).value


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"fpr": 0.1, "quantile": 0.9}, "exactly one"),
        ({"fpr": 0.0}, "strictly between"),
        ({"fpr": 1.0}, "strictly between"),
        ({"quantile": 1.5}, "between 0 and 1"),
    ],
)
def test_infer_threshold_argument_errors(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(DataError, match=match):
        infer_threshold([1.0, 2.0, 3.0], **kwargs)


def test_infer_threshold_bad_scores() -> None:
    with pytest.raises(DataError, match="at least one"):
        infer_threshold([], fpr=0.1)
    with pytest.raises(DataError, match="NaN"):
        infer_threshold([1.0, np.nan], fpr=0.1)


def test_threshold_round_trip_and_require() -> None:
    t = infer_threshold([1.0, 2.0, 3.0, 4.0], fpr=0.25)
    back = Threshold.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back == t
    with pytest.raises(DataError, match="expected keys"):
        Threshold.from_dict({"value": 1.0})
    with pytest.raises(DataError, match="method"):
        Threshold(1.0, "magic", 0.1, 3)  # type: ignore[arg-type]
    assert require_threshold(t) is t
    with pytest.raises(ThresholdNotSetError, match="infer_threshold") as err:
        require_threshold(None)
    assert isinstance(err.value, Seq2GMMError)
    with pytest.raises(AttributeError):
        t.value = 0.0  # type: ignore[misc]  # frozen


def test_percentile_monotone_bounded_and_consistent() -> None:
    rng = np.random.default_rng(3)
    energies = rng.normal(5.0, 2.0, size=5000)
    q = EnergyQuantiles.from_scores(energies)
    assert q.values.shape == (1001,) and q.n_reference == 5000
    grid = np.linspace(-10, 20, 4001)
    pct = q.percentiles(grid)
    assert np.all(np.diff(pct) >= 0)
    assert pct.min() == 0.0 and pct.max() == 100.0
    assert q.percentile(-1e9) == 0.0 and q.percentile(1e9) == 100.0
    assert q.percentile(float("inf")) == 100.0
    # close to the empirical CDF of the training energies (0.1-point grid)
    for e in rng.choice(energies, 50):
        empirical = 100.0 * np.mean(energies <= e)
        assert abs(q.percentile(float(e)) - empirical) < 0.2
    assert q.percentile(float(np.median(energies))) == pytest.approx(50.0, abs=0.05)


def test_percentile_with_repeated_energies() -> None:
    q = EnergyQuantiles.from_scores([1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(q.percentiles([0.0, 1.0, 2.0]), [0.0, 50.0, 100.0])
    q = EnergyQuantiles.from_scores([0.0, 1.0, 1.0, 1.0, 2.0])
    pct = q.percentiles([0.0, 0.5, 1.0, 1.5, 2.0])
    assert np.all(np.diff(pct) > 0)
    assert pct[2] == pytest.approx(50.0)
    with pytest.raises(DataError, match="NaN"):
        q.percentile(float("nan"))


def test_energy_quantiles_json_round_trip_and_validation() -> None:
    q = EnergyQuantiles.from_scores(np.random.default_rng(0).exponential(size=300), n_points=101)
    data = json.loads(json.dumps(q.to_dict()))
    assert set(data) == {"values", "n_reference"} and len(data["values"]) == 101
    back = EnergyQuantiles.from_dict(data)
    assert back == q
    np.testing.assert_array_equal(back.percentiles([0.1, 1.0, 3.0]), q.percentiles([0.1, 1.0, 3.0]))
    with pytest.raises(DataError, match="non-decreasing"):
        EnergyQuantiles.from_dict({"values": [3.0, 1.0], "n_reference": 2})
    with pytest.raises(DataError, match="expected keys"):
        EnergyQuantiles.from_dict({"values": [1.0, 2.0]})
    with pytest.raises(DataError, match=">= 2"):
        EnergyQuantiles.from_scores([1.0, 2.0], n_points=1)
