"""``seq2gmm retrain``: the gate's checks each refuse what they should (transport-free, on a fake
model), and on the real embedded Kafka and Redis a retrained candidate is promoted when the
active model went stale, a planted bad candidate (threshold lowered) is refused, and both
decisions are recorded in the registry."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaProducer

from model.checkpoint import load_checkpoint, save_checkpoint
from model.thresholds import EnergyQuantiles, Threshold
from worker.cli import main
from worker.commands.retrain import REFUSED
from worker.dev.services import Endpoints
from worker.ops.settings import KafkaSettings
from worker.registry.connection import connect
from worker.registry.store import ModelRegistry
from worker.stream.backtest import Replay, replay
from worker.stream.core import CoreOptions, InRecord
from worker.stream.gate import Calibration, GateRules, judge, only_series
from worker.stream.incidents import IncidentConfig
from worker.stream.testing import FakeModel

# ------------------------------------------------------------------ the gate's checks

SPIKES = (40, 41, 200, 320)  # windows (of 4 samples) holding a 9.0: three incidents


def _records(n_windows: int = 400, spikes: Iterable[int] = SPIKES) -> list[InRecord]:
    values = [1.0] * (4 * n_windows)
    for w in spikes:
        values[4 * w + 1] = 9.0
    other = {"series_id": "other/1", "start": 0, "interval": 1, "values": [9.0] * 40}
    msg = {"series_id": "dev/1", "start": 0, "interval": 1, "values": values}
    return [
        InRecord("raw", 0, 0, b"dev/1", json.dumps(msg).encode()),
        InRecord("raw", 0, 1, b"other/1", json.dumps(other).encode()),
    ]


def _replay(threshold: float, version: int = 1, spikes: Iterable[int] = SPIKES) -> Replay:
    options = CoreOptions(incidents=IncidentConfig(source_topic="raw"))
    result = replay(FakeModel(version, threshold=threshold), _records(spikes=spikes), options)
    return only_series(result, "dev/*")


def _checks(decision: Any) -> dict[str, bool]:
    return {c.name: c.passed for c in decision.checks}


def test_a_candidate_flagging_the_same_passes_every_check() -> None:
    active, same = _replay(5.0), _replay(6.0, version=2)
    assert len(active.windows) == 400 and len(active.flagged) == 4  # "other/1" left out
    d = judge(active, same, GateRules(), expected_rate=0.01)
    assert d.passed and not d.active_stale, d.reason
    assert _checks(d) == {
        "enough_data": True,
        "anomaly_rate": True,
        "incident_agreement": True,
        "threshold_calibration": True,  # no calibration given: not checked
    }
    assert d.checks[3].detail == "not checked: no training quantiles"
    rate = d.checks[1]
    assert rate.value == 0.0 and rate.limit == pytest.approx(0.01 * 1.5 + 2 / 396)
    assert d.checks[2].value == 1.0 and d.facts["normal_windows"]["candidate"] == 396


def test_too_many_alarms_fail_the_rate_check() -> None:
    """Threshold 0.5 flags every window: far above max(active's 0 %, expected 1 %) x 1.5."""
    d = judge(_replay(5.0), _replay(0.5, version=2), GateRules(), expected_rate=0.01)
    assert not d.passed and _checks(d)["anomaly_rate"] is False
    assert d.checks[1].value == 1.0
    assert _checks(d)["incident_agreement"] is True  # it does open the active's incidents
    assert "above the limit" in d.reason
    # the absolute slack: 2 extra windows of 396 are not a refusal, 2 + the tolerance is
    loose = GateRules(rate_slack_windows=400)
    assert judge(_replay(5.0), _replay(0.5, version=2), loose, 0.01).passed


def test_a_model_flagging_nothing_fails_incident_agreement() -> None:
    d = judge(_replay(5.0), _replay(100.0, version=2), GateRules(), expected_rate=0.01)
    assert _checks(d)["incident_agreement"] is False
    assert _checks(d)["anomaly_rate"] is True
    assert d.checks[2].value == 0.0 and "0 of the active model's 3 incidents" in d.reason
    assert judge(_replay(5.0), _replay(100.0, 2), GateRules(min_incident_share=0), 0.01).passed


def test_a_stale_active_model_waives_incident_agreement() -> None:
    """An active model flagging everything (expected 1 %) is stale: its incidents are no
    reference, and the candidate's rate is held to the expected rate alone."""
    stale = _replay(0.5)
    d = judge(stale, _replay(5.0, version=2), GateRules(), expected_rate=0.01)
    assert d.passed and d.active_stale, d.reason
    assert "waived" in d.checks[2].detail and d.checks[1].value == 4 / 400
    # flagging everything as well is still refused (the reference is 1 %, not the stale 100 %)
    d = judge(stale, _replay(0.5, version=2), GateRules(), expected_rate=0.01)
    assert not d.passed and _checks(d)["anomaly_rate"] is False
    # without an expected rate there is no staleness verdict
    assert not judge(stale, _replay(5.0, 2), GateRules(), expected_rate=None).active_stale


def _calibration(value: float, method: str = "fpr", parameter: float = 0.01) -> Calibration:
    """A threshold at ``value`` against training energies 1, 2, ..., 1000."""
    quantiles = EnergyQuantiles.from_scores(np.arange(1.0, 1001.0))
    calibration = Calibration.of(Threshold(value, method, parameter, 1000), quantiles)  # type: ignore[arg-type]
    assert calibration is not None
    return calibration


def test_a_threshold_moved_by_hand_fails_calibration() -> None:
    """A threshold flags its stated share of its own training windows: one inferred from them
    passes, one moved above every training energy (it would flag nothing, a blind model that
    a stale active cannot expose) or far below fails, whatever the recent data say."""
    rules, stale = GateRules(), _replay(0.5)
    inferred = _calibration(990.0)  # flags 10 of 1000: the stated 1 %
    assert inferred.implied_rate == pytest.approx(0.01, abs=1e-3)
    assert judge(stale, _replay(5.0, 2), rules, 0.01, inferred).passed
    blind = judge(stale, _replay(5.0, 2), rules, 0.01, _calibration(5000.0))
    assert not blind.passed and _checks(blind)["threshold_calibration"] is False
    assert _checks(blind)["anomaly_rate"] is True  # what the recent data alone would let pass
    assert "flags 0.00% of its 1000 training windows" in blind.reason
    noisy = judge(_replay(5.0), _replay(5.0, 2), rules, 0.01, _calibration(900.0))  # 10 %
    assert not noisy.passed and noisy.checks[3].limit == pytest.approx(0.031)
    assert judge(_replay(5.0), _replay(5.0, 2), GateRules(calibration_factor=20), 0.01,
                 _calibration(900.0)).passed  # fmt: skip
    # an f1 threshold states no rate; a rate too small for the training windows to show it
    f1 = judge(_replay(5.0), _replay(5.0, 2), rules, 0.01, _calibration(5000.0, "f1", 0.9))
    assert f1.passed and "states no rate" in f1.checks[3].detail
    rare = _calibration(5000.0, parameter=0.0005)  # 0.05 % of 1000: not even one window
    assert judge(_replay(5.0), _replay(5.0, 2), rules, 0.01, rare).passed


def test_an_active_model_flagging_one_long_episode_is_not_stale() -> None:
    """60 anomalous windows in a row (15 %, far above 5 x 1 %) in the first quarter only: an
    episode, not drift. The candidate must still open the active's incident, and a candidate
    flagging nothing is refused; spread over every quarter, the same rate is drift."""
    episode = range(10, 70)
    active = _replay(5.0, spikes=episode)
    assert len(active.flagged) == 60
    d = judge(active, _replay(100.0, 2, spikes=episode), GateRules(), expected_rate=0.01)
    assert not d.active_stale and _checks(d)["incident_agreement"] is False, d.reason
    assert d.facts["active_stretch_rates"] == [0.6, 0.0, 0.0, 0.0]
    spread = [w for q in range(4) for w in range(100 * q + 10, 100 * q + 25)]
    d = judge(_replay(5.0, spikes=spread), _replay(100.0, 2, spikes=spread), GateRules(), 0.01)
    assert d.active_stale and d.passed, d.reason  # what only calibration can still refuse
    whole = GateRules(stale_segments=1)  # the rate of the whole holdout: the episode is stale
    assert judge(active, _replay(100.0, 2, spikes=episode), whole, 0.01).active_stale


def test_invalid_rules_are_refused_with_what_to_fix() -> None:
    from worker.errors import ConfigError

    bad_rules = ({"min_windows": 0}, {"min_incident_share": 1.5}, {"stale_factor": 1.0})
    for bad in (*bad_rules, {"calibration_factor": 0.5}, {"stale_segments": 0}):
        with pytest.raises(ConfigError, match="SEQ2GMM_RETRAIN__"):
            GateRules(**bad)


def test_too_few_windows_is_not_enough_data() -> None:
    d = judge(_replay(5.0), _replay(6.0, 2), GateRules(min_windows=401), expected_rate=0.01)
    assert not d.passed and _checks(d) == {"enough_data": False}
    assert d.reason.startswith("not enough data: 400 recent windows")


def test_the_cutter_spec_comes_from_the_active_version_or_the_user() -> None:
    from argparse import Namespace

    from worker.commands.retrain import _cycles_spec
    from worker.errors import ConfigError
    from worker.registry.records import ModelVersion

    def version(**meta: Any) -> ModelVersion:
        return ModelVersion("m", 4, meta, b"", "", 0.0)

    none = Namespace(cycles=None)
    recorded = version(training_data={"cycles_spec": "period:86400"}, cycles={"kind": "period"})
    assert _cycles_spec(none, recorded) == "period:86400"
    assert _cycles_spec(none, version(cycles={"kind": "fixed", "length": 8, "hop": 4})) == (
        "fixed:8:4"
    )
    assert _cycles_spec(none, version(cycles=None, window_length=288, hop=288)) == "fixed:288:288"
    fitted = version(cycles={"kind": "fiducial", "period": 300.0})
    with pytest.raises(ConfigError, match="pass --cycles SPEC"):
        _cycles_spec(none, fitted)
    assert _cycles_spec(Namespace(cycles="fiducial"), fitted) == "fiducial"


# ------------------------------------------------------------------ integration

PERIOD = 32  # samples a cycle, one sample a second
T = np.arange(PERIOD)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _old(rng: np.random.Generator) -> np.ndarray:
    return np.sin(2 * np.pi * T / PERIOD) + 0.05 * rng.standard_normal(PERIOD)


def _new(rng: np.random.Generator) -> np.ndarray:
    square = 0.8 * np.sign(np.sin(2 * np.pi * (T + 0.5) / PERIOD)) + 0.3
    return square + 0.05 * rng.standard_normal(PERIOD)


class Setup:
    """Env for the CLI (a topic and key prefix of the test's own), a producer of cycles."""

    def __init__(self, services: Endpoints, unique: str, mp: pytest.MonkeyPatch) -> None:
        self.raw, self.services, self.unique = f"raw-{unique}", services, unique
        for name, value in {
            "SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS": services.kafka_bootstrap,
            "SEQ2GMM_KAFKA__RAW_TOPIC": self.raw,
            "SEQ2GMM_REDIS__URL": services.redis_url,
            "SEQ2GMM_REDIS__KEY_PREFIX": unique,
            "SEQ2GMM_DEVICE": "cpu",
        }.items():
            mp.setenv(name, value)
        ensure = KafkaSettings(num_partitions=2)
        from worker.stream.topics import ensure_topics

        ensure_topics(services.kafka_bootstrap, ensure, [self.raw])
        self.t0 = float(int(datetime.now(UTC).timestamp()) - 86_400)  # a day ago

    def at(self, cycle: int) -> str:
        return _iso(self.t0 + cycle * PERIOD)

    def produce(self, cycles: list[np.ndarray]) -> None:
        """Cycle i of series dev-1/x as one message stamped t0 + 32 i seconds."""
        producer = KafkaProducer(bootstrap_servers=self.services.kafka_bootstrap)
        for i, values in enumerate(cycles):
            start = self.t0 + i * PERIOD
            msg = {"series_id": "dev-1/x", "start": start, "interval": 1, "values": list(values)}
            ms = int(start * 1000)
            producer.send(self.raw, json.dumps(msg).encode(), key=b"dev-1/x", timestamp_ms=ms)
        producer.flush()
        producer.close()

    def registry(self) -> ModelRegistry:
        return ModelRegistry(connect(self.services.redis_url), self.unique)


def _run(capsys: pytest.CaptureFixture[str], argv: list[str], rc: int | None = 0) -> dict[str, Any]:
    """The CLI's --json document; its exit status must be ``rc`` (None: 0 or refused)."""
    capsys.readouterr()
    assert main(argv) in ((0, REFUSED) if rc is None else (rc,))
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def _train_active(s: Setup, capsys: pytest.CaptureFixture[str], out: Path, until: int) -> None:
    argv = ["train", "--from-topic", s.raw, "--series", "dev-*", "--since", s.at(0)]
    argv += ["--until", s.at(until), "--cycles", f"fixed:{PERIOD}", "--epochs", "2"]
    argv += ["--seed", "0", "--out", str(out), "--publish", "m", "--promote", "--json"]
    assert _run(capsys, argv)["version"] == 1


@pytest.mark.integration
def test_retrain_promotes_a_candidate_when_the_series_changed_shape(
    services: Endpoints,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """240 cycles of one shape, then 240 of another. The active model (trained on the first
    shape) flags the new one; retrain trains on cycles 0-399 (both shapes), judges on cycles
    400-479 and promotes the candidate: the active alias moves and the decision is recorded."""
    s = Setup(services, unique, monkeypatch)
    rng = np.random.default_rng(0)
    s.produce([_old(rng) for _ in range(240)] + [_new(rng) for _ in range(240)])
    _train_active(s, capsys, tmp_path / "active", until=240)

    holdout = f"{80 * PERIOD}s"
    argv = ["retrain", "m", "--since", s.at(0), "--until", s.at(480), "--holdout", holdout]
    doc = _run(capsys, [*argv, "--json"])
    assert doc["decision"] == "promote" and doc["promoted"] and doc["trained"], doc["reason"]
    assert (doc["active"], doc["candidate"]) == (1, 2)
    assert doc["active_stale"] and doc["active_rate"] > 0.9
    assert doc["windows"] == {"active": 80, "candidate": 80}
    # the active's flags in the history are the new shape: learnt, not left out
    assert doc["exclusion"]["excluded_windows"] == 0 and "stale" in doc["exclusion"]["reason"]
    assert doc["flagged"]["candidate"] <= 0.01 * 1.5 * 80 + 2
    with s.registry() as registry:
        assert registry.aliases("m") == {"active": 2, "candidate": 2}
        (gate,) = registry.gate_decisions("m")
        assert gate["decision"] == "promote" and gate["candidate"] == 2
        candidate = registry.get("m", 2).metadata
    data = candidate["training_data"]
    assert data["cycles_spec"] == f"fixed:{PERIOD}" and data["pattern"] == "dev-*"
    assert data["n_cycles"] == 400 and candidate["config"]["train"]["epochs"] == 2
    history = _run(capsys, ["models", "history", "m", "--json"])
    assert [e["to"] for e in history["history"] if e["alias"] == "active"] == [1, 2]
    assert history["gates"][0]["summary"].startswith("candidate 2 vs active 1: promoted")


@pytest.mark.integration
def test_retrain_refuses_a_planted_bad_candidate(
    services: Endpoints,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same weights with a threshold low enough to flag most normal cycles: refused (exit
    3), the active version stays, the refusal is recorded; an equal copy passes a dry run."""
    s = Setup(services, unique, monkeypatch)
    rng = np.random.default_rng(1)
    cycles = [_old(rng) for _ in range(300)]
    s.produce(cycles)
    _train_active(s, capsys, tmp_path / "active", until=220)
    detector = load_checkpoint(tmp_path / "active")
    low = float(np.quantile(detector.score(cycles[220:]), 0.3))
    assert low < detector.threshold.value
    same = save_checkpoint(detector, tmp_path / "same")
    detector.threshold = dataclasses.replace(detector.threshold, value=low)
    bad = save_checkpoint(detector, tmp_path / "bad")
    with s.registry() as registry:
        assert registry.publish_dir(bad, "m", promote=True, alias="candidate") == 2
        assert registry.publish_dir(same, "m") == 3

    argv = ["retrain", "m", "--since", s.at(0), "--until", s.at(300), "--holdout", "2560s"]
    doc = _run(capsys, [*argv, "--candidate", "candidate", "--json"], rc=REFUSED)
    assert doc["decision"] == "refuse" and not doc["promoted"] and not doc["trained"]
    rate = next(c for c in doc["checks"] if c["name"] == "anomaly_rate")
    assert not rate["passed"] and rate["value"] > 0.5 > rate["limit"]
    calibration = next(c for c in doc["checks"] if c["name"] == "threshold_calibration")
    assert not calibration["passed"] and calibration["value"] > calibration["limit"]
    doc = _run(capsys, [*argv, "--candidate", "3", "--dry-run", "--json"])
    assert doc["decision"] == "promote" and not doc["promoted"] and doc["dry_run"]
    with s.registry() as registry:
        assert registry.aliases("m") == {"active": 1, "candidate": 2}
        (gate,) = registry.gate_decisions("m")  # the dry run records nothing
    assert gate["decision"] == "refuse" and gate["active"] == 1 and gate["candidate"] == 2
    assert main([*argv, "--candidate", "candidate"]) == REFUSED
    printed = capsys.readouterr().out
    assert "refused" in printed and "[FAIL] anomaly_rate" in printed
    capsys.readouterr()
    assert main(["models", "history", "m"]) == 0
    assert "retrain gate: candidate 2 vs active 1: refused" in capsys.readouterr().out
    assert main([*argv, "--candidate", "1"]) == 1  # the active version itself: nothing to gate
    assert "m:1 is the active version" in capsys.readouterr().err

    # active moved while a retrain ran (someone promoted meanwhile): their choice stands
    from worker.commands.retrain import _promote
    from worker.registry.errors import AliasMovedError

    with s.registry() as registry:
        judged_against = registry.get("m", 1)
        registry.promote("m", 3)
        with pytest.raises(AliasMovedError, match="m:active points at 3, not 1"):
            _promote(registry, judged_against, registry.get("m", 2))
        assert registry.aliases("m")["active"] == 3
        _promote(registry, registry.get("m", 3), registry.get("m", 2))  # where it was judged
        assert registry.aliases("m")["active"] == 2


@pytest.mark.integration
def test_retrain_leaves_out_the_cycles_the_active_model_flags(
    services: Endpoints,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Five cycles of the history hold a spike; the active model (not stale on the held-out
    cycles) flags them, so the candidate is trained without the windows it flags in the
    training range: the replay's window starts match the training cycles' (the count left
    out equals the count flagged); with --exclude-flagged no, none is."""
    s = Setup(services, unique, monkeypatch)
    rng = np.random.default_rng(2)
    cycles = [_old(rng) for _ in range(300)]
    for i in (90, 120, 150, 180, 200):
        cycles[i][5:9] += 6.0
    s.produce(cycles)
    _train_active(s, capsys, tmp_path / "active", until=60)  # clean cycles

    argv = ["retrain", "m", "--since", s.at(0), "--until", s.at(300), "--holdout", "2560s"]
    doc = _run(capsys, [*argv, "--dry-run", "--json"], rc=None)
    exclusion = doc["exclusion"]
    assert not doc["active_stale"] and exclusion["mode"] == "auto"
    assert exclusion["excluded_windows"] == 5 and exclusion["of_windows"] == 220  # the spikes
    with s.registry() as registry:
        data = registry.get("m", doc["candidate"]).metadata["training_data"]
    assert data["dropped_excluded_cycles"] == exclusion["excluded_windows"]
    assert data["n_cycles"] == 220

    doc = _run(capsys, [*argv, "--dry-run", "--exclude-flagged", "no", "--json"], rc=None)
    assert doc["exclusion"] == {"mode": "no", "excluded_windows": 0, "reason": "kept (no)"}
