"""A dependency-free progress bar on stderr (only when stderr is a terminal)."""

from __future__ import annotations

import sys
import time
from types import TracebackType


class Progress:
    def __init__(self, total: int | None, label: str, enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._start = time.monotonic()
        self._last_draw = 0.0

    def update(self, n: int = 1, info: dict[str, object] | None = None) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last_draw > 0.1 or self.done == self.total):
            self._last_draw = now
            self._draw(info or {})

    def _draw(self, info: dict[str, object]) -> None:
        rate = self.done / max(time.monotonic() - self._start, 1e-9)
        extra = "  ".join(f"{k}={v}" for k, v in info.items())
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            line = f"{self.label} [{bar}] {self.done}/{self.total} {rate:,.0f}/s {extra}"
        else:
            line = f"{self.label} {self.done} {rate:,.0f}/s {extra}"
        sys.stderr.write("\r" + line[:150].ljust(80))
        sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.enabled:
            sys.stderr.write("\n")
