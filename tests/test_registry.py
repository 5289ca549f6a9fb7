"""The model registry against the real embedded valkey: versions, aliases, safety, hot reload."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file
from structlog.testing import capture_logs

from model.errors import CheckpointError, Seq2GMMError
from worker.cli import main
from worker.commands.models import open_registry
from worker.dev.endpoints import resolve_redis_url
from worker.dev.services import Endpoints, free_port
from worker.errors import ConfigError, ServiceError
from worker.ops.settings import load_settings
from worker.registry.connection import connect, describe_url
from worker.registry.errors import (
    CorruptVersionError,
    InvalidNameError,
    ModelLoadError,
    ModelNotFoundError,
    NoRollbackError,
    RegistryError,
    VersionInUseError,
)
from worker.registry.loader import load_detector
from worker.registry.records import HistoryEntry, ModelVersion, parse_ref
from worker.registry.store import STAGING_TTL_S, ModelRegistry
from worker.registry.watcher import ActiveModelWatcher

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------- helpers


def make_model_dir(root: Path, seed: int, **extra: Any) -> Path:
    """A tiny checkpoint directory: safetensors weights and a metadata.json naming their sha."""
    d = root / f"model-{seed}"
    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tensors = {"encoder.weight": torch.randn(4, 3, generator=g), "gmm.mu": torch.randn(2, 3)}
    save_file(tensors, str(d / "weights.safetensors"))
    weights = (d / "weights.safetensors").read_bytes()
    metadata = {  # the shape of model.checkpoint's metadata
        "format": "seq2gmm-checkpoint",
        "kind": "seq2gmm",
        "package_version": "0.1.0",
        "config": {"name": "test"},
        "segmentation": {"n_segments": 4},
        "window_length": 96,
        "hop": 48,
        "n_features": 1,
        "threshold": {"value": 1.5 + seed, "method": "quantile", "parameter": 0.99},
        "energy_quantiles": {"values": [0.1, 1.2], "n_reference": 50},
        "metrics": {"f1": 0.9, "auc": float("nan")},
        "weights_file": "weights.safetensors",
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        **extra,
    }
    (d / "metadata.json").write_text(json.dumps(metadata))
    return d


def tensors_loader(record: ModelVersion) -> dict[str, torch.Tensor]:
    """A loader for tests: safetensors bytes -> tensors (no pickle involved)."""
    return load_tensors(record.weights)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _default_structlog() -> Iterator[None]:
    """`main()` binds structlog to the captured stderr of the test that ran it; undo that."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def reg(services: Endpoints, unique: str) -> Iterator[ModelRegistry]:
    registry = ModelRegistry(connect(services.redis_url), unique)
    yield registry
    registry.close()


@pytest.fixture
def other(services: Endpoints, unique: str) -> Iterator[ModelRegistry]:
    """A second, independent client of the same registry (another process's view)."""
    registry = ModelRegistry(connect(services.redis_url), unique)
    yield registry
    registry.close()


def replay(entries: list[HistoryEntry]) -> int | None:
    """Check that a history is a consistent chain with stack-like rollbacks; return the end."""
    current: int | None = None
    stack: list[HistoryEntry] = []
    for i, e in enumerate(entries):
        assert e.seq == i + 1, "history seq numbers must be 1, 2, 3, ..."
        assert e.from_version == current, f"entry {e.seq} starts at {e.from_version}, not {current}"
        assert e.from_version != e.to_version
        if e.action == "promote":
            stack.append(e)
        else:
            assert e.action == "rollback"
            undone = stack.pop()
            assert e.undoes == undone.seq and e.to_version == undone.from_version
        current = e.to_version
    return current


# ------------------------------------------------------------------------- publish and read


