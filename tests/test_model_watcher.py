"""The model watcher in the background and the local model cache, on real valkey servers.

The serving loop's side (``RegistryModels.current()`` / ``poll()``, ``watcher.status()``, the
``/readyz`` logic) must never wait on Redis: here a PRIVATE valkey is frozen with SIGSTOP (as in
a network partition, connections hang instead of being refused) while the loop keeps asking.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from structlog.testing import capture_logs

from model.checkpoint import read_checkpoint_dir
from worker.dev.services import ValkeyServer, free_port
from worker.ops.http_server import Health
from worker.registry.cache import ModelCache
from worker.registry.connection import connect
from worker.registry.errors import CorruptVersionError
from worker.registry.loader import RegistryModels
from worker.registry.records import ModelVersion, sha256_hex
from worker.registry.store import ModelRegistry
from worker.registry.watcher import ActiveModelWatcher, watch_registry

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy_checkpoints"
CPU = torch.device("cpu")
TIMEOUT_S = 1.0  # the watchers' socket timeout here (the worker's default is 2 s)


# ----------------------------------------------------------------------------------- helpers


def weights_and_metadata(seed: int) -> tuple[bytes, dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    weights = save_tensors({"gmm.mu": torch.randn(2, 3, generator=g)})
    return weights, {"window_length": 8, "weights_sha256": sha256_hex(weights), "seed": seed}


def record(seed: int, version: int = 1, name: str = "ecg") -> ModelVersion:
    weights, metadata = weights_and_metadata(seed)
    return ModelVersion(name, version, metadata, weights, sha256_hex(weights), 1.0)


def publish(reg: ModelRegistry, seed: int, *, promote: bool) -> int:
    weights, metadata = weights_and_metadata(seed)
    return reg.publish("ecg", metadata, weights, promote=promote)


def tensors_loader(rec: ModelVersion) -> dict[str, torch.Tensor]:
    return load_tensors(rec.weights)


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check()`` until truthy (an event, bounded in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A private valkey: SIGSTOPping or stopping it cannot hurt other tests."""
    server = ValkeyServer(tmp_path / "valkey", "127.0.0.1", free_port())
    server.start(timeout_s=30)
    yield server
    pid = server.pid()
    if pid is not None:
        os.kill(pid, signal.SIGCONT)  # a stopped process ignores SIGTERM until continued
    server.stop()


# ------------------------------------------------------------------- no Redis on the hot path


def test_the_loop_never_waits_while_redis_hangs_and_the_thread_picks_up_promotions(
    valkey: ValkeyServer, unique: str
) -> None:
    reg = ModelRegistry(connect(valkey.url), unique)
    publish(reg, 1, promote=True)
    publish(reg, 2, promote=False)
    loaded_in: list[str] = []

    def loader(rec: ModelVersion) -> dict[str, torch.Tensor]:
        loaded_in.append(threading.current_thread().name)
        return tensors_loader(rec)

    watcher = ActiveModelWatcher(
        watch_registry(valkey.url, unique, timeout_s=TIMEOUT_S),
        "ecg",
        loader=loader,
        poll_interval_s=0.2,
    )
    models = RegistryModels(watcher, CPU)
    health = Health(stuck_after_s=60, assigned=1, registry_ok=lambda: watcher.status().reachable)
    try:
        first = wait_for(models.current)  # starts the thread
        assert torch.equal(first["gmm.mu"], tensors_loader(reg.get("ecg", 1))["gmm.mu"])
        health.model = "ecg:1"
        assert health.ready()[0] and health.ready()[1]["status"] == "ok"

        pid = valkey.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            slowest, calls, stopped_at = 0.0, 0, time.monotonic()
            # the loop's calls, until the watcher found Redis unreachable and then waited for at
            # least one more poll's full socket timeout (its age grows past 2 timeouts)
            while True:
                t = time.monotonic()
                swapped = models.poll()
                status = watcher.status()
                ready, detail = health.ready()
                slowest = max(slowest, time.monotonic() - t)
                calls += 1
                assert swapped is None and ready
                age = status.last_ok_age_s or 0.0
                if not status.reachable and age > 2 * TIMEOUT_S + 0.2:
                    break
                assert time.monotonic() - stopped_at < 30, "the watcher never noticed the hang"
                time.sleep(0.001)  # the loop's batches
            assert status.serving == "ecg:1" and status.source == "registry"
            assert "cannot reach Redis" in (status.error or "")
            assert detail["status"] == "degraded: registry unreachable, serving ecg:1"
            assert detail["registry_reachable"] is False
        finally:
            os.kill(pid, signal.SIGCONT)
        print(f"loop calls during the hang: {calls}, slowest {slowest * 1000:.2f} ms")
        assert calls > 100 and slowest < 0.1  # µs in practice; 0.1 s = slack for a busy CI

        reg.promote("ecg", 2)
        second = wait_for(models.poll)  # the background thread saw the promotion and loaded it
        assert torch.equal(second["gmm.mu"], tensors_loader(reg.get("ecg", 2))["gmm.mu"])
        assert watcher.status().reachable and watcher.status().serving == "ecg:2"
        assert health.ready()[1]["status"] == "ok" and models.poll() is None
        assert loaded_in == ["seq2gmm-watch-ecg"] * 2  # never the caller's thread
    finally:
        watcher.close()
        reg.close()


