"""Checkpoints written by older code load and score bit-identically with today's code.

The fixtures in ``tests/fixtures/legacy_checkpoints`` were written once, by the code of commit
cbd70c8 (knn's by the commit that made knn servable; see ``make.py`` there), and are never
regenerated: they pin the on-disk format and the scoring numerics of every servable kind across
refactors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import checkpoint_from_bytes, load_checkpoint, read_checkpoint_dir
from model.kinds import SERVABLE_KINDS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy_checkpoints"


@pytest.mark.parametrize("kind", SERVABLE_KINDS)
def test_legacy_checkpoint_scores_bit_identically(kind: str) -> None:
    windows = list(np.load(FIXTURES / "windows.npy"))
    expected = np.load(FIXTURES / f"{kind}.scores.npy")
    detector = load_checkpoint(FIXTURES / kind)
    assert detector.kind == kind
    scores = detector.score(windows)
    assert scores.dtype == np.float64
    assert np.array_equal(scores, expected), f"{kind}: scores changed: {scores} != {expected}"


@pytest.mark.parametrize("kind", SERVABLE_KINDS)
def test_legacy_checkpoint_loads_from_registry_bytes(kind: str) -> None:
    metadata, weights = read_checkpoint_dir(FIXTURES / kind)
    detector = checkpoint_from_bytes(metadata, weights)
    windows = list(np.load(FIXTURES / "windows.npy"))
    assert np.array_equal(detector.score(windows), np.load(FIXTURES / f"{kind}.scores.npy"))
