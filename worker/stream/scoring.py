"""Where microbatches are scored: inline on the poll thread, or on a scoring thread.

The Kafka loop hands a batch taken from the core to :meth:`Scoring.submit` and later publishes
what :meth:`Scoring.done` returns, in submission order; only the core's :meth:`~worker.stream
.core.StreamCore.score` runs off the poll thread (it touches the batch and the model only), so
the checkpoint order (publish -> flush -> commit) and the offset bookkeeping stay on one thread.

* :class:`InlineScoring` scores at submission: the loop behaves exactly as a single-threaded
  one (the in-memory tests use it to assert the order of every call).
* :class:`ThreadedScoring` scores on one daemon thread, so polling, decoding and windowing
  overlap with segmentation and the networks (torch releases the GIL in its kernels). At most
  ``max_in_flight`` batches are out at once; windows arriving meanwhile wait in the core's
  microbatcher, so the next batch is as large as the backlog (up to ``max_windows``): batches
  grow with load, and the loop's flow control pauses fetching when the backlog gets long.

A scoring error other than a window's own (those the core dead-letters) is re-raised on the
poll thread by :meth:`done`, so the worker stops without committing past the batch.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from worker.stream.core import Batch


class Scoring(Protocol):
    def has_room(self) -> bool:
        """Whether another batch may be submitted now."""
        ...

    def submit(self, batch: Batch) -> None: ...

    def done(self) -> list[Batch]:
        """Batches scored since the last call, oldest first (raises a scoring error)."""
        ...

    def in_flight(self) -> int:
        """Batches submitted and not yet returned by :meth:`done`."""
        ...

    def wait(self, timeout_s: float) -> None:
        """Block until a batch is scored or ``timeout_s`` passed (returns at once if idle)."""
        ...

    def close(self) -> None: ...


class InlineScoring:
    """Scores each batch on the caller's thread as it is submitted."""

    def __init__(self, score: Callable[[Batch], None]) -> None:
        self._score = score
        self._done: list[Batch] = []

    def has_room(self) -> bool:
        return not self._done

    def submit(self, batch: Batch) -> None:
        self._score(batch)
        self._done.append(batch)

    def done(self) -> list[Batch]:
        out, self._done = self._done, []
        return out

    def in_flight(self) -> int:
        return len(self._done)

    def wait(self, timeout_s: float) -> None:
        return None

    def close(self) -> None:
        return None


class ThreadedScoring:
    """Scores batches on one daemon thread, at most ``max_in_flight`` at a time."""

    def __init__(self, score: Callable[[Batch], None], max_in_flight: int = 1) -> None:
        self._score = score
        self._max = max_in_flight
        self._cond = threading.Condition()
        self._todo: deque[Batch] = deque()
        self._done: list[Batch] = []
        self._submitted = 0  # not yet returned by done()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="seq2gmm-scoring", daemon=True)
        self._thread.start()

    def has_room(self) -> bool:
        with self._cond:
            return self._submitted < self._max

    def submit(self, batch: Batch) -> None:
        with self._cond:
            self._todo.append(batch)
            self._submitted += 1
            self._cond.notify_all()

    def done(self) -> list[Batch]:
        with self._cond:
            if self._error is not None:
                raise self._error
            out, self._done = self._done, []
            self._submitted -= len(out)
            return out

    def in_flight(self) -> int:
        with self._cond:
            return self._submitted

    def wait(self, timeout_s: float) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: bool(self._done) or self._error is not None or self._submitted == 0,
                timeout_s,
            )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._todo) or self._closed)
                if not self._todo:
                    return
                batch = self._todo[0]
            try:
                self._score(batch)
            except BaseException as exc:  # handed to the poll thread by done()
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._todo.popleft()
                self._done.append(batch)
                self._cond.notify_all()
