"""Shared fixtures: paths to ../shared/data, seeded randomness."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The labelled public datasets in ../shared/data; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real datasets not found at {SHARED_DATA} (checkout ../shared beside the repo)"
        )
    return SHARED_DATA


# CI has 2 cores shared with the broker, valkey and worker processes: one intra-op thread is
# much faster there than torch's default (see docs/benchmarks.md, segmentation).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread in every test, even after a test (e.g. the CLI with
    SEQ2GMM_TORCH_THREADS) changed it: small networks run faster and steadier on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- real services


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One embedded tansu broker and one valkey server for the whole test session.

    Real services over TCP on free loopback ports; each test uses its own topics / key prefix
    (see ``unique``). Fails (does not skip) when the embedded wheels are missing: `make setup`.
    """
    from worker.dev.services import Endpoints, TansuBroker, ValkeyServer, free_port

    data_dir = tmp_path_factory.mktemp("services")
    kafka = TansuBroker(data_dir, "127.0.0.1", free_port())
    redis_srv = ValkeyServer(data_dir, "127.0.0.1", free_port())
    kafka.start(timeout_s=30)
    try:
        redis_srv.start(timeout_s=30)
    except Exception:
        kafka.stop()
        raise
    yield Endpoints(kafka_bootstrap=kafka.url, redis_url=redis_srv.url)
    kafka.stop()
    redis_srv.stop()


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A name unique to this test, for topics, consumer groups and Redis key prefixes."""
    import re
    import uuid

    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="session")
def twolead(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """The TwoLeadECG one-class split and a small Seq2GMM trained on its training rows."""
    import dataclasses

    from model.checkpoint import save_checkpoint
    from model.detectors.seq2gmm.config import default_config
    from model.detectors.seq2gmm.detector import Seq2GMMDetector
    from model.evaluation.data import one_class_split

    data = SHARED_DATA / "ucr" / "TwoLeadECG"
    if not data.is_dir():
        pytest.skip(f"TwoLeadECG not found at {data} (checkout ../shared beside the repo)")
    split = one_class_split(data / "TwoLeadECG_TRAIN.tsv", data / "TwoLeadECG_TEST.tsv")
    cfg = default_config()
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, epochs=30, patience=None))
    detector = Seq2GMMDetector(cfg).fit(split.train, seed=0)
    out = tmp_path_factory.mktemp("model") / "twolead"
    save_checkpoint(detector, out)
    return split, out
