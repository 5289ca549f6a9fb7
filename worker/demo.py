"""The demo model: trained on synthetic quasi-periodic data when the registry has none, so
`make run-worker` and `make demo` work on a fresh clone with one command."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import structlog

from model.checkpoint import save_checkpoint
from model.config import default_config
from model.data import sliding_windows
from model.pipeline import Seq2GMMDetector
from model.synthetic import SyntheticConfig, generate
from worker.registry import ModelRegistry

DEMO_PERIOD = 64
DEMO_EPOCHS = 30

log = structlog.get_logger()


def synthetic_training_windows(length: int, seed: int) -> list[np.ndarray]:
    """Normal synthetic series cut into windows of ``length`` with a hop of length/2."""
    cfg = SyntheticConfig(n_series=4, n_cycles=60, period=length, anomaly_rate=0.0, seed=seed)
    hop = max(1, length // 2)
    windows: list[np.ndarray] = []
    for s in generate(cfg):
        windows += list(sliding_windows(s.values, length, hop).windows)
    return windows


def ensure_demo_model(registry: ModelRegistry, name: str, *, seed: int = 0) -> int:
    """The active version of ``name``; trains, publishes and promotes a demo model if none."""
    active = registry.resolve(name)
    if active is not None:
        return active
    log.info(
        "training_demo_model",
        model=name,
        reason="the registry has no active version",
        epochs=DEMO_EPOCHS,
    )
    started = time.perf_counter()
    cfg = default_config()
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, epochs=DEMO_EPOCHS))
    detector = Seq2GMMDetector(cfg).fit(synthetic_training_windows(DEMO_PERIOD, seed), seed=seed)
    if not detector.has_threshold:
        detector.infer_threshold(fpr=0.01)
    detector.hop = DEMO_PERIOD
    detector.training_summary.update({"source": "synthetic", "format": "synthetic"})
    with tempfile.TemporaryDirectory() as tmp:
        out = save_checkpoint(detector, Path(tmp) / name)
        version = registry.publish_dir(out, name, promote=True)
    log.info(
        "demo_model_published",
        model=name,
        version=version,
        seconds=round(time.perf_counter() - started, 1),
    )
    return version
