"""The worker's heap and Python's cyclic garbage collector.

Before it serves, a worker has imported torch, numpy, scipy, kafka-python and its model:
~250,000 long-lived objects. Every full (generation 2) collection walks all of them, which
took 120-130 ms a time in the worker on the 2-core box (a gc.callbacks trace), with the poll
loop (or the scoring process) stopped meanwhile; the windows in flight wait it out. They came
in the first second of a paced run, while the stream's own objects grew the heap
(docs/benchmarks.md, "Latency at half load: start-up off the path").

:func:`freeze_startup_heap` collects once, then moves every object still alive to the
permanent generation (:func:`gc.freeze`): later collections walk only what was allocated
after it. What it froze is never collected again, so call it once, when start-up is over.
"""

from __future__ import annotations

import gc
import time


def freeze_startup_heap() -> dict[str, float | int]:
    """Collect, then freeze the survivors; returns what was frozen and how long it took."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    return {
        "frozen_objects": gc.get_freeze_count(),
        "seconds": round(time.perf_counter() - started, 3),
    }
