"""Evaluation on cycles: a continuous series + labels + a cutter -> labelled cycle windows.

- :class:`AnnotatedCutter` (``oracle``): one cycle per annotated event (an ECG beat's R peak),
  from ``fraction`` of the interval before each event to the same fraction before the next;
  the reference cut of an annotated record, evaluation only (it needs the annotations).
- :func:`cycle_labels`: a cycle is anomalous when a labelled point or an abnormal annotated
  event falls inside it; :func:`event_coverage`: the fraction of events that fall in exactly
  one cycle.
- :func:`cycle_split`: the protocol of a continuous record (MIT-BIH): the whole series is cut
  once (as a stream would), the normal cycles ending in the first ``train_fraction`` train,
  the cycles starting after it are the test set; cycles straddling the split are dropped.
  Scores are compared per cycle and per event (each test event takes the score of the
  cycle(s) holding it, the highest if several): :func:`evaluate_cycles`.
- :func:`resample`: a cycle linearly interpolated to a fixed length, for the detectors that
  need equal lengths (``iforest``, ``ocsvm``): :func:`resampled` (``length=N``, default the
  median training cycle) gives every detector the same cycles. ``knn`` takes cycles of any
  length and resamples them itself (to the median training length, at most its
  ``max_points``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.cycles import Cutter, Cycle, cut, make_cutter
from model.cycles.base import check_config
from model.errors import DataError
from model.evaluation.metrics import pr_auc, roc_auc

#: detectors that compare windows position by position: cycles are resampled for them
EQUAL_LENGTH_KINDS = frozenset({"iforest", "ocsvm"})


@dataclass(frozen=True)
class AnnotatedCutter:
    """Cycles from annotated event samples (e.g. R peaks): cycle i spans from
    ``events[i] - fraction * (events[i] - events[i-1])`` to the same point before event i+1
    (the first event uses the following interval, the last one ends ``1 - fraction`` of its
    interval after it). Cycles starting before sample 0 are skipped."""

    events: tuple[int, ...]
    fraction: float = 0.3
    kind = "oracle"

    def __post_init__(self) -> None:
        ev = np.asarray(self.events, dtype=np.int64)
        if ev.size < 2 or np.any(np.diff(ev) <= 0):
            raise DataError("an oracle cutter needs at least 2 strictly increasing event samples")
        if not 0.0 <= self.fraction < 1.0:
            raise DataError(f"the oracle fraction must be in [0, 1), got {self.fraction}")

    def boundaries(self) -> np.ndarray:
        """(n_events + 1,) cycle boundaries: cycle i is ``[b[i], b[i+1])``."""
        ev = np.asarray(self.events, dtype=np.int64)
        rr = np.diff(ev)
        before = np.concatenate([rr[:1], rr])  # the interval before each event
        starts = ev - np.round(self.fraction * before).astype(np.int64)
        last_end = ev[-1] + np.round((1.0 - self.fraction) * rr[-1]).astype(np.int64)
        return np.append(starts, last_end)

    @property
    def max_length(self) -> int:
        return int(np.diff(self.boundaries()).max())

    def stream(self) -> _AnnotatedStream:
        return _AnnotatedStream(self.boundaries())

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "events": list(self.events), "fraction": self.fraction}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AnnotatedCutter:
        data = check_config(config, cls.kind, {"events", "fraction"})
        return cls(tuple(int(e) for e in data["events"]), float(data["fraction"]))


class _AnnotatedStream:
    def __init__(self, bounds: np.ndarray) -> None:
        self.bounds = bounds
        self.seen = 0
        self.next = int(np.searchsorted(bounds, 0))  # first cycle starting at or after 0

    @property
    def keep_from(self) -> int:
        return int(self.bounds[self.next]) if self.next < len(self.bounds) else self.seen

    def push(self, timestamps: np.ndarray, values: np.ndarray) -> list[Cycle]:
        self.seen += len(timestamps)
        out = []
        while self.next + 1 < len(self.bounds) and self.bounds[self.next + 1] <= self.seen:
            out.append(Cycle(int(self.bounds[self.next]), int(self.bounds[self.next + 1])))
            self.next += 1
        return out


# ------------------------------------------------------------------ labels and coverage


def _starts_ends(cycles: Sequence[Cycle]) -> tuple[np.ndarray, np.ndarray]:
    starts = np.array([c.start for c in cycles], dtype=np.int64)
    ends = np.array([c.end for c in cycles], dtype=np.int64)
    return starts, ends


def events_per_cycle(cycles: Sequence[Cycle], events: np.ndarray) -> np.ndarray:
    """(C, E) bool: event j (a sample index) falls inside cycle i."""
    starts, ends = _starts_ends(cycles)
    ev = np.asarray(events, dtype=np.int64)[None, :]
    return (starts[:, None] <= ev) & (ev < ends[:, None])


def cycle_labels(
    cycles: Sequence[Cycle],
    *,
    point_labels: np.ndarray | None = None,
    events: np.ndarray | None = None,
    abnormal: np.ndarray | None = None,
) -> np.ndarray:
    """(C,) int64: 1 when a labelled point (``point_labels``, (T,) 0/1) or an abnormal event
    (``events`` sample indices with the (E,) bool ``abnormal``) falls inside the cycle."""
    labels = np.zeros(len(cycles), dtype=np.int64)
    if point_labels is not None:
        marked = np.concatenate([[0], np.cumsum(np.asarray(point_labels) > 0)])
        starts, ends = _starts_ends(cycles)
        if len(cycles) and ends.max() > len(point_labels):
            raise DataError(f"a cycle ends at {ends.max()}, past the {len(point_labels)} labels")
        labels |= (marked[ends] - marked[starts] > 0).astype(np.int64)
    if events is not None:
        if abnormal is None:
            raise DataError("events need their abnormal flags (a bool per event)")
        bad = np.asarray(events)[np.asarray(abnormal, dtype=bool)]
        labels |= events_per_cycle(cycles, bad).any(axis=1).astype(np.int64)
    return labels


def event_coverage(cycles: Sequence[Cycle], events: np.ndarray) -> float:
    """The fraction of ``events`` that fall inside exactly one cycle."""
    if len(events) == 0:
        raise DataError("no events to cover")
    if not cycles:
        return 0.0
    return float(np.mean(events_per_cycle(cycles, events).sum(axis=0) == 1))


def resample(window: np.ndarray, length: int) -> np.ndarray:
    """``window`` ((L,) or (L, F)) linearly interpolated to ``length`` samples (same ends)."""
    w = np.asarray(window, dtype=np.float64)
    flat = w.ndim == 1
    w2 = w[:, None] if flat else w
    if length < 2 or len(w2) < 2:
        raise DataError(f"resampling needs >= 2 samples in and out, got {len(w2)} -> {length}")
    src = np.linspace(0.0, 1.0, len(w2))
    dst = np.linspace(0.0, 1.0, length)
    out = np.stack([np.interp(dst, src, w2[:, j]) for j in range(w2.shape[1])], axis=1)
    return out[:, 0] if flat else out


# ------------------------------------------------------------------ the protocol


@dataclass(frozen=True)
class CycleSplit:
    """Train/test cycles of one continuous series (see :func:`cycle_split`)."""

    name: str
    cutter: dict[str, Any]  # the cutter's config
    train: list[np.ndarray]  # normal cycles before the split
    test: list[np.ndarray]
    test_cycles: list[Cycle]
    test_labels: np.ndarray  # (N_test,) 0/1 per cycle
    test_events: np.ndarray  # (E,) event samples after the split (empty without events)
    test_event_labels: np.ndarray  # (E,) 0/1
    info: dict[str, Any] = field(default_factory=dict)


def cycle_split(
    values: np.ndarray,
    cutter: Cutter,
    *,
    name: str = "series",
    timestamps: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    events: np.ndarray | None = None,
    abnormal: np.ndarray | None = None,
    train_fraction: float = 0.35,
) -> CycleSplit:
    """Cut ``values`` with ``cutter`` and split in time at ``train_fraction`` of the samples:
    training = the normal cycles ending before the split, test = every cycle starting at or
    after it (labelled by :func:`cycle_labels`). Windows keep their cycle's length
    (:func:`resampled` for one length)."""
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train_fraction must be in (0, 1), got {train_fraction}")
    x = np.asarray(values, dtype=np.float64)
    started = time.perf_counter()
    cycles = cut(cutter, x, timestamps)
    cut_seconds = time.perf_counter() - started
    if not cycles:
        raise DataError(f"the {cutter.kind} cutter found no cycle in {name}; check its settings")
    labels = cycle_labels(cycles, point_labels=point_labels, events=events, abnormal=abnormal)
    split_at = int(train_fraction * len(x))
    starts, ends = _starts_ends(cycles)
    train_idx = np.flatnonzero((ends <= split_at) & (labels == 0))
    test_idx = np.flatnonzero(starts >= split_at)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(f"{name}: no normal training cycle or no test cycle at {train_fraction}")

    ev = np.zeros(0, dtype=np.int64) if events is None else np.asarray(events, dtype=np.int64)
    bad = np.zeros(len(ev), dtype=bool) if abnormal is None else np.asarray(abnormal, dtype=bool)
    after = ev >= split_at
    info = {
        "n_samples": len(x),
        "split_sample": split_at,
        "n_cycles": len(cycles),
        "flagged_cycles": sum(1 for c in cycles if c.quality),
        "dropped_labelled_train_cycles": int(((ends <= split_at) & (labels == 1)).sum()),
        "cut_seconds": cut_seconds,
        "cycle_length": {"min": int((ends - starts).min()), "max": int((ends - starts).max())},
    }
    if len(ev):
        info["event_coverage"] = event_coverage(cycles, ev)
    test_cycles = [cycles[i] for i in test_idx]
    return CycleSplit(
        name=name,
        cutter=cutter.to_config(),
        train=[x[cycles[i].start : cycles[i].end] for i in train_idx],
        test=[x[c.start : c.end] for c in test_cycles],
        test_cycles=test_cycles,
        test_labels=labels[test_idx],
        test_events=ev[after],
        test_event_labels=bad[after].astype(np.int64),
        info=info,
    )


def resampled(split: CycleSplit, length: int | None = None) -> CycleSplit:
    """``split`` with every window resampled to ``length`` samples (default: the median
    training cycle length), for the detectors that need one length (:data:`EQUAL_LENGTH_KINDS`);
    labels, cycles and events unchanged."""
    n = int(length or np.median([len(w) for w in split.train]))
    return dataclasses.replace(
        split,
        train=[resample(w, n) for w in split.train],
        test=[resample(w, n) for w in split.test],
        info={**split.info, "resample_to": n},
    )


def event_scores(cycles: Sequence[Cycle], scores: np.ndarray, events: np.ndarray) -> np.ndarray:
    """(E,) each event's score: the highest score of the cycles holding it (NaN if none)."""
    inside = events_per_cycle(cycles, events)
    s = np.where(inside, np.asarray(scores, dtype=np.float64)[:, None], -np.inf).max(axis=0)
    return np.where(inside.any(axis=0), s, np.nan)


