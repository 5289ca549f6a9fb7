"""Scoring in a child process: the framing, scores identical to in-process scoring, a child
that dies (restarted once, then the worker stops), a child whose worker dies, and the
streaming worker end to end with ``SEQ2GMM_BATCHING__SCORING=process``."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from model.checkpoint import checkpoint_to_bytes, load_checkpoint
from model.detectors.seq2gmm.config import default_config
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.errors import DataError, Seq2GMMError
from model.evaluation.data import OneClassSplit
from worker.ops.settings import Settings
from worker.registry import score_frames as frames
from worker.registry.loader import DetectorModel, load_detector, warm_up, warm_up_windows
from worker.registry.records import ModelVersion
from worker.registry.scoring_process import (
    ProcessScorer,
    RemoteModel,
    RemoteScoringError,
    ScoringProcessError,
    remote_loader,
)
from worker.stream import kafka_loop
from worker.stream.core import Batch, CoreOptions, InRecord, StreamCore
from worker.stream.core_settings import scoring_mode, usable_cpus
from worker.stream.scoring import ThreadedScoring
from worker.stream.served import ScoredWindow, ScoringUnavailableError, SegmentScore
from worker.stream.testing import FakeModel

CPU = torch.device("cpu")
LENGTH = 40


def _windows(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, LENGTH)
    return [
        np.sin(t + rng.normal(0, 0.1)) * rng.uniform(0.8, 1.2) + 0.05 * rng.normal(size=LENGTH)
        for _ in range(n)
    ]


def _record(seed: int, version: int) -> ModelVersion:
    cfg = default_config()
    cfg = cfg.replace(
        network=replace(cfg.network, hidden_size=5, estimator_hidden=[6], shape_points=8),
        train=replace(cfg.train, epochs=3),
        segmentation=replace(cfg.segmentation, method="dp"),
    )
    det = Seq2GMMDetector(cfg).fit(_windows(seed, 30), seed=seed)
    det.window_length = LENGTH
    metadata, weights = checkpoint_to_bytes(det)
    return ModelVersion("tiny", version, metadata, weights, metadata["weights_sha256"], 1.0)


@pytest.fixture(scope="module")
def records() -> tuple[ModelVersion, ModelVersion]:
    return _record(1, 1), _record(2, 2)


@pytest.fixture(scope="module")
def scorer() -> Iterator[ProcessScorer]:
    s = ProcessScorer("cpu", 1).start()
    yield s
    s.close()


# --------------------------------------------------------------------------- framing


def test_score_frames_round_trip_windows_of_any_length_and_width() -> None:
    rng = np.random.default_rng(0)
    windows = [rng.normal(size=(5, 2)), rng.normal(size=(3, 2)), rng.normal(size=7)]
    kind, parts = frames.unpack(frames.score_frame("ecg", 12, windows), frames.SCORE)
    assert kind == frames.SCORE
    name, version, back = frames.read_score(parts)
    assert (name, version) == ("ecg", 12)
    assert [w.shape for w in back] == [(5, 2), (3, 2), (7,)]
    for a, b in zip(windows, back, strict=True):
        np.testing.assert_array_equal(a, b)


def test_scored_frames_round_trip_exactly() -> None:
    scored = [
        ScoredWindow(
            0.1 + 1e-17, float("nan"), (SegmentScore(0, 3, -2.5), SegmentScore(4, 9, 1e300))
        ),
        ScoredWindow(-3.0, 99.5, ()),
    ]
    _, parts = frames.unpack(frames.scored_frame(scored), frames.SCORED)
    back = frames.read_scored(parts, 2)
    assert back[0].segments == scored[0].segments and back[1] == scored[1]
    assert back[0].energy == scored[0].energy and np.isnan(back[0].percentile)


def test_load_and_failed_frames_round_trip() -> None:
    meta = {"weights_sha256": "ab", "cycles": None, "threshold": {"value": 1.5}}
    _, parts = frames.unpack(frames.load_frame("m", 3, meta, b"\x00\x01"), frames.LOAD)
    assert frames.read_load(parts) == ("m", 3, meta, b"\x00\x01")
    kind, parts = frames.unpack(frames.failed_frame(True, "window 0 is invalid"), frames.SCORED)
    assert kind == frames.FAILED and frames.read_failed(parts) == (True, "window 0 is invalid")


def _bad_frames() -> list[tuple[bytes, bytes | None, str]]:
    good = frames.score_frame("m", 1, [np.zeros((4, 1))])
    shapes = np.array([[4, 1]], dtype="<i8").tobytes()
    negative = np.array([[4, -2]], dtype="<i8").tobytes()
    s, ld = frames.SCORE, frames.LOAD
    return [
        (b"", s, "shorter than its header"),
        (b"XXXX" + good[4:], s, "starts with"),
        (good[:-1], s, "add up to"),
        (good + b"\x00", s, "add up to"),
        (frames.MAGIC + b"Z" + good[5:], None, "unexpected frame kind"),
        (frames.pack(frames.SCORED, [b"", b""]), s, "unexpected frame kind"),
        (good[:5] + struct.pack("<I", 1000) + good[9:], s, "claims 1000 parts"),
        (good[:5] + struct.pack("<I", 15) + good[9:], s, "truncated"),
        (frames.pack(s, [b"m", b"1", shapes]), s, "has 4 parts"),
        (frames.pack(s, [b"m", b"one", shapes, bytes(32)]), s, "not a number"),
        (frames.pack(s, [b"m", b"1", shapes, bytes(31)]), s, "whole number"),
        (frames.pack(s, [b"m", b"1", shapes, bytes(24)]), s, "expected 4"),
        (frames.pack(s, [b"m", b"1", shapes[:8], bytes(32)]), s, "pairs"),
        (frames.pack(s, [b"m", b"1", negative, b""]), s, "negative"),
        (frames.pack(s, [b"\xff", b"1", shapes, bytes(32)]), s, "UTF-8"),
        (frames.pack(ld, [b"m", b"1", b"[1]", b""]), ld, "JSON object"),
        (frames.pack(ld, [b"m", b"1", b"{", b""]), ld, "not JSON"),
    ]


@pytest.mark.parametrize(("frame", "expected", "message"), _bad_frames(), ids=lambda x: None)
def test_bad_frames_are_refused_with_a_reason(
    frame: bytes, expected: bytes | None, message: str
) -> None:
    with pytest.raises(frames.FrameError, match=message):
        kind, parts = frames.unpack(frame, expected)
        (frames.read_score if kind == frames.SCORE else frames.read_load)(parts)


def test_scored_frames_must_match_the_batch() -> None:
    one = [ScoredWindow(1.0, 50.0, (SegmentScore(0, 1, 1.0),))]
    _, parts = frames.unpack(frames.scored_frame(one), frames.SCORED)
    with pytest.raises(frames.FrameError, match="expected 2"):
        frames.read_scored(parts, 2)


# --------------------------------------------------------------------------- the child process


def test_remote_scores_are_identical_to_in_process_scores(
    scorer: ProcessScorer, records: tuple[ModelVersion, ModelVersion]
) -> None:
    windows = [*_windows(7, 12), np.linspace(-1, 1, 50)]  # one longer window
    for record in records:  # a second version: a hot swap sends it once, both stay cached
        local = DetectorModel(
            record.name, record.version, load_detector(record), dict(record.metadata), CPU
        )
        remote = remote_loader(scorer)(record)
        assert isinstance(remote, RemoteModel)
        assert (remote.name, remote.version, remote.n_features) == (record.name, record.version, 1)
        assert remote.threshold == local.threshold and remote.cutter == local.cutter
        # what the metrics read (seq2gmm_model_expected_anomaly_rate; the monitoring rules)
        assert remote.expected_anomaly_rate == local.expected_anomaly_rate is not None
        assert remote.score(windows) == local.score(windows)
    again = RemoteModel(scorer, records[0], local)
    assert again.score(windows[:2]) == DetectorModel(
        "tiny", 1, load_detector(records[0]), dict(records[0].metadata), CPU
    ).score(windows[:2])


def test_the_child_gets_a_version_when_it_is_loaded_not_at_the_first_batch(
    scorer: ProcessScorer,
) -> None:
    """remote_loader sends the version to the child and warms it up as the watcher loads it
    (off the poll loop), so the stream's first batch pays neither."""
    fresh = _record(3, 3)
    assert not scorer.holds(fresh)
    remote = remote_loader(scorer)(fresh)
    assert scorer.holds(fresh)
    assert len(remote.score(_windows(3, 2))) == 2


