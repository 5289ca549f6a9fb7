"""At-least-once offset bookkeeping.

A partition's offset may be committed up to (not including) the earliest record that is not
fully handled yet: samples still buffered in an incomplete window, or in a window that is not
yet published. Everything before that has been published (and the producer flushed) or
dead-lettered, so a crash after the commit loses nothing; a crash before it replays at most the
records since the last commit (the duplicate bound).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class OffsetTracker:
    def __init__(self) -> None:
        self._next: dict[int, int] = {}  # partition -> next offset to consume
        self._committed: dict[int, int] = {}

    def consumed(self, partition: int, offset: int) -> None:
        if offset + 1 > self._next.get(partition, -1):
            self._next[partition] = offset + 1

    def positions(self, *pending: Mapping[int, int]) -> dict[int, int]:
        """Per partition, the earliest offset not fully handled: min(next, pending...)."""
        return {
            partition: min([nxt, *(p[partition] for p in pending if partition in p)])
            for partition, nxt in self._next.items()
        }

    def committable(self, *pending: Mapping[int, int]) -> dict[int, int]:
        """Offsets to commit now (only partitions that moved since the last commit)."""
        return {
            partition: position
            for partition, position in self.positions(*pending).items()
            if position > self._committed.get(partition, -1)
        }

    def rewind(self, positions: Mapping[int, int]) -> None:
        """The consumer was sought back to ``positions``: records from there come again."""
        for partition, offset in positions.items():
            self._next[partition] = offset

    def mark_committed(self, offsets: Mapping[int, int]) -> None:
        self._committed.update(offsets)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._next.pop(p, None)
            self._committed.pop(p, None)
