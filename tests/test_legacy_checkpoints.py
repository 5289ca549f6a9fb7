"""Checkpoints written by older code load and score like they did with today's code.

The fixtures in ``tests/fixtures/legacy_checkpoints`` were written once, by the code of commit
cbd70c8 (knn's by the commit that made knn servable; see ``make.py`` there), and are never
regenerated: they pin the on-disk format and the scoring numerics of every servable kind across
refactors. The scores are bit-identical on the machine that wrote them (an Intel Xeon); torch
picks its CPU kernels by instruction set, and on an AMD EPYC (AVX-512) the last bits move, so
the check is to 1e-5 relative: far below any change of the model or its numerics, far above
kernel rounding (up to 3.6e-6 measured, in the float32 networks of seq2gmm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import checkpoint_from_bytes, load_checkpoint, read_checkpoint_dir
from model.kinds import SERVABLE_KINDS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy_checkpoints"


@pytest.mark.parametrize("kind", SERVABLE_KINDS)
def test_legacy_checkpoint_scores_as_written(kind: str) -> None:
    windows = list(np.load(FIXTURES / "windows.npy"))
    expected = np.load(FIXTURES / f"{kind}.scores.npy")
    detector = load_checkpoint(FIXTURES / kind)
    assert detector.kind == kind
    scores = detector.score(windows)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-9, err_msg=kind)


@pytest.mark.parametrize("kind", SERVABLE_KINDS)
def test_legacy_checkpoint_loads_from_registry_bytes(kind: str) -> None:
    metadata, weights = read_checkpoint_dir(FIXTURES / kind)
    detector = checkpoint_from_bytes(metadata, weights)
    windows = list(np.load(FIXTURES / "windows.npy"))
    expected = np.load(FIXTURES / f"{kind}.scores.npy")
    np.testing.assert_allclose(detector.score(windows), expected, rtol=1e-5, atol=1e-9)
