"""The environment of a ``seq2gmm worker`` subprocess in an integration test (not a test file).

One place for what every such test sets: the embedded services, the test's own topics
(``raw-``, ``anom-``, ``dlq-``, ``inc-`` + its unique id), group and registry prefix, group
timing short enough for tests, JSON logs, one torch thread on the CPU, no metrics port."""

from __future__ import annotations

import os
from pathlib import Path

from worker.dev.services import Endpoints


def worker_env(
    services: Endpoints, unique: str, cache_dir: Path, **settings: str
) -> dict[str, str]:
    """``os.environ`` plus the test's worker settings; ``settings`` add or override
    ``SEQ2GMM_*`` variables, named without the prefix (``KAFKA__NUM_PARTITIONS="2"``)."""
    return {
        **os.environ,
        "SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS": services.kafka_bootstrap,
        "SEQ2GMM_REDIS__URL": services.redis_url,
        "SEQ2GMM_REDIS__KEY_PREFIX": unique,
        "SEQ2GMM_KAFKA__RAW_TOPIC": f"raw-{unique}",
        "SEQ2GMM_KAFKA__ANOMALIES_TOPIC": f"anom-{unique}",
        "SEQ2GMM_KAFKA__DEAD_LETTER_TOPIC": f"dlq-{unique}",
        "SEQ2GMM_INCIDENTS__TOPIC": f"inc-{unique}",
        "SEQ2GMM_KAFKA__GROUP_ID": f"g-{unique}",
        "SEQ2GMM_KAFKA__MAX_POLL_INTERVAL_MS": "10000",
        "SEQ2GMM_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "SEQ2GMM_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "SEQ2GMM_WORKER__MODEL_CACHE_DIR": str(cache_dir),
        "SEQ2GMM_LOGGING__FORMAT": "json",
        "SEQ2GMM_DEVICE": "cpu",
        "SEQ2GMM_TORCH_THREADS": "1",
        "SEQ2GMM_METRICS__PORT": "0",
        **{f"SEQ2GMM_{name}": value for name, value in settings.items()},
    }
