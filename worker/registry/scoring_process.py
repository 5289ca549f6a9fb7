"""Scoring in a child process, so the poll loop and the scoring use both CPU cores.

Segmentation is Python-heavy, so a scoring *thread* and the poll thread take turns on the GIL.
:class:`ProcessScorer` starts ONE child process (``spawn``: a fork of a process that holds
torch threads may deadlock) that loads each model version from its verified registry bytes
and scores the batches sent to it; :class:`RemoteModel` is the core's
:class:`~worker.stream.served.ServedModel` on top of it. With the threaded scoring stage the
scoring thread only waits on the pipe (the GIL released) while the child computes.

Everything crossing the pipe is a frame of :mod:`worker.registry.score_frames` (raw arrays,
never pickle). The child keeps the last ``CACHE_SIZE`` versions it was sent, so a hot swap
sends the new version once. It exits when the worker dies (end of pipe, or its parent pid
changed). A child that dies (killed, out of memory) is started again and the batch retried
once; if that fails too, :class:`ScoringProcessError` stops the worker without committing.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import structlog

from model.errors import Seq2GMMError
from worker.ops.heap import freeze_startup_heap
from worker.registry import score_frames as frames
from worker.registry.loader import DetectorModel, RegistryModels, load_detector, warm_up
from worker.registry.records import ModelVersion
from worker.stream.served import ScoredWindow, ScoringUnavailableError

log = structlog.get_logger()

CACHE_SIZE = 2  # model versions the child keeps loaded (the active one and the one before)
PARENT_CHECK_S = 1.0  # how often an idle child checks that its worker is still alive


class ScoringProcessError(ScoringUnavailableError):
    """The scoring process died, and died again after a restart, or answered nonsense; the
    worker stops without committing. Look for the cause (out of memory? the kernel log) and
    restart the worker, or set SEQ2GMM_BATCHING__SCORING=thread to score in the worker."""


class RemoteScoringError(Seq2GMMError):
    """Scoring the windows failed in the scoring process (the windows' fault, as in process:
    the core isolates the bad window and dead-letters it)."""


class _ChildGone(Exception):
    """The pipe to the child broke (it died)."""


class ProcessScorer:
    """One spawned scoring process and the pipe to it; thread-safe (one request at a time)."""

    def __init__(self, device: str = "cpu", torch_threads: int = 1) -> None:
        self.device = device
        self.torch_threads = torch_threads or 1
        self.restarts = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Connection | None = None
        self._loaded: OrderedDict[tuple[str, int], None] = OrderedDict()  # mirrors the child

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def holds(self, record: ModelVersion) -> bool:
        """Whether the child has ``record`` loaded (as far as this side knows)."""
        return (record.name, record.version) in self._loaded

    def start(self) -> ProcessScorer:
        with self._lock:
            if self._proc is None:
                self._start()
        return self

    def score(self, record: ModelVersion, windows: Sequence[np.ndarray]) -> list[ScoredWindow]:
        """Score ``windows`` with ``record`` in the child (sending the version first if it does
        not hold it); one restart and retry when the child died."""
        request = frames.score_frame(record.name, record.version, windows)
        with self._lock:
            try:
                return self._score(record, request, len(windows))
            except _ChildGone as first:
                log.warning("scoring_process_died", pid=self.pid, error=str(first))
                self._restart()
            try:
                return self._score(record, request, len(windows))
            except _ChildGone as second:
                raise ScoringProcessError(
                    f"the scoring process died twice while scoring {record.ref} ({second});"
                    " the worker stops without committing: check the kernel log for the OOM"
                    " killer, then restart it (or set SEQ2GMM_BATCHING__SCORING=thread)"
                ) from None

    def close(self) -> None:
        with self._lock:
            self._stop()

    # ----------------------------------------------------------------------- internals
    def _start(self) -> None:
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=child_main,
            args=(theirs, os.getpid(), self.device, self.torch_threads),
            name="seq2gmm-scoring",
            daemon=True,
        )
        proc.start()
        theirs.close()  # only the child holds its end: its death is an EOF here
        self._proc, self._conn = proc, ours
        self._loaded.clear()
        log.info("scoring_process_started", pid=proc.pid, device=self.device)

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the child sees EOF and exits
        if self._proc is not None:
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=10)
        self._proc = self._conn = None

    def _restart(self) -> None:
        self._stop()
        self.restarts += 1
        self._start()

    def _score(self, record: ModelVersion, request: bytes, n: int) -> list[ScoredWindow]:
        if self._proc is None:
            self._start()
        key = (record.name, record.version)
        if key not in self._loaded:
            load = frames.load_frame(record.name, record.version, record.metadata, record.weights)
            self._request(load, frames.LOADED, record.ref)
            self._loaded[key] = None
            while len(self._loaded) > CACHE_SIZE:
                self._loaded.popitem(last=False)
        parts = self._request(request, frames.SCORED, record.ref)
        return frames.read_scored(parts, n)

    def _request(self, frame: bytes, expected: bytes, ref: str) -> list[memoryview]:
        assert self._conn is not None
        try:
            self._conn.send_bytes(frame)
            reply = self._conn.recv_bytes()
        except (EOFError, OSError) as exc:
            code = self._proc.exitcode if self._proc is not None else None
            raise _ChildGone(f"{type(exc).__name__}, exit code {code}") from exc
        kind, parts = frames.unpack(reply, expected)
        if kind != frames.FAILED:
            return parts
        windows_at_fault, message = frames.read_failed(parts)
        if windows_at_fault:
            raise RemoteScoringError(message)
        raise ScoringProcessError(f"the scoring process cannot serve {ref}: {message}")


class RemoteModel:
    """A :class:`~worker.stream.served.ServedModel` whose batches are scored by a
    :class:`ProcessScorer`; cutter, width, threshold and expected anomaly rate come from the
    worker's own load."""

    def __init__(self, scorer: ProcessScorer, record: ModelVersion, local: DetectorModel) -> None:
        self.name = record.name
        self.version = record.version
        self.cutter = local.cutter
        self.n_features = local.n_features
        self.threshold = local.threshold
        self.expected_anomaly_rate = local.expected_anomaly_rate  # for the metrics
        self._scorer = scorer
        self._record = record

    def score(self, windows: Sequence[np.ndarray]) -> list[ScoredWindow]:
        return self._scorer.score(self._record, windows)