def evaluate_cycles(detector: Any, split: CycleSplit, *, seed: int = 0) -> dict[str, Any]:
    """Fit ``detector`` on the training cycles and score the test cycles: ROC/PR AUC per cycle,
    and per event (the events outside every test cycle are counted and left out)."""
    started = time.perf_counter()
    detector.fit(split.train, seed=seed)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scores = np.asarray(detector.score(split.test), dtype=np.float64)
    score_seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "n_train": len(split.train),
        "n_test": len(split.test),
        "n_anomalous": int(split.test_labels.sum()),
        "roc_auc": roc_auc(split.test_labels, scores),
        "pr_auc": pr_auc(split.test_labels, scores),
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
    }
    if len(split.test_events):
        ev_scores = event_scores(split.test_cycles, scores, split.test_events)
        ok = ~np.isnan(ev_scores)
        labels = split.test_event_labels[ok]
        result.update(
            n_events=int(ok.sum()),
            n_anomalous_events=int(labels.sum()),
            events_outside=int((~ok).sum()),
            event_roc_auc=roc_auc(labels, ev_scores[ok]),
            event_pr_auc=pr_auc(labels, ev_scores[ok]),
        )
    return result


# ------------------------------------------------------------------ cutters by name


def cutter_from_spec(
    spec: str,
    *,
    events: np.ndarray | None = None,
    training: Sequence[tuple[np.ndarray | None, np.ndarray]] = (),
) -> Cutter:
    """A cutter from its command-line spec: ``oracle[:FRACTION]`` (needs the annotated
    ``events``), or any spec of :func:`model.cycles.make_cutter` (``fixed:LEN[:HOP]``,
    ``period:...``, ``fiducial``), fitted on the ``(timestamps, values)`` ``training`` series."""
    kind, _, rest = spec.partition(":")
    if kind != "oracle":
        return make_cutter(spec, training=training)
    if events is None:
        raise DataError("the oracle cutter needs annotated events (an annotated record)")
    try:
        fraction = [float(rest)] if rest else []
    except ValueError:
        raise DataError(f"bad cycle spec {spec!r}: use oracle[:FRACTION]") from None
    return AnnotatedCutter(tuple(int(e) for e in events), *fraction)