def test_warm_up_scores_synthetic_cycles_and_survives_a_model_that_refuses_them() -> None:
    model = FakeModel(length=12, hop=12, n_features=2)
    assert warm_up(model, n=3) is not None
    assert model.calls == [3] and all(w.shape == (12, 2) for w in model.scored)
    assert [w.shape for w in warm_up_windows(40, 1, 2)] == [(40,), (40,)]
    refusing = FakeModel(length=12, hop=12, fail_with=DataError("refused"))
    with capture_logs() as logs:
        assert warm_up(refusing, n=2) is None
    assert [e["event"] for e in logs] == ["model_warm_up_failed"]


def test_a_bad_window_is_the_windows_fault_as_in_process(
    scorer: ProcessScorer, records: tuple[ModelVersion, ModelVersion]
) -> None:
    with pytest.raises(RemoteScoringError, match="NaN") as err:
        scorer.score(records[0], [np.full(LENGTH, np.nan)])
    assert isinstance(err.value, Seq2GMMError)
    assert not isinstance(err.value, ScoringUnavailableError)  # the core dead-letters it
    assert len(scorer.score(records[0], _windows(3, 2))) == 2  # and the child scores on


def test_a_killed_child_is_restarted_and_the_batch_retried(
    records: tuple[ModelVersion, ModelVersion],
) -> None:
    scorer = ProcessScorer("cpu", 1).start()
    try:
        expected = scorer.score(records[0], _windows(5, 3))
        first = scorer.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert scorer.score(records[0], _windows(5, 3)) == expected  # version sent again
        assert scorer.restarts == 1 and scorer.pid not in (None, first)
    finally:
        scorer.close()