def remote_loader(scorer: ProcessScorer) -> Callable[[ModelVersion], RemoteModel]:
    """The watcher's loader for process scoring: the version is loaded here on the CPU (for its
    cutter and threshold, then dropped) and scored by ``scorer``'s child, which gets it now,
    with a warm-up (:func:`~worker.registry.loader.warm_up`), not at the first batch."""
    import torch

    local = RegistryModels.loader(torch.device("cpu"))

    def load(record: ModelVersion) -> RemoteModel:
        model = RemoteModel(scorer, record, local(record))
        warm_up(model)
        return model

    return load


# --------------------------------------------------------------------------- the child


def child_main(conn: Connection, parent_pid: int, device: str, torch_threads: int) -> None:
    """The scoring process: answer frames until the worker closes the pipe or dies."""
    import torch

    from worker.registry.loader import pick_device

    os.dup2(2, 1)  # never write to the worker's stdout (its summary line goes there)
    torch.set_num_threads(torch_threads)
    served = pick_device(device)
    freeze_startup_heap()  # as the worker does: no full collection walks torch's objects
    models: _Models = OrderedDict()
    while True:
        try:
            if not conn.poll(PARENT_CHECK_S):
                if os.getppid() != parent_pid:
                    return  # the worker died (re-parented): nobody to score for
                continue
            frame = conn.recv_bytes()
        except (EOFError, OSError):
            return
        reply = _answer(frame, models, served)
        try:
            conn.send_bytes(reply)
        except OSError:
            return


_Models = OrderedDict[tuple[str, int], DetectorModel]


def _answer(frame: bytes, models: _Models, device: Any) -> bytes:
    """The reply to one request frame (errors become FAILED frames)."""
    try:
        kind, parts = frames.unpack(frame)
        if kind == frames.LOAD:
            name, version, metadata, weights = frames.read_load(parts)
            record = ModelVersion(name, version, metadata, weights, "", 0.0)
            models[(name, version)] = DetectorModel(
                name, version, load_detector(record), metadata, device
            )
            while len(models) > CACHE_SIZE:
                models.popitem(last=False)
            return frames.pack(frames.LOADED, [])
        if kind != frames.SCORE:
            return frames.failed_frame(False, f"unexpected request kind {kind!r}")
        name, version, windows = frames.read_score(parts)
        model = models.get((name, version))
        if model is None:
            return frames.failed_frame(False, f"{name}:{version} was not loaded here")
    except Exception as exc:  # a bad load or frame is never the windows' fault
        return frames.failed_frame(False, f"{type(exc).__name__}: {exc}")
    try:
        return frames.scored_frame(model.score(windows))
    except Seq2GMMError as exc:
        return frames.failed_frame(True, str(exc))
    except Exception as exc:  # as in process: a bug, not a bad window; the worker stops
        return frames.failed_frame(False, f"{type(exc).__name__}: {exc}")
