"""Hot reload: keep a verified, loaded local copy of a model's active version.

:class:`ActiveModelWatcher` polls the alias pointer (one ``HGET``) every ``poll_interval_s`` and
drains pub/sub hints between polls without blocking, so a promotion is seen at the latest by
the next poll even when the hint was lost. It swaps only after the new version was fetched,
verified (sha256) and loaded; on any failure it keeps serving the current one. The streaming
worker calls :meth:`ActiveModelWatcher.check` between batches, never inside one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import redis
import structlog

from model.errors import Seq2GMMError
from worker.errors import ConfigError
from worker.registry.errors import CorruptVersionError, ModelLoadError
from worker.registry.reader import RegistryReader
from worker.registry.records import ACTIVE, ModelVersion, validate_alias, validate_name

T = TypeVar("T")
log = structlog.get_logger()


# ------------------------------------------------------------------------------ hot reload


@dataclass(frozen=True)
class LoadedVersion(Generic[T]):
    """The local copy a worker serves: the verified version and the loaded object."""

    record: ModelVersion
    model: T
    loaded_at: float

    @property
    def version(self) -> int:
        return self.record.version


@dataclass(frozen=True)
class WatchResult:
    """What one :meth:`ActiveModelWatcher.check` did."""

    changed: bool  # a new version was loaded and is served from now on
    serving: int | None  # the version served after the check
    pointer: int | None  # the alias's version as last read from Redis
    polled: bool  # the pointer was read during this check
    error: Seq2GMMError | None = None  # why the pointer's version is not served


class ActiveModelWatcher(Generic[T]):
    """Serve the version an alias (default ``active``) points at, reloading it when it moves.

    :meth:`check` is cheap: it drains pub/sub hints without blocking and reads the pointer (one
    HGET) only when a hint arrived or ``poll_interval_s`` passed since the last read, so a
    promotion is seen within one poll interval even when the hint is lost. A new version is
    swapped in only after it was fetched, verified (sha256) and loaded by ``loader``; on any
    failure the old one stays in service and the error is returned and logged. A version that
    failed verification or loading is not retried until the pointer moves (or ``refresh()``).

    Not thread-safe: call :meth:`check` from the serving loop, between batches.
    """

    def __init__(
        self,
        registry: RegistryReader,
        name: str,
        *,
        loader: Callable[[ModelVersion], T],
        poll_interval_s: float = 5.0,
        alias: str = ACTIVE,
        subscribe: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_interval_s <= 0:
            raise ConfigError("poll_interval_s must be positive")
        self.registry = registry
        self.name = validate_name(name)
        self.alias = validate_alias(alias)
        self.loader = loader
        self.poll_interval_s = poll_interval_s
        self.subscribe = subscribe
        self._clock = clock
        self._current: LoadedVersion[T] | None = None
        self._pointer: int | None = None
        self._last_poll: float | None = None
        self._pubsub: Any = None
        self._refused: tuple[int, Seq2GMMError] | None = None
        self._poll_error: Seq2GMMError | None = None
        self._log = structlog.get_logger(model=name, alias=alias)  # lazy: uses the config in force

    # -- public -----------------------------------------------------------------------------
    def current(self) -> LoadedVersion[T] | None:
        """The model served now (None before the alias was ever set or loaded)."""
        return self._current

    def check(self, *, force: bool = False) -> WatchResult:
        """Pick up a promotion if one happened; never raises for registry or Redis trouble."""
        now = self._clock()
        due = force or self._last_poll is None or now - self._last_poll >= self.poll_interval_s
        hinted = self._drain_hints(resubscribe=due)
        if not (due or hinted):
            return self._result(changed=False, polled=False, error=self._pending_error())
        self._last_poll = now
        try:
            pointer = self.registry.resolve(self.name, self.alias)
        except Seq2GMMError as exc:
            if self._poll_error is None:
                self._log.warning(
                    "model_pointer_unreadable", error=str(exc), serving=self._serving()
                )
            self._poll_error = exc
            return self._result(changed=False, polled=True, error=exc)
        if self._poll_error is not None:
            self._log.info("model_pointer_readable_again")
            self._poll_error = None
        self._pointer = pointer
        if pointer is None or pointer == self._serving():
            self._refused = None
            return self._result(changed=False, polled=True)
        if self._refused is not None and self._refused[0] == pointer and not force:
            return self._result(changed=False, polled=True, error=self._refused[1])
        return self._load(pointer)

    def refresh(self) -> WatchResult:
        """Read the pointer now (and retry a refused version)."""
        return self.check(force=True)

    def close(self) -> None:
        self._close_pubsub()

    def __enter__(self) -> ActiveModelWatcher[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------
    def _serving(self) -> int | None:
        return self._current.version if self._current is not None else None

    def _pending_error(self) -> Seq2GMMError | None:
        if self._poll_error is not None:
            return self._poll_error
        if self._refused is not None and self._refused[0] == self._pointer:
            return self._refused[1]
        return None

    def _result(
        self, *, changed: bool, polled: bool, error: Seq2GMMError | None = None
    ) -> WatchResult:
        return WatchResult(
            changed=changed,
            serving=self._serving(),
            pointer=self._pointer,
            polled=polled,
            error=error,
        )

    def _load(self, version: int) -> WatchResult:
        try:
            record = self.registry.get(self.name, version)
        except CorruptVersionError as exc:
            return self._refuse(version, exc)
        except Seq2GMMError as exc:  # Redis trouble or the version vanished: retry next poll
            self._log.warning(
                "model_fetch_failed", version=version, error=str(exc), serving=self._serving()
            )
            return self._result(changed=False, polled=True, error=exc)
        try:
            model = self.loader(record)
        except Exception as exc:
            err = (
                exc
                if isinstance(exc, Seq2GMMError)
                else ModelLoadError(
                    f"cannot load {record.ref} ({type(exc).__name__}: {exc}); this worker keeps"
                    f" serving its current model: promote a version it can load, or upgrade it"
                )
            )
            return self._refuse(version, err)
        previous = self._serving()
        self._current = LoadedVersion(record=record, model=model, loaded_at=time.time())
        self._refused = None
        self._log.info("model_swapped", version=version, previous=previous, sha256=record.sha256)
        return self._result(changed=True, polled=True)

    def _refuse(self, version: int, exc: Seq2GMMError) -> WatchResult:
        self._refused = (version, exc)
        self._log.warning(
            "model_version_refused",
            version=version,
            error=str(exc),
            serving=self._serving(),
        )
        return self._result(changed=False, polled=True, error=exc)

    def _drain_hints(self, *, resubscribe: bool) -> bool:
        """True when a hint arrived (or hints may have been missed): read the pointer now."""
        if not self.subscribe:
            return False
        if self._pubsub is None:
            if not resubscribe:
                return False
            try:
                pubsub = self.registry.client.pubsub()
                pubsub.subscribe(self.registry.channel(self.name))
            except redis.RedisError as exc:
                self._log.debug("model_hints_unavailable", error=str(exc))
                return False
            self._pubsub = pubsub
            return False  # this check polls anyway (resubscribe is only asked when due)
        hinted = False
        try:
            for _ in range(1000):
                msg = self._pubsub.get_message(timeout=0.0)
                if msg is None:
                    break
                if msg.get("type") == "message":
                    hinted = True
        except (redis.RedisError, OSError) as exc:
            self._log.debug("model_hints_lost", error=str(exc))
            self._close_pubsub()
            return True  # hints may have been dropped while disconnected: poll now
        return hinted

    def _close_pubsub(self) -> None:
        if self._pubsub is not None:
            with suppress(redis.RedisError, OSError):
                self._pubsub.close()
            self._pubsub = None
