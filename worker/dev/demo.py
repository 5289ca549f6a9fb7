"""The demo model: trained on synthetic quasi-periodic data when the registry has none, so
`make run-worker` and `make demo` work on a fresh clone with one command."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import structlog

from model.checkpoint import save_checkpoint
from model.detectors.seq2gmm.config import default_config
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.evaluation.synthetic import synthetic_training_windows
from worker.registry.store import ModelRegistry

DEMO_PERIOD = 64
DEMO_EPOCHS = 30

log = structlog.get_logger()


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