def test_publish_list_show_get_round_trip(reg: ModelRegistry, tmp_path: Path) -> None:
    d1, d2 = make_model_dir(tmp_path, 1), make_model_dir(tmp_path, 2)
    before = time.time()
    assert reg.publish_dir(d1, "ecg") == 1
    assert reg.publish_dir(d2, "ecg") == 2
    assert reg.resolve("ecg") is None  # publishing alone does not promote

    [summary] = reg.list_models()
    assert (summary.name, summary.versions, summary.latest, dict(summary.aliases)) == (
        "ecg",
        2,
        2,
        {},
    )
    infos = reg.list_versions("ecg")
    assert [i.version for i in infos] == [1, 2]
    assert infos[0].metadata["threshold"]["value"] == 2.5 and infos[1].metadata["kind"] == "seq2gmm"
    assert infos[1].publisher["package_version"]

    v1 = reg.get("ecg", 1)
    weights = (d1 / "weights.safetensors").read_bytes()
    assert v1.weights == weights and v1.size == len(weights)
    assert v1.sha256 == hashlib.sha256(weights).hexdigest() == v1.metadata["weights_sha256"]
    assert v1.metadata == json.loads((d1 / "metadata.json").read_text())
    assert before - 5 < v1.created_at < time.time() + 5  # server time, written at commit
    assert torch.equal(tensors_loader(v1)["gmm.mu"], load_tensors(weights)["gmm.mu"])
    assert reg.info("ecg", 2).sha256 == reg.get("ecg", 2).sha256

    with pytest.raises(ModelNotFoundError, match=r"ecg has no active version.*models promote"):
        reg.get("ecg")
    with pytest.raises(ModelNotFoundError, match="no version 3"):
        reg.get("ecg", 3)

    assert reg.publish_dir(d2, "ecg", promote=True) == 3
    assert reg.get("ecg").version == 3 and reg.resolve("ecg") == 3
    assert reg.get("ecg", alias="active").version == 3


def test_versions_are_monotonic_per_name_immutable_and_never_reused(
    reg: ModelRegistry, tmp_path: Path
) -> None:
    d = make_model_dir(tmp_path, 1)
    assert [reg.publish_dir(d, "ecg") for _ in range(3)] == [1, 2, 3]
    assert reg.publish_dir(d, "kpi") == 1  # numbering is per model
    first = reg.get("ecg", 1)

    reg.delete("ecg", 3)
    assert reg.publish_dir(make_model_dir(tmp_path, 2), "ecg") == 4  # 3 is never reused
    # even with the counter lost or rewound, a commit never lands on an existing version
    reg.client.delete(reg.seq_key("ecg"))
    assert reg.publish_dir(d, "ecg") == 5
    reg.client.set(reg.seq_key("ecg"), 0)
    assert reg.publish_dir(d, "ecg") == 6

    assert [i.version for i in reg.list_versions("ecg")] == [1, 2, 4, 5, 6]
    again = reg.get("ecg", 1)
    assert again == first  # bytes, metadata, sha and creation time are unchanged
    assert [i.version for i in reg.list_versions("kpi")] == [1]


