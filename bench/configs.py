"""``--config KIND=JSON|PATH`` options of the benchmark scripts."""

from __future__ import annotations

import json
from typing import Any

from model.kinds import KINDS


def parse_configs(items: list[str]) -> dict[str, Any]:
    """{kind: dict or JSON path} from ``KIND=JSON`` / ``KIND=PATH`` strings."""
    out: dict[str, Any] = {}
    for item in items:
        kind, sep, text = item.partition("=")
        if not sep or kind not in KINDS:
            raise SystemExit(f"--config needs KIND=JSON or KIND=PATH with KIND in {KINDS}")
        out[kind] = json.loads(text) if text.lstrip().startswith("{") else text
    return out