class _DoomedScorer(ProcessScorer):
    """Every child it starts is killed at once (a child that dies on every batch)."""

    def _start(self) -> None:
        super()._start()
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        self._proc.join(timeout=30)


def test_a_child_that_dies_again_stops_the_worker_and_no_window_is_dead_lettered(
    records: tuple[ModelVersion, ModelVersion],
) -> None:
    scorer = _DoomedScorer("cpu", 1)
    try:
        with pytest.raises(ScoringProcessError, match="died twice"):
            scorer.score(records[0], _windows(5, 2))
        assert scorer.restarts == 1
    finally:
        scorer.close()
    # the core re-raises it (the worker stops without committing) instead of dead-lettering
    core = StreamCore(
        FakeModel(fail_with=ScoringProcessError("gone")), CoreOptions(max_windows=4, linger_s=0)
    )
    body = b'{"series_id": "a", "start": 0, "interval": 1, "values": [1, 2, 3, 4]}'
    assert core.ingest([InRecord("ts.raw", 0, 0, b"a", body)]) == []
    with pytest.raises(ScoringProcessError):
        core.score_batch()
    assert sum(core.dead_letters.values()) == 0


PARENT = """
import sys
from worker.registry.scoring_process import ProcessScorer
s = ProcessScorer("cpu", 1).start()
print("child", s.pid, flush=True)
sys.stdin.read()
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_the_child_exits_when_its_worker_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = ""
        while not line.startswith("child "):  # structlog's default output goes there too
            line = parent.stdout.readline()
            assert line, "the parent exited before starting its child"
        child = int(line.split()[1])
        assert not _gone(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child)


# --------------------------------------------------------------------------- settings


def test_the_scoring_setting_and_its_deprecated_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEQ2GMM_BATCHING__SCORING", raising=False)
    monkeypatch.delenv("SEQ2GMM_BATCHING__SCORING_THREAD", raising=False)
    assert Settings().batching.scoring == "auto"
    assert Settings(batching={"scoring_thread": False}).batching.scoring == "inline"
    assert Settings(batching={"scoring_thread": True}).batching.scoring == "thread"
    both = {"scoring_thread": False, "scoring": "process"}
    assert Settings(batching=both).batching.scoring == "process"
    monkeypatch.setenv("SEQ2GMM_BATCHING__SCORING", "process")
    assert Settings().batching.scoring == "process"


@pytest.mark.parametrize(
    ("routed", "device", "cpus", "mode"),
    [
        (False, "cpu", 2, "process"),
        (False, "cpu", 1, "thread"),  # a second process gains nothing on one core
        (True, "cpu", 16, "thread"),  # a routed worker scores in-process
        (False, "cuda", 16, "thread"),  # not measured on CUDA
    ],
)
def test_auto_scores_in_a_process_only_where_measured_faster(
    routed: bool, device: str, cpus: int, mode: str
) -> None:
    assert scoring_mode("auto", routed=routed, device=device, cpus=cpus) == mode
    for explicit in ("inline", "thread", "process"):  # an explicit value is kept
        assert scoring_mode(explicit, routed=routed, device=device, cpus=cpus) == explicit  # type: ignore[arg-type]


def test_usable_cpus_is_capped_by_the_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    uncapped = usable_cpus(cpu_max)
    assert uncapped == len(os.sched_getaffinity(0))
    cpu_max.write_text("150000 100000\n")  # a limit of 1.5 cores: 2 usable at most
    assert usable_cpus(cpu_max) == min(2, uncapped)
    cpu_max.write_text("50000 100000\n")
    assert usable_cpus(cpu_max) == 1
    assert usable_cpus(tmp_path / "absent") == uncapped


# --------------------------------------------------------------------------- the loop


class _Overlapping(FakeModel):
    """Its first batch finishes only once a second batch was submitted (both in flight)."""

    def __init__(self, second: threading.Event) -> None:
        super().__init__()
        self.second = second
        self.overlapped = False

    def score(self, windows: Sequence[np.ndarray]) -> list[ScoredWindow]:
        if not self.calls:
            self.overlapped = self.second.wait(timeout=30)
        return super().score(windows)


def test_process_scoring_keeps_two_batches_in_flight_and_the_commit_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from test_stream_worker import Rig, assert_commits_follow_flushed_publishes

    second = threading.Event()

    class Spy(ThreadedScoring):
        def submit(self, batch: Batch) -> None:
            super().submit(batch)
            if self.in_flight() >= 2:
                second.set()

    monkeypatch.setattr(kafka_loop, "ThreadedScoring", Spy)
    model = _Overlapping(second)
    rig = Rig(partitions=2, model=model, max_windows=2)
    rig.worker.settings.batching.scoring = "process"  # the model is a fake: no child here
    for k in range(6):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])  # one window per record
        rig.chunk(1, "b", 4 * k, [5, 6, 7, 8])
    rig.run()
    assert model.overlapped, "a second batch was never submitted while the first was scored"
    assert_commits_follow_flushed_publishes(rig)
    assert rig.consumer.committed_offsets == {0: 6, 1: 6}
    assert len(rig.producer.delivered) == 12 and sum(model.calls) == 12


# --------------------------------------------------------------------------- end to end


@pytest.mark.integration
def test_streamed_scores_equal_offline_with_process_scoring(
    services: object, unique: str, tmp_path: Path, twolead: tuple[OneClassSplit, Path]
) -> None:
    from test_worker_stream import Stream, streamed_scores, test_messages

    split, model_dir = twolead
    stream = Stream(services, unique, tmp_path / "model-cache")  # type: ignore[arg-type]
    try:
        stream.env["SEQ2GMM_BATCHING__SCORING"] = "process"
        assert stream.publish(model_dir) == 1
        stream.produce(test_messages(split))
        out, err = stream.worker("--stop-at-end").communicate(timeout=180)
        assert "scoring_process_started" in err, err[-3000:]
        logged = [e for e in map(_json_or_none, err.splitlines()) if e]
        frozen = [e for e in logged if e["event"] == "heap_frozen"]
        assert len(frozen) == 1 and frozen[0]["frozen_objects"] > 10_000, err[-3000:]
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["scored"] == len(split.test) and summary["dead_lettered"] == 0
        by_row = streamed_scores(stream.read(stream.out, at_least=len(split.test)), split)
        assert sorted(by_row) == list(range(len(split.test)))
        offline = load_checkpoint(model_dir).score(split.test)
        streamed = np.array([by_row[i].energy for i in range(len(split.test))])
        np.testing.assert_allclose(streamed, offline, rtol=1e-5, atol=1e-6)
    finally:
        stream.close()


def _json_or_none(line: str) -> dict[str, object] | None:
    try:
        return json.loads(line) if line.startswith("{") else None
    except json.JSONDecodeError:
        return None