def test_a_half_written_version_is_never_visible(
    reg: ModelRegistry, other: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_model_dir(tmp_path, 1)
    assert reg.publish_dir(d, "ecg", promote=True) == 1

    def crash(*args: Any, **kwargs: Any) -> Any:
        # the weights are uploaded; the process dies before the commit
        staged = reg.client.keys(f"{reg.prefix}:*staging*")
        assert len(staged) == 1
        assert [i.version for i in other.list_versions("ecg")] == [1]
        raise redis.ConnectionError("connection lost mid-publish")

    monkeypatch.setattr(reg, "_commit", crash)
    with pytest.raises(ServiceError, match="cannot reach Redis"):
        reg.publish_dir(make_model_dir(tmp_path, 2), "ecg")
    assert reg.client.keys(f"{reg.prefix}:*staging*") == []  # the upload was discarded

    # a crash that cannot even clean up leaves only a private key that expires
    monkeypatch.setattr(reg, "_discard_staging", lambda staging: None)
    with pytest.raises(ServiceError):
        reg.publish_dir(make_model_dir(tmp_path, 2), "ecg")
    [staged] = reg.client.keys(f"{reg.prefix}:*staging*")
    assert 0 < reg.client.ttl(staged) <= STAGING_TTL_S

    # an upload that arrived short is refused by the commit
    monkeypatch.undo()
    real_upload = reg._upload
    monkeypatch.setattr(reg, "_upload", lambda key, weights: real_upload(key, weights[:-10]))
    with pytest.raises(RegistryError, match="incomplete"):
        reg.publish_dir(make_model_dir(tmp_path, 3), "ecg")
    monkeypatch.undo()

    for view in (reg, other):
        assert [i.version for i in view.list_versions("ecg")] == [1]
        assert [m.versions for m in view.list_models()] == [1]
        assert view.resolve("ecg") == 1
        with pytest.raises(ModelNotFoundError):
            view.get("ecg", 2)
    # the number is allocated at the commit: the next real publish is 2
    assert reg.publish_dir(make_model_dir(tmp_path, 4), "ecg") == 2


def test_publish_refuses_bad_input(reg: ModelRegistry, tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, 1)
    for bad in ("", "a:b", "x" * 65, "ecg/1", "ü"):
        with pytest.raises(InvalidNameError, match="invalid model name"):
            reg.publish_dir(d, bad)
    with pytest.raises(InvalidNameError, match="invalid alias"):
        reg.publish_dir(d, "ecg", promote=True, alias="7")
    for bad_version in (0, -1, "x"):
        with pytest.raises(InvalidNameError, match="invalid version"):
            reg.promote("ecg", bad_version)  # type: ignore[arg-type]

    weights = (d / "weights.safetensors").read_bytes()
    meta = json.loads((d / "metadata.json").read_text())
    with pytest.raises(CorruptVersionError, match="do not match the metadata's weights_sha256"):
        reg.publish("ecg", meta, weights[:-1] + bytes([weights[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        reg.publish("ecg", {}, b"\x80\x04pickle-ish")
    (d / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"weights\.safetensors is missing"):
        reg.publish_dir(d, "ecg")
    assert reg.list_models() == []


# --------------------------------------------------------------------- promote and rollback


def test_promote_rollback_history_and_aliases(reg: ModelRegistry, tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, 1)
    for _ in range(3):
        reg.publish_dir(d, "ecg")
    with pytest.raises(ModelNotFoundError, match="no active version"):
        reg.rollback("ecg")

    first = reg.promote("ecg", 1)
    assert first is not None and (first.from_version, first.to_version) == (None, 1)
    reg.promote("ecg", 2)
    reg.promote("ecg", 3)
    assert reg.promote("ecg", 3) is None  # already there: no history entry
    with pytest.raises(ModelNotFoundError, match="no version 9"):
        reg.promote("ecg", 9)

    back = reg.rollback("ecg")
    assert (back.from_version, back.to_version, back.undoes) == (3, 2, 3)
    assert reg.rollback("ecg").to_version == 1  # repeated rollbacks walk further back
    with pytest.raises(NoRollbackError, match=r"no earlier version.*models promote ecg"):
        reg.rollback("ecg")
    assert reg.resolve("ecg") == 1

    reg.promote("ecg", 3)
    assert reg.rollback("ecg").to_version == 1  # back to what was active before 3
    history = reg.history("ecg")
    assert [(e.action, e.from_version, e.to_version) for e in history] == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("promote", 2, 3),
        ("rollback", 3, 2),
        ("rollback", 2, 1),
        ("promote", 1, 3),
        ("rollback", 3, 1),
    ]
    assert replay(history) == reg.resolve("ecg") == 1
    assert all(history[i].time <= history[i + 1].time for i in range(len(history) - 1))

    # other aliases are independent pointers with their own history
    assert reg.set_alias("ecg", "candidate", 2) is not None
    reg.promote("ecg", 3, alias="candidate")
    assert reg.aliases("ecg") == {"active": 1, "candidate": 3}
    assert reg.rollback("ecg", alias="candidate").to_version == 2
    assert reg.resolve("ecg") == 1
    assert [e.alias for e in reg.history("ecg", alias="candidate")] == ["candidate"] * 3
    assert reg.get("ecg", alias="candidate").version == 2
    with pytest.raises(RegistryError, match="active alias of ecg cannot be removed"):
        reg.remove_alias("ecg", "active")
    removed = reg.remove_alias("ecg", "candidate")
    assert removed is not None and removed.to_version is None
    assert reg.aliases("ecg") == {"active": 1}
    assert reg.remove_alias("ecg", "candidate") is None


def test_delete_refuses_versions_an_alias_points_to(reg: ModelRegistry, tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, 1)
    for _ in range(4):
        reg.publish_dir(d, "ecg")
    reg.promote("ecg", 1)
    reg.promote("ecg", 2)
    reg.set_alias("ecg", "candidate", 3)

    with pytest.raises(VersionInUseError, match="refusing to delete ecg:2: it is the active"):
        reg.delete("ecg", 2)
    with pytest.raises(VersionInUseError, match=r"aliases: candidate.*unalias"):
        reg.delete("ecg", 3)
    reg.delete("ecg", 4)
    reg.delete("ecg", 1)
    with pytest.raises(ModelNotFoundError, match="ecg has no version 4"):
        reg.delete("ecg", 4)
    assert [i.version for i in reg.list_versions("ecg")] == [2, 3]
    assert reg.get("ecg").version == 2
    assert reg.client.exists(reg.weights_key("ecg", 1), reg.meta_key("ecg", 1)) == 0
    with pytest.raises(NoRollbackError, match="previous version 1 was deleted"):
        reg.rollback("ecg")
    assert reg.resolve("ecg") == 2


# ----------------------------------------------------------------------------- safe loading


def test_tampered_or_damaged_versions_are_refused(reg: ModelRegistry, tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, 1)
    reg.publish_dir(d, "ecg", promote=True)
    good = reg.get("ecg")
    key = reg.weights_key("ecg", 1)

    flipped = bytearray(good.weights)
    flipped[-1] ^= 0xFF
    reg.client.set(key, bytes(flipped))
    with pytest.raises(CorruptVersionError) as exc:
        reg.get("ecg")
    msg = str(exc.value)
    assert "ecg:1 fail their sha256 check" in msg and "tampered" in msg
    assert "seq2gmm models delete ecg 1" in msg
    assert isinstance(exc.value, CheckpointError) and isinstance(exc.value, Seq2GMMError)

    reg.client.set(key, good.weights + b"extra")
    with pytest.raises(CorruptVersionError, match="bytes, the record says"):
        reg.get("ecg", 1)

    # an attacker who also rewrites the record's sha is caught by the checkpoint's own sha
    evil = bytes(flipped)
    record = json.loads(reg.client.hget(reg.meta_key("ecg", 1), "record"))
    record["sha256"] = hashlib.sha256(evil).hexdigest()
    reg.client.hset(reg.meta_key("ecg", 1), "record", json.dumps(record))
    reg.client.set(key, evil)
    with pytest.raises(CorruptVersionError, match="names other weights"):
        reg.get("ecg", 1)

    reg.client.delete(key)
    with pytest.raises(CorruptVersionError, match="has metadata but no weights"):
        reg.get("ecg", 1)
    reg.client.set(key, good.weights)
    reg.client.hset(reg.meta_key("ecg", 1), "record", "{not json")
    with pytest.raises(CorruptVersionError, match="record of ecg:1 is unreadable"):
        reg.get("ecg", 1)
    [info] = reg.list_versions("ecg")  # listing survives a damaged record and says so
    assert info.problem and "unreadable" in info.problem


# ------------------------------------------------------------------------------ concurrency

CHILD = textwrap.dedent(
    """
    import json, random, sys
    import redis
    from worker.registry.connection import connect
    from worker.registry.errors import NoRollbackError
    from worker.registry.store import ModelRegistry

    url, prefix, name, model_dir, tag = sys.argv[1:6]
    reg = ModelRegistry(connect(url), prefix)
    ctl = redis.Redis.from_url(url)
    ctl.rpush(prefix + ":test:ready", tag)
    assert ctl.blpop([prefix + ":test:go:" + tag], timeout=30), "no start signal"
    mine = [reg.publish_dir(model_dir, name) for _ in range(5)]
    rng = random.Random(tag)
    promotions = rollbacks = 0
    for _ in range(150):
        if rng.random() < 0.25:
            try:
                reg.rollback(name)
                rollbacks += 1
            except NoRollbackError:
                pass
        elif reg.promote(name, rng.choice(mine)) is not None:
            promotions += 1
    print(json.dumps({"versions": mine, "promotions": promotions, "rollbacks": rollbacks}))
    """
)


def test_concurrent_promoters_leave_a_consistent_pointer_and_history(
    services: Endpoints, reg: ModelRegistry, tmp_path: Path
) -> None:
    d = make_model_dir(tmp_path, 1)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, services.redis_url, reg.prefix, "ecg", str(d), tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for tag in ("a", "b")
    ]
    try:
        ready = {reg.client.blpop([f"{reg.prefix}:test:ready"], timeout=30) for _ in procs}
        assert None not in ready, "a child process did not start"
        for tag in ("a", "b"):  # release both at once
            reg.client.rpush(f"{reg.prefix}:test:go:{tag}", 1)
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]  # after logs

    published = sorted(v for r in results for v in r["versions"])
    assert published == list(range(1, 11))  # concurrent publishes: distinct, no gaps
    history = reg.history("ecg")
    assert len(history) == sum(r["promotions"] + r["rollbacks"] for r in results)
    assert sum(r["rollbacks"] for r in results) > 0 and len(history) > 50
    assert replay(history) == reg.resolve("ecg") == history[-1].to_version


# ------------------------------------------------------------------------------- hot reload


def test_watcher_sees_a_promotion_by_its_next_poll_without_pubsub(
    reg: ModelRegistry, other: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.publish_dir(make_model_dir(tmp_path, 1), "ecg", promote=True)
    reg.publish_dir(make_model_dir(tmp_path, 2), "ecg")
    clock = FakeClock()
    watcher = ActiveModelWatcher(
        reg, "ecg", loader=tensors_loader, poll_interval_s=5.0, subscribe=False, clock=clock
    )
    assert watcher.current() is None
    first = watcher.check()
    assert first.changed and first.serving == 1 and first.error is None
    served = watcher.current()
    assert served is not None and served.record.weights == reg.get("ecg", 1).weights

    calls: list[tuple[Any, ...]] = []
    real = reg.client.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(reg.client, "execute_command", counting)
    clock.t += 5.0
    unchanged = watcher.check()
    assert unchanged.polled and not unchanged.changed
    assert [c[0] for c in calls] == ["HGET"]  # nothing changed: one read of the pointer

    other.promote("ecg", 2)  # another client; no hint can reach this watcher
    calls.clear()
    clock.t += 4.9
    early = watcher.check()
    assert not early.polled and early.serving == 1 and calls == []  # free between polls
    clock.t += 0.1
    seen = watcher.check()
    assert seen.changed and seen.serving == 2 and seen.pointer == 2
    now = watcher.current()
    assert now is not None and now.version == 2
    assert torch.equal(now.model["gmm.mu"], tensors_loader(reg.get("ecg", 2))["gmm.mu"])


def test_watcher_unsubscribed_still_sees_promotion_within_poll_interval(
    reg: ModelRegistry, other: ModelRegistry, tmp_path: Path
) -> None:
    reg.publish_dir(make_model_dir(tmp_path, 1), "ecg", promote=True)
    reg.publish_dir(make_model_dir(tmp_path, 2), "ecg")
    poll = 0.5
    with ActiveModelWatcher(reg, "ecg", loader=tensors_loader, poll_interval_s=poll) as watcher:
        assert watcher.check().serving == 1
        watcher._pubsub.unsubscribe()  # the hint channel is gone (e.g. a dropped connection)
        other.promote("ecg", 2)
        promoted_at = time.monotonic()
        deadline = promoted_at + 10
        while watcher.check().serving != 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the worker's batches, between which it calls check()
        seen_after = time.monotonic() - promoted_at
    assert watcher.current() is not None and watcher.current().version == 2  # type: ignore[union-attr]
    assert seen_after <= poll + 1.0  # slack for a loaded machine; exact logic: fake-clock test


def test_watcher_reacts_to_the_pubsub_hint_before_its_poll(
    reg: ModelRegistry, other: ModelRegistry, tmp_path: Path
) -> None:
    reg.publish_dir(make_model_dir(tmp_path, 1), "ecg", promote=True)
    reg.publish_dir(make_model_dir(tmp_path, 2), "ecg")
    clock = FakeClock()  # never advances: only the hint can make the watcher read the pointer
    with ActiveModelWatcher(
        reg, "ecg", loader=tensors_loader, poll_interval_s=3600, clock=clock
    ) as watcher:
        assert watcher.check().serving == 1
        other.promote("ecg", 2)
        deadline = time.monotonic() + 10
        result = watcher.check()
        while not result.changed and time.monotonic() < deadline:
            result = watcher.check()
        assert result.changed and result.serving == 2
        assert not watcher.check().polled  # the hint was drained


def test_watcher_refuses_a_tampered_version_and_keeps_serving(
    reg: ModelRegistry, other: ModelRegistry, tmp_path: Path
) -> None:
    for seed in (1, 2, 3):
        reg.publish_dir(make_model_dir(tmp_path, seed), "ecg", promote=seed == 1)
    loads: list[int] = []

    def loader(record: ModelVersion) -> dict[str, torch.Tensor]:
        loads.append(record.version)
        if record.version == 3:
            raise ValueError("unsupported detector")
        return tensors_loader(record)

    clock = FakeClock()
    with capture_logs() as logs:
        watcher = ActiveModelWatcher(
            reg, "ecg", loader=loader, poll_interval_s=5.0, subscribe=False, clock=clock
        )
        watcher.check()
        served = watcher.current()
        assert served is not None and served.version == 1

        weights = bytearray(reg.get("ecg", 2).weights)
        weights[100] ^= 0x01
        reg.client.set(reg.weights_key("ecg", 2), bytes(weights))  # tampered in Redis
        other.promote("ecg", 2)
        refused = watcher.refresh()
        assert isinstance(refused.error, CorruptVersionError)
        assert "sha256" in str(refused.error)
        assert refused.serving == 1 and refused.pointer == 2 and not refused.changed
        assert watcher.current() is served  # same object: nothing was swapped
        assert loads == [1]  # the tampered bytes never reached the loader

        clock.t += 5.0
        again = watcher.check()  # not refetched until the pointer moves
        assert again.polled and again.error is refused.error and watcher.current() is served

        other.promote("ecg", 3)  # verified, but the loader fails
        failed = watcher.refresh()
        assert isinstance(failed.error, ModelLoadError) and "unsupported detector" in str(
            failed.error
        )
        assert watcher.current() is served and loads == [1, 3]

        other.rollback("ecg")
        other.rollback("ecg")
        assert other.resolve("ecg") == 1
        clock.t += 5.0
        back = watcher.check()
        assert back.error is None and not back.changed and back.serving == 1

    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["model_version_refused"] * 2
    assert warnings[0]["version"] == 2 and warnings[0]["serving"] == 1


def test_watcher_survives_an_unreachable_redis() -> None:
    dead = ModelRegistry(connect(f"redis://:hunter2@127.0.0.1:{free_port()}/0", timeout_s=1), "t")
    watcher = ActiveModelWatcher(dead, "ecg", loader=tensors_loader, poll_interval_s=1)
    result = watcher.check()
    assert isinstance(result.error, ServiceError) and watcher.current() is None
    assert "cannot reach Redis" in str(result.error) and "hunter2" not in str(result.error)
    with pytest.raises(ServiceError, match="SEQ2GMM_REDIS__URL"):
        dead.list_models()
    watcher.close()


def test_watcher_keeps_serving_when_the_pointer_is_garbage(
    reg: ModelRegistry, tmp_path: Path
) -> None:
    reg.publish_dir(make_model_dir(tmp_path, 1), "ecg", promote=True)
    watcher = ActiveModelWatcher(reg, "ecg", loader=tensors_loader, subscribe=False)
    assert watcher.check().serving == 1
    reg.client.hset(reg.aliases_key("ecg"), "active", "latest")  # written by hand
    result = watcher.refresh()
    assert isinstance(result.error, RegistryError) and result.serving == 1
    assert "models promote ecg" in str(result.error)
    assert reg.promote("ecg", 1) is not None  # promoting repairs the pointer
    assert watcher.refresh().error is None


def test_a_model_without_active_version_serves_nothing_yet(
    reg: ModelRegistry, tmp_path: Path
) -> None:
    reg.publish_dir(make_model_dir(tmp_path, 1), "ecg")
    watcher = ActiveModelWatcher(reg, "ecg", loader=tensors_loader, subscribe=False)
    result = watcher.check()
    assert result.polled and result.pointer is None and result.error is None
    assert watcher.current() is None
    reg.promote("ecg", 1)
    assert watcher.refresh().serving == 1


# ------------------------------------------------------------------------ URLs and settings


def test_redis_urls_with_password_and_tls_are_parsed_without_leaking_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = connect("rediss://svc:s3cret@cache.example:6380/2?ssl_cert_reqs=required")
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert (kwargs["username"], kwargs["password"], kwargs["host"], kwargs["port"]) == (
        "svc",
        "s3cret",
        "cache.example",
        6380,
    )
    assert kwargs["db"] == 2 and kwargs["ssl_cert_reqs"] == "required"
    assert not client.get_encoder().decode_responses  # binary-safe for the weights

    plain = connect("redis://:only-pass@10.0.0.5:6379/0")
    assert plain.connection_pool.connection_kwargs["password"] == "only-pass"
    assert plain.connection_pool.connection_class is redis.Connection

    assert (
        describe_url("rediss://svc:s3cret@cache.example:6380/2") == "rediss://cache.example:6380/2"
    )
    with pytest.raises(ConfigError, match="SEQ2GMM_REDIS__URL") as exc:
        connect("http://svc:s3cret@cache.example/")
    assert "s3cret" not in str(exc.value)

    with pytest.raises(ConfigError, match="decode_responses"):
        ModelRegistry(redis.Redis(decode_responses=True), "p")

    monkeypatch.setenv("SEQ2GMM_REDIS__URL", "rediss://svc:s3cret@cache.example:6380/2")
    monkeypatch.setenv("SEQ2GMM_REDIS__KEY_PREFIX", "prod.ecg")
    settings = load_settings()
    assert resolve_redis_url(settings) == "rediss://svc:s3cret@cache.example:6380/2"
    with open_registry(settings) as registry:
        assert registry.prefix == "prod.ecg" and registry.where == "rediss://cache.example:6380/2"
    assert registry.models_key() == "prod.ecg:models"
    assert registry.aliases_key("ecg") == "prod.ecg:model:ecg:aliases"


def test_password_authentication_against_the_real_server(
    services: Endpoints, unique: str, tmp_path: Path
) -> None:
    """A user restricted to the registry's prefix can do everything: no key escapes it."""
    admin = redis.Redis.from_url(services.redis_url)
    user = f"u-{unique}"
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=["+pa55:word"],
        keys=[f"{unique}:*"],
        channels=[f"{unique}:*"],
        commands=["+@all"],
    )
    host_port = services.redis_url.split("://", 1)[1]
    try:
        with ModelRegistry(connect(f"redis://{user}:pa55:word@{host_port}"), unique) as r:
            r.publish_dir(make_model_dir(tmp_path, 1), "ecg", promote=True)
            r.publish_dir(make_model_dir(tmp_path, 2), "ecg")
            r.promote("ecg", 2)
            r.rollback("ecg")
            r.delete("ecg", 2)
            assert r.get("ecg").version == 1
            watcher = ActiveModelWatcher(r, "ecg", loader=tensors_loader)
            assert watcher.check().serving == 1
            watcher.close()
        with ModelRegistry(connect(f"redis://{user}:n0t-the-pa55@{host_port}"), unique) as bad:
            with pytest.raises(ServiceError, match="refused the credentials") as exc:
                bad.list_models()
            assert "n0t-the-pa55" not in str(exc.value)
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_load_detector_goes_through_checkpoint_from_bytes(
    reg: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.publish_dir(make_model_dir(tmp_path, 1), "ecg", promote=True)
    record = reg.get("ecg")
    calls: list[tuple[dict[str, Any], bytes]] = []

    def checkpoint_from_bytes(metadata: dict[str, Any], weights: bytes) -> str:
        calls.append((metadata, weights))
        if metadata.get("kind") == "broken":
            raise RuntimeError("header mismatch")
        if metadata.get("kind") == "corrupt":
            raise CheckpointError("sha256 mismatch")
        return "detector"

    monkeypatch.setattr("worker.registry.loader.checkpoint_from_bytes", checkpoint_from_bytes)
    assert load_detector(record) == "detector"
    assert calls == [(dict(record.metadata), record.weights)]
    broken = dataclasses.replace(record, metadata={**record.metadata, "kind": "broken"})
    with pytest.raises(ModelLoadError, match=r"cannot load ecg:1 \(RuntimeError: header mismatch"):
        load_detector(broken)
    corrupt = dataclasses.replace(record, metadata={**record.metadata, "kind": "corrupt"})
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_detector(corrupt)


def test_parse_ref() -> None:
    assert parse_ref("ecg") == ("ecg", None)
    assert parse_ref("ecg:12") == ("ecg", 12)
    assert parse_ref("ecg:candidate") == ("ecg", "candidate")
    with pytest.raises(InvalidNameError):
        parse_ref("ecg:0")
    with pytest.raises(InvalidNameError):
        parse_ref("bad name:1")


# ------------------------------------------------------------------------------------- CLI


def test_cli_round_trip(
    services: Endpoints,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEQ2GMM_REDIS__URL", services.redis_url)
    monkeypatch.setenv("SEQ2GMM_REDIS__KEY_PREFIX", unique)
    # Kafka is neither configured nor running: the registry commands do not need it
    monkeypatch.delenv("SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("SEQ2GMM_DEV__DATA_DIR", str(tmp_path / "dev"))

    def cli_json(*args: str) -> Any:
        capsys.readouterr()
        assert main(["models", *args, "--json"]) == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)  # exactly one JSON document

    def cli_text(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main(["models", *args])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    assert cli_json("list") == {"models": []}
    d1, d2 = make_model_dir(tmp_path, 1), make_model_dir(tmp_path, 2)
    pub = cli_json("publish", str(d1), "--name", "ecg", "--promote")
    assert pub["version"] == 1 and pub["aliases"] == {"active": 1}
    assert pub["sha256"] == json.loads((d1 / "metadata.json").read_text())["weights_sha256"]
    rc, out, _ = cli_text("publish", str(d2), "--name", "ecg")
    assert rc == 0 and "published ecg:2" in out and "models promote ecg 2" in out

    listing = cli_json("list")
    assert listing["models"] == [
        {"name": "ecg", "versions": 2, "latest": 2, "aliases": {"active": 1}}
    ]
    rc, out, _ = cli_text("list")
    assert rc == 0 and out.splitlines()[0].split() == [
        "NAME",
        "VERSIONS",
        "LATEST",
        "ACTIVE",
        "OTHER",
        "ALIASES",
    ]
    assert out.splitlines()[1].split()[:4] == ["ecg", "2", "2", "1"]
    versions = cli_json("list", "ecg")
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    assert versions["versions"][0]["aliases"] == ["active"]
    rc, out, _ = cli_text("list", "ecg")
    assert "THRESHOLD" in out and "seq2gmm" in out and "2.5 (quantile)" in out

    shown = cli_json("show", "ecg:2", "--verify")
    assert shown["version"] == 2 and shown["verified"] is True
    assert shown["metadata"]["threshold"]["value"] == 3.5
    assert shown["metadata"]["metrics"]["auc"] is None  # strict JSON: NaN becomes null
    assert cli_json("show", "ecg")["version"] == 1  # NAME alone: the active version
    rc, out, _ = cli_text("show", "ecg:1")
    assert rc == 0 and "ecg:1" in out and "sha256:" in out and "96 samples, hop 48" in out

    promoted = cli_json("promote", "ecg", "2")
    assert promoted["changed"] and promoted["entry"]["from"] == 1
    assert cli_json("promote", "ecg", "2", "--alias", "candidate")["entry"]["to"] == 2
    rolled = cli_json("rollback", "ecg")
    assert rolled["version"] == 1 and rolled["entry"]["undoes"] == 2
    rc, out, _ = cli_text("rollback", "ecg")
    assert rc == 1  # nothing earlier than version 1
    history = cli_json("history", "ecg", "--alias", "active")["history"]
    assert [(h["from"], h["to"]) for h in history] == [(None, 1), (1, 2), (2, 1)]

    rc, _, err = cli_text("delete", "ecg", "1")
    assert rc == 1 and "refusing to delete ecg:1" in err and "active" in err
    rc, _, err = cli_text("delete", "ecg", "2")
    assert rc == 1 and "candidate" in err
    assert cli_json("unalias", "ecg", "candidate") == {
        "name": "ecg",
        "alias": "candidate",
        "removed": True,
    }
    assert cli_json("delete", "ecg", "2") == {"name": "ecg", "version": 2, "deleted": True}
    assert [v["version"] for v in cli_json("list", "ecg")["versions"]] == [1]

    # a tampered version: show --verify fails with the reason and the remedy
    r = redis.Redis.from_url(services.redis_url)
    r.set(f"{unique}:model:ecg:v:1:weights", b"\x00" * 64)
    rc, _, err = cli_text("show", "ecg:1", "--verify")
    assert rc == 1 and "tampered" in err
    rc, _, err = cli_text("show", "nope")
    assert rc == 1 and "no model nope" in err
    rc, _, err = cli_text("promote", "ecg", "x")
    assert rc == 1 and "invalid version" in err
    r.close()
