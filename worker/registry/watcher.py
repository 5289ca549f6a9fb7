"""Hot reload: keep a verified, loaded local copy of a model's active version.

:class:`ActiveModelWatcher` polls the alias pointer (one ``HGET``) every ``poll_interval_s`` and
drains pub/sub hints between polls, so a promotion is seen at the latest by the next poll even
when the hint was lost. It swaps only after the new version was fetched, verified (sha256) and
loaded; on any failure it keeps serving the current one. :meth:`ActiveModelWatcher.start` runs
all of that (every Redis call, every load) in a background thread: the streaming loop only
reads :meth:`~ActiveModelWatcher.current` and :meth:`~ActiveModelWatcher.status`, which do no
I/O, so a hung or unreachable Redis never slows scoring. With a
:class:`~worker.registry.cache.ModelCache`, each version it swaps in is kept on disk, and a
watcher that finds Redis unreachable with nothing to serve loads that copy instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import redis
import structlog

from model.errors import Seq2GMMError
from worker.errors import ConfigError, ServiceError
from worker.registry.cache import ModelCache
from worker.registry.connection import connect, describe_url
from worker.registry.errors import CorruptVersionError, ModelLoadError
from worker.registry.reader import RegistryReader
from worker.registry.records import ACTIVE, ModelVersion, validate_alias, validate_name

T = TypeVar("T")
log = structlog.get_logger()

#: socket timeout of the watcher's own Redis connection: how long a hung Redis holds the
#: background thread (never the serving loop) before the registry is reported unreachable
WATCH_TIMEOUT_S = 2.0
#: how often the background thread drains pub/sub hints (and reads the pointer when due)
HINT_TICK_S = 0.1


def watch_registry(url: str, prefix: str, *, timeout_s: float = WATCH_TIMEOUT_S) -> RegistryReader:
    """A registry reader for a watcher: its own connection, with a short socket timeout."""
    return RegistryReader(connect(url, timeout_s=timeout_s), prefix, where=describe_url(url))


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


@dataclass(frozen=True)
class WatcherStatus:
    """Where the watcher stands, for probes and logs (read without I/O)."""

    serving: str | None  # "NAME:V", or None while nothing is served
    source: str | None  # "registry", or "cache" while the local copy is not yet confirmed
    reachable: bool  # the latest read of the pointer got an answer from Redis
    last_ok_age_s: float | None  # seconds since that answer (None: never)
    error: str | None  # why the registry's active version is not served (None: it is)
    load_failures: int = 0  # versions refused so far (failed verification or loading)


class ActiveModelWatcher(Generic[T]):
    """Serve the version an alias (default ``active``) points at, reloading it when it moves.

    :meth:`check` drains pub/sub hints without blocking and reads the pointer (one HGET) only
    when a hint arrived or ``poll_interval_s`` passed since the last read, so a promotion is
    seen within one poll interval even when the hint is lost. A new version is swapped in only
    after it was fetched, verified (sha256) and loaded by ``loader``; on any failure the old
    one stays in service and the error is returned and logged. A version that failed
    verification or loading is not retried until the pointer moves (or ``refresh()``).

    :meth:`start` calls :meth:`check` from a background daemon thread every ``HINT_TICK_S``;
    :meth:`current` and :meth:`status` only read what it published last (no I/O, no lock held
    across I/O), so they are what a serving loop calls. With ``cache``, every version swapped
    in is written to the local cache, and while nothing is served and Redis is unreachable the
    cached version is loaded (verified again) and served until the registry answers.
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
        cache: ModelCache | None = None,
    ) -> None:
        if poll_interval_s <= 0:
            raise ConfigError("poll_interval_s must be positive")
        self.registry = registry
        self.name = validate_name(name)
        self.alias = validate_alias(alias)
        self.loader = loader
        self.poll_interval_s = poll_interval_s
        self.subscribe = subscribe
        self.cache = cache
        self._clock = clock
        self._current: LoadedVersion[T] | None = None
        self._from_cache = False  # the served copy came from the cache, unconfirmed by Redis
        self._cache_tried = False
        self._pointer: int | None = None
        self._last_poll: float | None = None
        self._last_ok: float | None = None  # when Redis last answered a pointer read
        self._pubsub: Any = None
        self._refused: tuple[int, Seq2GMMError] | None = None
        self._poll_error: Seq2GMMError | None = None
        self._unreachable = False
        self._load_failures = 0  # refused versions and cached copies, for the metrics
        self._check_lock = threading.Lock()  # one check at a time (thread or direct caller)
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._first_check = threading.Event()
        self._log = structlog.get_logger(model=name, alias=alias)  # lazy: uses the config in force

    # -- public -----------------------------------------------------------------------------
    def current(self) -> LoadedVersion[T] | None:
        """The model served now (None before the alias was ever set or loaded). No I/O."""
        return self._current

    def pointer(self) -> int | None:
        """The alias's version as last read from Redis (None: unset, or never read). No I/O."""
        return self._pointer

    def status(self) -> WatcherStatus:
        """Reachability and what is served, from the last check (no I/O: safe in probes)."""
        current, last_ok = self._current, self._last_ok
        error = self._pending_error()
        return WatcherStatus(
            serving=current.record.ref if current is not None else None,
            source=None if current is None else "cache" if self._from_cache else "registry",
            reachable=last_ok is not None and not self._unreachable,
            last_ok_age_s=None if last_ok is None else max(0.0, self._clock() - last_ok),
            error=str(error) if error is not None else None,
            load_failures=self._load_failures,
        )

    def start(self, *, wait_s: float | None = None) -> ActiveModelWatcher[T]:
        """Check in a background daemon thread from now on (idempotent).

        ``wait_s``: wait up to that long for the first check (a start with a model in hand);
        the thread's checks never block the caller afterwards.
        """
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"seq2gmm-watch-{self.name}", daemon=True
                )
                self._thread.start()
        if wait_s is not None:
            self._first_check.wait(wait_s)
        return self

    def check(self, *, force: bool = False) -> WatchResult:
        """Pick up a promotion if one happened; never raises for registry or Redis trouble.

        Does Redis I/O: the background thread of :meth:`start` calls it (or a caller that did
        not start the thread, e.g. a test driving the clock)."""
        with self._check_lock:
            return self._check(force)

    def refresh(self) -> WatchResult:
        """Read the pointer now (and retry a refused version)."""
        return self.check(force=True)

    def close(self, timeout_s: float = WATCH_TIMEOUT_S + 1.0) -> None:
        """Stop the background thread (waiting up to ``timeout_s`` for a check in flight)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        if thread is None or not thread.is_alive():
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

    # -- the check --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.check()
                except Exception as exc:  # a bug must not end hot reload silently
                    self._log.exception("model_watcher_failed", error=str(exc))
                self._first_check.set()
                self._stop.wait(HINT_TICK_S)
        finally:
            self._close_pubsub()

    def _check(self, force: bool) -> WatchResult:
        now = self._clock()
        due = force or self._last_poll is None or now - self._last_poll >= self.poll_interval_s
        # subscribe before the read while Redis answers (no hint can slip between them); else
        # only after a read succeeded: a hung server would hold the thread twice per poll
        answering = self._last_ok is not None and not self._unreachable
        hinted = self._drain_hints(resubscribe=due and answering)
        if not (due or hinted):
            return self._result(changed=False, polled=False, error=self._pending_error())
        self._last_poll = now
        try:
            pointer = self.registry.resolve(self.name, self.alias)
        except Seq2GMMError as exc:
            return self._pointer_unreadable(exc)
        self._answered()
        if not answering:
            self._drain_hints(resubscribe=True)
        self._pointer = pointer
        if pointer is not None and pointer == self._serving() and self._from_cache:
            return self._confirm_cached(pointer)
        if pointer is None or pointer == self._serving():
            self._refused = None
            return self._result(changed=False, polled=True)
        if self._refused is not None and self._refused[0] == pointer and not force:
            return self._result(changed=False, polled=True, error=self._refused[1])
        return self._load(pointer)

    def _pointer_unreadable(self, exc: Seq2GMMError) -> WatchResult:
        if isinstance(exc, ServiceError):
            self._unreachable = True
            self._serve_cached(exc)
        else:  # Redis answered, with a pointer that is no version: reachable all the same
            self._last_ok, self._unreachable = self._clock(), False
        if self._poll_error is None:
            self._log.warning("model_pointer_unreadable", error=str(exc), serving=self._serving())
        self._poll_error = exc
        return self._result(changed=False, polled=True, error=exc)

    def _answered(self) -> None:
        """Redis answered a pointer read: reachable (again)."""
        self._last_ok = self._clock()
        self._unreachable = False
        if self._poll_error is not None:
            self._log.info("model_pointer_readable_again", serving=self._serving())
            self._poll_error = None

    # -- internals --------------------------------------------------------------------------
    def _serving(self) -> int | None:
        current = self._current
        return current.version if current is not None else None

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
            if isinstance(exc, ServiceError):
                self._unreachable, self._poll_error = True, exc
                self._serve_cached(exc)
            self._log.warning(
                "model_fetch_failed", version=version, error=str(exc), serving=self._serving()
            )
            return self._result(changed=False, polled=True, error=exc)
        try:
            model = self._build(record)
        except Seq2GMMError as err:
            return self._refuse(version, err)
        previous = self._serving()
        self._current = LoadedVersion(record=record, model=model, loaded_at=time.time())
        self._from_cache = False
        self._refused = None
        self._log.info("model_swapped", version=version, previous=previous, sha256=record.sha256)
        self._save_cached(record)
        return self._result(changed=True, polled=True)

    def _build(self, record: ModelVersion) -> T:
        """``loader(record)``; any failure becomes a Seq2GMMError that says what to do."""
        try:
            return self.loader(record)
        except Seq2GMMError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load {record.ref} ({type(exc).__name__}: {exc}); this worker keeps"
                f" serving its current model: promote a version it can load, or upgrade it"
            ) from exc

    def _refuse(self, version: int, exc: Seq2GMMError) -> WatchResult:
        self._refused = (version, exc)
        self._load_failures += 1
        self._log.warning(
            "model_version_refused",
            version=version,
            error=str(exc),
            serving=self._serving(),
        )
        return self._result(changed=False, polled=True, error=exc)

    # -- the local cache --------------------------------------------------------------------
    def _serve_cached(self, outage: Seq2GMMError) -> None:
        """Nothing served and Redis unreachable: load the cached copy (once per watcher)."""
        if self.cache is None or self._current is not None or self._cache_tried:
            return
        self._cache_tried = True
        try:
            record = self.cache.load(self.name)
            if record is None:
                self._log.warning("model_cache_empty", path=str(self.cache.path(self.name)))
                return
            model = self._build(record)
        except Seq2GMMError as exc:
            self._load_failures += 1
            self._log.error("model_cache_refused", error=str(exc))
            return
        self._current = LoadedVersion(record=record, model=model, loaded_at=time.time())
        self._from_cache = True
        self._log.warning(
            "serving_cached_model",
            version=record.version,
            sha256=record.sha256,
            path=str(self.cache.path(self.name)),
            reason=str(outage),
        )

    def _confirm_cached(self, version: int) -> WatchResult:
        """The pointer names the cached version: keep it if Redis holds the same weights."""
        current = self._current
        assert current is not None
        try:
            same = self.registry.info(self.name, version).sha256 == current.record.sha256
        except ServiceError as exc:
            return self._pointer_unreadable(exc)
        except Seq2GMMError:
            same = False  # the version vanished or its record is unreadable: fetch to know
        if not same:
            self._log.warning("model_cache_differs_from_registry", version=version)
            return self._load(version)
        self._from_cache = False
        self._log.info("model_cache_confirmed", version=version)
        return self._result(changed=False, polled=True)

    def _save_cached(self, record: ModelVersion) -> None:
        if self.cache is None:
            return
        try:
            self.cache.save(record)
        except (OSError, Seq2GMMError) as exc:  # serving goes on without a local copy
            self._log.warning(
                "model_cache_write_failed",
                error=f"{type(exc).__name__}: {exc}",
                hint="set SEQ2GMM_WORKER__MODEL_CACHE_DIR to a writable directory",
            )

    # -- pub/sub hints ----------------------------------------------------------------------
    def _drain_hints(self, *, resubscribe: bool) -> bool:
        """True when a hint arrived (or hints may have been missed): read the pointer now."""
        if not self.subscribe:
            return False
        if self._pubsub is None:
            if not resubscribe:
                return False
            pubsub = self.registry.client.pubsub()
            try:
                pubsub.subscribe(self.registry.channel(self.name))
            except (redis.RedisError, OSError) as exc:
                self._log.debug("model_hints_unavailable", error=str(exc))
                with suppress(redis.RedisError, OSError):
                    pubsub.close()
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
