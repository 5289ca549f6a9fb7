"""The fault suite's soak variants (docs/reliability.md): longer faults than CI can afford.

    python bench/faults_soak.py                      # everything (~8 min on 2 cores)
    python bench/faults_soak.py --only redis --fault-s 60
    python bench/faults_soak.py --only kills --kills 20
    python bench/faults_soak.py --only recovery      # restart after kill -9, dynamic vs static

* ``kills``: N kill -9 of a worker mid-stream (random moments, seeded), then a final run to
  the end: windows lost, duplicates, restart -> first new record.
* ``redis``: two lanes side by side (own valkey each, same input rate); B's valkey frozen with
  SIGSTOP for ``--fault-s``, then stopped for ``--fault-s``: windows published per interval.
* ``broker``: the broker stopped for ``--broker-down-s`` (default 40 s, past kafka-python's
  30 s request timeout) and restarted empty; the worker must stay up and publish afterwards.
* ``durable``: the same broker restart on S3 storage (moto's S3 server; needs a Python with
  ``moto[server]``): windows sent before and after the restart, none lost.
* ``recovery``: restart after kill -9 -> first new record, dynamic membership against static
  (``SEQ2GMM_KAFKA__GROUP_INSTANCE_ID=auto``), and the old session timeout (10 s).

Prints one JSON line per scenario. Uses the seq2gmm fixture model of tests/fixtures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from worker.dev.faults import (
    FaultServices,
    Feeder,
    Lane,
    S3Server,
    moto_python,
    tally,
    window_ids,
    window_messages,
)
from worker.dev.redis_faults import side_by_side

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / "fixtures" / "legacy_checkpoints" / "seq2gmm"
LENGTH, SERIES, RATE = 48, 4, 20.0


def kills(rig: FaultServices, n: int, seed: int, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    lane = Lane(rig, f"kills{seed}", MODEL, rig.valkey(), env)
    rng = random.Random(seed)
    feeder = Feeder(rig.bootstrap, [lane.raw], SERIES, LENGTH, RATE).start()
    recovery: list[float] = []
    try:
        for _ in range(n + 1):
            run = lane.start_worker()
            first = lane.first_output_after(run.started, timeout_s=90)
            if first is None:
                raise RuntimeError(run.err.read_text()[-2000:])
            recovery.append(round(first, 2))
            time.sleep(rng.uniform(0.0, 2.0))
            lane.kill(run)
        expected = feeder.stop()
        lane.finish(lane.start_worker("--stop-at-end"))
        result = tally(expected, (m.value for m in lane.read(lane.out, len(expected))))
    finally:
        feeder.stop()
        lane.close()
    return {
        "kills": n,
        **result.as_dict(),
        "first_start_s": recovery[0],
        "restart_to_first_record_s": {
            "median": statistics.median(recovery[1:]),
            "max": max(recovery[1:]),
            "all": recovery[1:],
        },
    }


def redis(rig: FaultServices, fault_s: float) -> dict:  # type: ignore[type-arg]
    run = side_by_side(rig, ("redis-a", "redis-b"), MODEL, (SERIES, LENGTH, RATE), fault_s, 90.0)
    hung, down = run.hung, run.down
    return {
        "fault_s": fault_s,
        "published_while_hung": hung,
        "published_while_down": down,
        "ratio_hung": round(hung["B"] / max(1, hung["A"]), 3),
        "ratio_down": round(down["B"] / max(1, down["A"]), 3),
        "lost": {k: tally(run.expected, (m.value for m in v)).lost for k, v in run.outputs.items()},
    }


def broker(rig: FaultServices, down_s: float) -> dict:  # type: ignore[type-arg]
    lane = Lane(rig, "broker", MODEL, rig.valkey())
    try:
        lane.produce(window_messages(SERIES, 0, 10, LENGTH))
        run = lane.start_worker()
        lane.first_output_after(run.started, timeout_s=90)
        lane.reset_producer()
        rig.restart_broker(down_s)
        alive = run.proc.poll() is None
        lane.ensure_topics()
        sent = time.time()
        lane.produce(window_messages(SERIES, 10, 10, LENGTH))
        after = lane.first_output_after(sent, timeout_s=90)
        summary = lane.stop(run)
        result = tally(window_ids(SERIES, 10, 10, LENGTH), (m.value for m in lane.read(lane.out)))
        seen = [e["event"] for e in run.events()]
    finally:
        lane.close()
    return {
        "broker_down_s": down_s,
        "worker_alive_after_restart": alive,
        "first_record_after_restart_s": None if after is None else round(after, 2),
        "exit_code": run.proc.returncode,
        "after_restart": result.as_dict(),
        "reported": sorted({e for e in seen if e.startswith(("broker_", "producer_"))}),
        "scored": summary["scored"],
    }


def durable(root: Path, down_s: float) -> dict:  # type: ignore[type-arg]
    python = moto_python()
    if python is None:
        return {"skipped": "no Python with moto[server] and boto3 (pip install 'moto[server]')"}
    rig = FaultServices(root / "durable", S3Server(python)).start()
    lane = Lane(rig, "durable", MODEL, rig.valkey())
    try:
        lane.produce(window_messages(SERIES, 0, 10, LENGTH))
        run = lane.start_worker()
        before = len(lane.read(lane.out, at_least=10 * SERIES, timeout_s=90))
        lane.reset_producer()
        rig.restart_broker(down_s)
        alive = run.proc.poll() is None
        sent = time.time()
        lane.produce(window_messages(SERIES, 10, 10, LENGTH))
        after = lane.first_output_after(sent, timeout_s=90)
        lane.read(lane.out, at_least=20 * SERIES, timeout_s=90)
        summary = lane.stop(run)
        result = tally(window_ids(SERIES, 0, 20, LENGTH), (m.value for m in lane.read(lane.out)))
        seen = [e["event"] for e in run.events()]
    finally:
        lane.close()
        rig.close()
    return {
        "storage": "s3 (moto)",
        "broker_down_s": down_s,
        "published_before_restart": before,
        "worker_alive_after_restart": alive,
        "first_record_after_restart_s": None if after is None else round(after, 2),
        "exit_code": run.proc.returncode,
        "windows_before_and_after": result.as_dict(),
        "reported": sorted({e for e in seen if e.startswith(("broker_", "producer_"))}),
        "consumed": summary["consumed"],
    }


def recovery(rig: FaultServices, n: int) -> list[dict]:  # type: ignore[type-arg]
    variants: list[tuple[str, dict[str, str]]] = [
        ("dynamic, session 6 s (default)", {}),
        ("static auto, session 6 s", {"SEQ2GMM_KAFKA__GROUP_INSTANCE_ID": "auto"}),
        (
            "dynamic, session 10 s (before)",
            {
                "SEQ2GMM_KAFKA__SESSION_TIMEOUT_MS": "10000",
                "SEQ2GMM_KAFKA__HEARTBEAT_INTERVAL_MS": "3000",
            },
        ),
    ]
    out = []
    for i, (name, env) in enumerate(variants):
        res = kills(rig, n, seed=100 + i, env=env)
        out.append({"variant": name, **res})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--only", choices=["kills", "redis", "broker", "durable", "recovery"], action="append"
    )
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--fault-s", type=float, default=60.0)
    p.add_argument("--broker-down-s", type=float, default=40.0)
    p.add_argument("--recovery-kills", type=int, default=5)
    args = p.parse_args()
    todo = args.only or ["kills", "redis", "broker", "durable", "recovery"]
    with tempfile.TemporaryDirectory(prefix="faults-soak-") as tmp:
        rig = FaultServices(Path(tmp)).start()
        try:
            results: dict[str, Any] = {}
            if "kills" in todo:
                results["kills"] = kills(rig, args.kills, seed=19)
            if "redis" in todo:
                results["redis"] = redis(rig, args.fault_s)
            if "broker" in todo:
                results["broker"] = broker(rig, args.broker_down_s)
            if "durable" in todo:
                results["durable"] = durable(Path(tmp), args.broker_down_s)
            if "recovery" in todo:
                results["recovery"] = recovery(rig, args.recovery_kills)
            for name, res in results.items():
                print(json.dumps({"scenario": name, "result": res}), flush=True)
        finally:
            rig.close()


if __name__ == "__main__":
    main()
