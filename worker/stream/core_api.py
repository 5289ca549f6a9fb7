"""What the Kafka loop drives: the interface of a streaming core.

:class:`~worker.stream.core.StreamCore` serves one model; :class:`~worker.stream.routed
.RoutedCore` a lane of its own for each model of the routing table. The loop
(:mod:`worker.stream.kafka_loop`) and the metrics (:mod:`worker.ops.telemetry`) only use this.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from worker.stream.core import Batch, InRecord, OutRecord
from worker.stream.served import ServedModel


class WindowerView(Protocol):
    """What the loop and the metrics read of a core's windowing."""

    @property
    def dropped(self) -> Counter[str]: ...

    def __len__(self) -> int: ...

    def evict_idle(self) -> int: ...


class Core(Protocol):
    """What the Kafka loop drives: :class:`StreamCore` (one model) or
    :class:`~worker.stream.routed.RoutedCore` (a lane per routed model)."""

    @property
    def counters(self) -> Counter[str]: ...

    @property
    def dead_letters(self) -> Counter[str]: ...

    @property
    def windower(self) -> WindowerView: ...

    def ingest(self, records: Iterable[InRecord]) -> list[OutRecord]: ...

    def ready(self) -> bool: ...

    def backlog(self) -> int: ...

    def take_batch(self) -> Batch | None: ...

    def score(self, batch: Batch) -> None: ...

    def complete(self, batch: Batch) -> list[OutRecord]: ...

    def score_batch(self) -> list[OutRecord]: ...

    def committable(self) -> dict[int, int]: ...

    def mark_committed(self, offsets: dict[int, int]) -> None: ...

    def forget_partitions(self, partitions: Iterable[int]) -> None: ...

    def served(self) -> list[tuple[ServedModel, Counter[str]]]: ...

    def serves(self, model: ServedModel) -> bool: ...

    def swap_model(self, model: ServedModel) -> dict[int, int]: ...

    def stats(self) -> dict[str, object]: ...
