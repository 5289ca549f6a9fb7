"""The setup every detector shares: windows, padding, the held-out split, standardisation,
seeding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from model.errors import DataError
from model.fitting import (
    as_windows,
    build_config,
    check_config,
    held_out_split,
    input_standardisation,
    pad_windows,
    seeded,
    training_checks,
)


def test_as_windows_accepts_lists_and_arrays_alike() -> None:
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(4, 6))
    from_array = as_windows(arr)
    from_list = as_windows([list(row) for row in arr])
    assert [w.shape for w in from_array] == [(6, 1)] * 4
    for a, b in zip(from_array, from_list, strict=True):
        assert a.dtype == np.float64 and np.array_equal(a, b)
    assert [w.shape for w in as_windows(rng.normal(size=(3, 5, 2)))] == [(5, 2)] * 3
    assert [w.shape for w in as_windows([np.zeros(4), np.zeros(7)])] == [(4, 1), (7, 1)]


@pytest.mark.parametrize("as_array", [True, False])
def test_as_windows_names_the_bad_window(as_array: bool) -> None:
    wins = np.zeros((3, 5))
    wins[2, 1] = np.inf
    with pytest.raises(DataError, match=r"window 2 .*NaN or infinite"):
        as_windows(wins if as_array else list(wins))


def test_as_windows_refusals_say_what_to_do() -> None:
    with pytest.raises(DataError, match="KNN got no windows"):
        as_windows([], who="KNN")
    with pytest.raises(DataError, match="not one window"):
        as_windows(np.zeros(5))
    with pytest.raises(DataError, match=r"one feature count.*\[1, 2\]"):
        as_windows([np.zeros((5, 1)), np.zeros((5, 2))])
    with pytest.raises(DataError, match="X was trained on 3 features"):
        as_windows([np.zeros((5, 2))], who="X", n_features=3)
    with pytest.raises(DataError, match=r"window 1 has 2 sample\(s\); X needs at least 3"):
        as_windows([np.zeros(3), np.zeros(2)], who="X", min_length=3)
    with pytest.raises(DataError, match="window 0 is invalid"):
        as_windows([np.zeros((2, 2, 2))])


def test_pad_windows_zero_pads_to_the_longest() -> None:
    x, lengths = pad_windows([np.ones((2, 3)), 2 * np.ones((4, 3))], dtype=np.float32)
    assert x.dtype == torch.float32 and x.shape == (2, 4, 3)
    assert lengths.tolist() == [2, 4] and lengths.dtype == torch.int64
    assert x[0, :2].eq(1).all() and x[0, 2:].eq(0).all() and x[1].eq(2).all()
    assert pad_windows([np.ones((2, 1))])[0].dtype == torch.float64


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"),
    [
        (10, 0.0, 0),  # no validation share
        (10, 0.2, 2),  # round(fraction * n)
        (100, 0.1, 10),
        (10, 0.05, 2),  # below the minimum: raised to it ...
        (3, 0.2, 0),  # ... unless fewer than 2 windows would be left to train on
        (4, 0.2, 2),
    ],
)
def test_held_out_split_rule(n: int, fraction: float, n_val: int) -> None:
    train, val = held_out_split(n, fraction, seed=3)
    assert val.size == n_val and train.size == n - n_val
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)


def test_held_out_split_is_seeded_and_refuses_an_empty_training_share() -> None:
    a, b, c = (held_out_split(50, 0.2, seed=s)[1] for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert held_out_split(10, 0.05, seed=0, min_validation=1)[1].size == 1
    with pytest.raises(DataError, match="lower it"):
        held_out_split(10, 0.96, seed=0)


def test_input_standardisation_floors_constant_features() -> None:
    wins = [np.array([[1.0, 5.0], [3.0, 5.0]]), np.array([[5.0, 5.0]])]
    mean, std = input_standardisation(wins)
    np.testing.assert_allclose(mean, [3.0, 5.0])
    np.testing.assert_allclose(std, [np.std([1.0, 3.0, 5.0]), 1.0])
    _, std_tiny = input_standardisation([np.array([[0.0], [1e-9]])])
    assert std_tiny[0] == 1.0  # below the default floor
    _, kept = input_standardisation([np.array([[0.0], [1e-9]])], floor=1e-12)
    assert kept[0] == pytest.approx(5e-10)


def test_seeded_is_reproducible_and_restores_the_callers_rng() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    with seeded(7):
        first = torch.rand(3)
    with seeded(7, torch.device("cpu")):
        second = torch.rand(3)
    assert torch.equal(first, second)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG did not move


@dataclass(frozen=True)
class _Cfg:
    n: int = 1


def test_config_checks_name_the_first_failure() -> None:
    check_config("toy config", [(True, "fine")])
    with pytest.raises(DataError, match=r"^invalid toy config: second$"):
        check_config("toy config", [(True, "first"), (False, "second"), (False, "third")])
    names = [m for ok, m in training_checks(1.0, 0, 1.5) if not ok]
    assert [n.split()[0] for n in names] == ["validation_fraction", "patience", "threshold_fpr"]
    assert all(ok for ok, _ in training_checks(0.2, None, None))


def test_build_config_turns_type_errors_into_data_errors() -> None:
    assert build_config(_Cfg, {"n": 3}, "toy config") == _Cfg(3)
    with pytest.raises(DataError, match=r"invalid toy config: .*unexpected keyword"):
        build_config(_Cfg, {"m": 3}, "toy config")
