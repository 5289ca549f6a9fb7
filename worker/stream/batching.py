"""Microbatching: gather ready windows across series and partitions, flush on size or linger."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from worker.stream.windowing import Window


class MicroBatcher:
    """FIFO of ready windows; a batch is ready at ``max_windows`` or after ``linger_s``."""

    def __init__(
        self, max_windows: int, linger_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_windows = max_windows
        self.linger_s = linger_s
        self._clock = clock
        self._queue: deque[tuple[float, Window]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, windows: Iterable[Window]) -> None:
        now = self._clock()
        self._queue.extend((now, w) for w in windows)

    def ready(self) -> bool:
        if not self._queue:
            return False
        if len(self._queue) >= self.max_windows:
            return True
        return self._clock() - self._queue[0][0] >= self.linger_s

    def take(self) -> list[tuple[float, Window]]:
        """Up to ``max_windows`` (time it became ready, window) pairs, oldest first."""
        n = min(self.max_windows, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]

    def pending_offsets(self) -> dict[int, int]:
        """Per partition, the earliest source offset of a window not yet published."""
        out: dict[int, int] = {}
        for _, w in self._queue:
            if w.first_offset < out.get(w.partition, w.first_offset + 1):
                out[w.partition] = w.first_offset
        return out

    def forget_partitions(self, partitions: Iterable[int]) -> int:
        gone = set(partitions)
        before = len(self._queue)
        self._queue = deque((t, w) for t, w in self._queue if w.partition not in gone)
        return before - len(self._queue)