def test_readiness_while_the_registry_is_unreachable() -> None:
    reachable = {"ok": False}
    health = Health(stuck_after_s=60, registry_ok=lambda: reachable["ok"])
    ready, detail = health.ready()
    assert not ready and detail["status"] == "not ready: no model loaded, registry unreachable"
    health.model, health.assigned = "ecg:3", 2
    ready, detail = health.ready()
    assert ready and detail["status"] == "degraded: registry unreachable, serving ecg:3"
    reachable["ok"] = True
    assert health.ready() == (True, {**detail, "status": "ok", "registry_reachable": True})
    health.last_tick -= 120  # a stuck loop: not live, not ready, whatever Redis does
    assert not health.live()[0] and not health.ready()[0]


# --------------------------------------------------------------------------- the local cache


def test_the_cache_round_trips_and_replaces_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ModelCache(tmp_path, "prefix")
    assert cache.load("ecg") is None  # nothing cached yet
    one = record(1, version=1)
    folder = cache.save(one)
    assert folder == tmp_path / "prefix" / "ecg"
    back = cache.load("ecg")
    assert back == one  # version, metadata, weights, sha256, created_at

    two = record(2, version=2)
    real_replace = os.replace

    def crash_on_manifest(src: Any, dst: Any) -> None:
        if str(dst).endswith("manifest.json"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        cache.save(two)
    monkeypatch.undo()
    assert cache.load("ecg") == one  # a failed write leaves the previous copy whole
    cache.save(two)
    assert cache.load("ecg") == two
    assert [p.name for p in folder.glob("weights-*")] == [f"weights-{two.sha256[:16]}.safetensors"]
    assert not list(folder.glob(".*tmp"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("weights_byte", "fail the sha256 of its manifest"),
        ("weights_short", "bytes, not"),
        ("manifest_sha", "fail the sha256 of its manifest"),
        ("metadata_sha", "fail the sha256 of its metadata"),
        ("manifest_json", "manifest is unreadable"),
        ("escape", "leaves the cache directory"),
        ("weights_gone", "weights file is unreadable"),
    ],
)
def test_a_tampered_cache_is_refused_with_a_clear_error(
    tmp_path: Path, tamper: str, expected: str
) -> None:
    cache = ModelCache(tmp_path, "prefix")
    folder = cache.save(record(1))
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    weights_path = folder / manifest["weights_file"]
    weights = bytearray(weights_path.read_bytes())
    if tamper == "weights_byte":
        weights[-1] ^= 0x01
        weights_path.write_bytes(bytes(weights))
    elif tamper == "weights_short":
        weights_path.write_bytes(bytes(weights[:-1]))
    elif tamper == "weights_gone":
        weights_path.unlink()
    elif tamper == "manifest_json":
        manifest_path.write_text("{not json")
    else:
        if tamper == "manifest_sha":
            manifest["sha256"] = "0" * 64
        elif tamper == "metadata_sha":
            manifest["metadata"]["weights_sha256"] = "0" * 64
        else:
            manifest["weights_file"] = "../../../etc/passwd"
        manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptVersionError, match=expected) as exc:
        cache.load("ecg")
    assert f"delete {folder}" in str(exc.value) and "not loaded" in str(exc.value)


