"""What decoding one ``ts.raw`` record costs: µs per message of the pydantic path
(``decode_raw(...).samples()``), of the fast one (``decode_samples``) and, for scale, of a bare
``json.loads`` (what a consumer doing nothing else pays) and ``orjson.loads`` (the fast path's
parser), for one-sample messages and for 82-sample chunks.

Each figure is the best of ``--repeat`` passes over ``--messages`` distinct seeded messages
(keyed by their series id, as the worker receives them). Prints one JSON object.
Run from the repository root: ``PYTHONPATH=$PWD .venv/bin/python bench/decode_cost.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.stream.messages import decode_raw, decode_samples

Record = tuple[bytes, bytes]


def messages(kind: str, n: int, seed: int) -> list[Record]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sid = f"host-{i % 500}/eth0"
        body: dict[str, Any]
        if kind == "one-sample":
            body = {"series_id": sid, "timestamp": 1.7e9 + i * 0.01, "value": float(rng.normal())}
        else:
            values = rng.normal(size=82).tolist()
            body = {"series_id": sid, "start": 1.7e9 + i, "interval": 0.004, "values": values}
        out.append((json.dumps(body).encode(), sid.encode()))
    return out


def per_message_us(
    decode: Callable[[bytes, bytes], object], records: list[Record], repeat: int
) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for value, key in records:
            decode(value, key)
        best = min(best, time.perf_counter() - started)
    return round(best / len(records) * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    decoders: dict[str, Callable[[bytes, bytes], object]] = {
        "json.loads": lambda value, key: json.loads(value),
        "orjson.loads": lambda value, key: orjson.loads(value),
        "decode_raw+samples": lambda value, key: decode_raw(value, key).samples(),
        "decode_samples": decode_samples,
    }
    result: dict[str, Any] = {"messages": args.messages, "repeat": args.repeat}
    for kind in ("one-sample", "chunk-82"):
        records = messages(kind, args.messages, args.seed)
        result[kind] = {
            name: per_message_us(f, records, args.repeat) for name, f in decoders.items()
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
