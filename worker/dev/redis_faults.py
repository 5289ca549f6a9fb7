"""Redis hung, then stopped, under a serving worker, measured against a twin that has no fault.

Two :class:`~worker.dev.faults.Lane` s side by side, fed the same windows at the same rate, each
with its own valkey: lane B's is frozen (SIGSTOP: connections hang, as in a network partition)
for ``fault_s``, then stopped for ``fault_s``; lane A's is left alone. The windows each lane
published inside each interval (by the producer timestamps of its records) say whether Redis
trouble slowed B's scoring. Shared by the fault suite (tests/test_faults.py, short) and the soak
bench (bench/faults_soak.py, 60 s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.dev.faults import FaultServices, Feeder, Lane, created_between, freeze, resume

SETTLE_S = 2.0  # before the fault, and after it before the feeder stops


@dataclass
class RedisFaultRun:
    lanes: dict[str, Lane]  # "A" (no fault) and "B" (Redis hung, then stopped); closed
    expected: set[str]  # the windows fed to both
    outputs: dict[str, list[Any]]  # per lane, its records on its anomalies topic
    hung: dict[str, int]  # per lane, records published while B's Redis was frozen
    down: dict[str, int]  # ... while it was stopped


def side_by_side(
    rig: FaultServices,
    names: tuple[str, str],
    model: Path,
    feed: tuple[int, int, float],
    fault_s: float,
    first_output_s: float = 60.0,
) -> RedisFaultRun:
    """Lanes ``names`` (A, B) serving ``model``, fed ``feed`` = (series, window length, windows
    a second of all series together), B's Redis hung then stopped ``fault_s`` each."""
    series, length, rate = feed
    lanes = {k: Lane(rig, name, model, rig.valkey()) for k, name in zip("AB", names, strict=True)}
    b = lanes["B"]
    feeder = None
    try:
        runs = {k: lane.start_worker() for k, lane in lanes.items()}
        raws = [lane.raw for lane in lanes.values()]
        feeder = Feeder(rig.bootstrap, raws, series, length, rate).start()
        for k, lane in lanes.items():
            lane.first_output_after(runs[k].started, timeout_s=first_output_s)
        time.sleep(SETTLE_S)
        t0 = time.time()
        freeze(b.redis)
        time.sleep(fault_s)
        resume(b.redis)
        t1 = time.time()
        b.redis.stop()
        time.sleep(fault_s)
        t2 = time.time()
        b.redis.start(timeout_s=30)
        time.sleep(SETTLE_S)
        expected, feeder = feeder.stop(), None
        time.sleep(SETTLE_S)
        for k, lane in lanes.items():
            lane.stop(runs[k])
        outputs = {k: lane.read(lane.out, at_least=len(expected)) for k, lane in lanes.items()}
    finally:
        if feeder is not None:
            feeder.stop()
        for lane in lanes.values():
            lane.close()
    return RedisFaultRun(
        lanes=lanes,
        expected=expected,
        outputs=outputs,
        hung={k: created_between(v, t0, t1) for k, v in outputs.items()},
        down={k: created_between(v, t1, t2) for k, v in outputs.items()},
    )