def test_a_watcher_started_with_redis_unreachable_refuses_a_tampered_cache(
    tmp_path: Path,
) -> None:
    cache = ModelCache(tmp_path, "p")
    folder = cache.save(record(1))
    (folder / json.loads((folder / "manifest.json").read_text())["weights_file"]).write_bytes(
        save_tensors({"gmm.mu": torch.zeros(2, 3)})  # well-formed, but not the cached weights
    )
    dead = watch_registry(f"redis://127.0.0.1:{free_port()}/0", "p", timeout_s=TIMEOUT_S)
    watcher = ActiveModelWatcher(
        dead, "ecg", loader=tensors_loader, poll_interval_s=0.2, cache=cache
    )
    with capture_logs() as logs:
        result = watcher.check()
    assert watcher.current() is None and not watcher.status().reachable
    assert "cannot reach Redis" in str(result.error)
    refused = [e for e in logs if e["event"] == "model_cache_refused"]
    assert len(refused) == 1 and "sha256" in refused[0]["error"]
    dead.close()


def test_a_worker_started_with_redis_unreachable_serves_its_cached_version(
    valkey: ValkeyServer, unique: str, tmp_path: Path
) -> None:
    """The real detector loader: cached by one worker, served by the next one while Redis is
    down, then replaced by the registry's active version once Redis is back."""
    metadata, weights = read_checkpoint_dir(FIXTURES / "seq2gmm")
    windows = list(np.load(FIXTURES / "windows.npy"))
    expected = np.load(FIXTURES / "seq2gmm.scores.npy")
    reg = ModelRegistry(connect(valkey.url), unique)
    reg.publish("ecg", metadata, weights, promote=True)
    cache = ModelCache(tmp_path / "cache", unique)

    def worker_models() -> tuple[ActiveModelWatcher[Any], RegistryModels]:
        watcher = ActiveModelWatcher(
            watch_registry(valkey.url, unique, timeout_s=TIMEOUT_S),
            "ecg",
            loader=RegistryModels.loader(CPU),
            poll_interval_s=0.2,
            cache=cache,
        )
        return watcher, RegistryModels(watcher, CPU)

    first, first_models = worker_models()
    with first:
        assert wait_for(first_models.current).version == 1
        wait_for(lambda: (cache.path("ecg") / "manifest.json").is_file())
    reg.close()
    valkey.stop()  # Redis down: connections refused

    second, second_models = worker_models()
    try:
        with capture_logs() as logs:
            second.start(wait_s=10)
            served = wait_for(second_models.current)
        assert (served.name, served.version) == ("ecg", 1)
        energies = [w.energy for w in served.score(windows)]
        np.testing.assert_allclose(energies, expected, rtol=1e-5, atol=1e-9)
        status = second.status()
        assert (status.serving, status.source, status.reachable) == ("ecg:1", "cache", False)
        cached = [e for e in logs if e["event"] == "serving_cached_model"]
        assert len(cached) == 1 and "cannot reach Redis" in cached[0]["reason"]
        health = Health(stuck_after_s=60, assigned=1, model="ecg:1")
        health.registry_ok = lambda: second.status().reachable
        assert health.ready()[1]["status"] == "degraded: registry unreachable, serving ecg:1"

        valkey.start(timeout_s=30)  # Redis back (same port, its data kept in the AOF)
        wait_for(lambda: second.status().source == "registry")  # the same weights: confirmed
        assert second_models.poll() is None and health.ready()[1]["status"] == "ok"
        with ModelRegistry(connect(valkey.url), unique) as back:
            v2 = back.publish("ecg", {**metadata, "note": "v2"}, weights, promote=True)
        newer = wait_for(second_models.poll)
        assert (newer.name, newer.version) == ("ecg", v2)
        manifest = cache.path("ecg") / "manifest.json"
        wait_for(lambda: json.loads(manifest.read_text())["version"] == v2)  # written after
    finally:
        second.close()
