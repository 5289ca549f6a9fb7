"""The ``fixed`` cutter: windows of ``length`` samples every ``hop`` samples (no notion of a
cycle; right when the producer already sends one cycle per window, e.g. UCR rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.cycles.base import Cycle, check_config
from model.errors import DataError


@dataclass(frozen=True)
class FixedCutter:
    length: int
    hop: int
    kind = "fixed"

    def __post_init__(self) -> None:
        if self.length < 2 or self.hop < 1:
            raise DataError(f"fixed cycles need length >= 2 and hop >= 1, got {self}")

    @property
    def max_length(self) -> int:
        return self.length

    def stream(self) -> _FixedStream:
        return _FixedStream(self.length, self.hop)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "length": self.length, "hop": self.hop}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FixedCutter:
        data = check_config(config, cls.kind, {"length", "hop"})
        return cls(int(data["length"]), int(data["hop"]))


class _FixedStream:
    def __init__(self, length: int, hop: int) -> None:
        self.length, self.hop = length, hop
        self.seen = 0  # samples pushed so far
        self.next_start = 0

    @property
    def keep_from(self) -> int:
        return self.next_start

    def push(self, timestamps: np.ndarray, values: np.ndarray) -> list[Cycle]:
        self.seen += len(timestamps)
        out = []
        while self.next_start + self.length <= self.seen:
            out.append(Cycle(self.next_start, self.next_start + self.length))
            self.next_start += self.hop
        return out
