"""Reading the registry: listings, alias pointers, history and verified versions.

:class:`RegistryReader` is everything a worker needs (``resolve``, ``get``, the pub/sub
``channel``) and the base of :class:`~worker.registry.store.ModelRegistry`, which adds publish,
promotion, rollback and delete. It also owns the key layout (see the README section "Model
registry"). :meth:`RegistryReader.get` checks the weights' size and sha256 before anything is
deserialised; nothing here ever unpickles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import redis

from worker.errors import ConfigError
from worker.registry.connection import as_text, connect, describe_url, service_errors
from worker.registry.errors import (
    CorruptVersionError,
    InvalidNameError,
    ModelNotFoundError,
    RegistryError,
)
from worker.registry.records import (
    ACTIVE,
    CHECKPOINT_SHA_KEY,
    HistoryEntry,
    ModelSummary,
    ModelVersion,
    VersionInfo,
    sha256_hex,
    validate_alias,
    validate_name,
    validate_version,
)


class RegistryReader:
    """The read side of a registry of named models stored under ``prefix``.

    ``client`` must be binary-safe (``decode_responses=False``); use
    :func:`~worker.registry.connection.connect` or :meth:`from_url`. Methods raise
    :class:`~worker.registry.errors.RegistryError` subclasses for registry problems and
    :class:`~worker.errors.ServiceError` when Redis is unreachable.
    """

    def __init__(self, client: redis.Redis, prefix: str, *, where: str | None = None) -> None:
        if client.get_encoder().decode_responses:
            raise ConfigError(
                "the registry needs a binary-safe Redis client (decode_responses=False);"
                " create it with worker.registry.connection.connect(url)"
            )
        if not prefix or not re.match(r"^[\w.:-]+$", prefix):
            raise ConfigError(
                f"invalid registry key prefix {prefix!r}: set SEQ2GMM_REDIS__KEY_PREFIX to"
                " letters, digits, '_', '.', ':' or '-'"
            )
        self.client = client
        self.prefix = prefix
        self.where = where or self._describe_client(client)

    @classmethod
    def from_url(cls, url: str, prefix: str) -> Self:
        """A registry on the Redis at ``url`` (see :func:`~worker.registry.connection.connect`)."""
        return cls(connect(url), prefix, where=describe_url(url))

    @staticmethod
    def _describe_client(client: redis.Redis) -> str:
        kw = client.connection_pool.connection_kwargs
        if "path" in kw:
            return f"unix://{kw['path']}"
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- key layout -----------------------------------------------------------------------
    def models_key(self) -> str:
        return f"{self.prefix}:models"

    def model_key(self, name: str) -> str:
        return f"{self.prefix}:model:{name}"

    def seq_key(self, name: str) -> str:
        return f"{self.model_key(name)}:seq"

    def versions_key(self, name: str) -> str:
        return f"{self.model_key(name)}:versions"

    def aliases_key(self, name: str) -> str:
        return f"{self.model_key(name)}:aliases"

    def history_key(self, name: str) -> str:
        return f"{self.model_key(name)}:history"

    def gates_key(self, name: str) -> str:
        """The decisions of ``seq2gmm retrain``'s gate (JSON entries, oldest first)."""
        return f"{self.model_key(name)}:gates"

    def meta_key(self, name: str, version: int) -> str:
        return f"{self.model_key(name)}:v:{version}:meta"

    def weights_key(self, name: str, version: int) -> str:
        return f"{self.model_key(name)}:v:{version}:weights"

    def staging_key(self, name: str, token: str) -> str:
        return f"{self.model_key(name)}:staging:{token}"

    def channel(self, name: str) -> str:
        """The pub/sub channel that carries a hint (the history entry) on every alias move."""
        return f"{self.model_key(name)}:events"

    # -- read -----------------------------------------------------------------------------
    @service_errors
    def list_models(self) -> list[ModelSummary]:
        names = sorted(as_text(n) for n in self.client.smembers(self.models_key()))
        if not names:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.zcard(self.versions_key(n))
                pipe.zrevrange(self.versions_key(n), 0, 0)
                pipe.hgetall(self.aliases_key(n))
            raw = pipe.execute()
        out = []
        for i, n in enumerate(names):
            count, top, aliases = raw[3 * i : 3 * i + 3]
            out.append(
                ModelSummary(
                    name=n,
                    versions=int(count),
                    latest=int(top[0]) if top else None,
                    aliases=_aliases(aliases),
                )
            )
        return out

    @service_errors
    def list_versions(self, name: str) -> list[VersionInfo]:
        """Committed versions, oldest first (staging uploads are never listed)."""
        validate_name(name)
        versions = [int(as_text(v)) for v in self.client.zrange(self.versions_key(name), 0, -1)]
        aliases = self.aliases(name)
        if not versions:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for v in versions:
                pipe.hgetall(self.meta_key(name, v))
            metas = pipe.execute()
        return [self._info(name, v, m, aliases) for v, m in zip(versions, metas, strict=True) if m]

    def _info(
        self, name: str, version: int, meta: Mapping[Any, Any], aliases: Mapping[str, int]
    ) -> VersionInfo:
        holders = tuple(sorted(a for a, v in aliases.items() if v == version))
        created = _float(meta.get(b"created_at"))
        try:
            record = json.loads(meta[b"record"])
            if not isinstance(record, dict) or not isinstance(record.get("metadata"), dict):
                raise ValueError("not an object")
            return VersionInfo(
                name=name,
                version=version,
                sha256=str(record["sha256"]),
                size=int(record["size"]),
                created_at=created,
                metadata=record["metadata"],
                aliases=holders,
                publisher=record.get("publisher") or {},
            )
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            return VersionInfo(
                name=name,
                version=version,
                sha256="",
                size=0,
                created_at=created,
                metadata={},
                aliases=holders,
                problem=f"unreadable record ({type(exc).__name__}: {exc})",
            )

    @service_errors
    def info(self, name: str, version: int) -> VersionInfo:
        """One version's description (no weights, no verification)."""
        validate_name(name)
        version = validate_version(version)
        meta = self.client.hgetall(self.meta_key(name, version))
        if not meta:
            raise self._not_found(name, version)
        return self._info(name, version, meta, self.aliases(name))

    @service_errors
    def resolve(self, name: str, alias: str = ACTIVE) -> int | None:
        """The version ``alias`` points at, or None. One HGET: cheap enough to poll."""
        validate_name(name)
        validate_alias(alias)
        raw = self.client.hget(self.aliases_key(name), alias)
        if raw is None:
            return None
        try:
            return validate_version(as_text(raw))
        except InvalidNameError:
            raise RegistryError(
                f"the {alias} pointer of {name} holds no version number (it was written outside"
                f" the registry); repair it with `seq2gmm models promote {name} VERSION`"
            ) from None

    @service_errors
    def aliases(self, name: str) -> dict[str, int]:
        validate_name(name)
        return _aliases(self.client.hgetall(self.aliases_key(name)))

    @service_errors
    def history(self, name: str, *, alias: str | None = None) -> list[HistoryEntry]:
        """Every alias move of ``name``, oldest first (optionally of one alias only)."""
        validate_name(name)
        entries = [
            HistoryEntry.from_json(r) for r in self.client.lrange(self.history_key(name), 0, -1)
        ]
        return [e for e in entries if alias is None or e.alias == alias]

    @service_errors
    @service_errors
    def gate_decisions(self, name: str) -> list[dict[str, Any]]:
        """The retraining gate's recorded decisions on ``name``, oldest first (JSON only)."""
        validate_name(name)
        return [json.loads(r) for r in self.client.lrange(self.gates_key(name), 0, -1)]

    def get(
        self, name: str, version: int | None = None, *, alias: str | None = None
    ) -> ModelVersion:
        """A verified version: ``version`` if given, else the one ``alias`` (default active)
        points at. Raises CorruptVersionError when the bytes fail their sha256; nothing is
        deserialised here, and never with pickle."""
        validate_name(name)
        if version is not None and alias is not None:
            raise RegistryError("give a version or an alias, not both")
        if version is not None:
            return self._fetch(name, validate_version(version))
        alias = validate_alias(alias or ACTIVE)
        for _ in range(3):  # the alias may move between the pointer read and the fetch
            target = self.resolve(name, alias)
            if target is None:
                raise self._no_alias(name, alias)
            try:
                return self._fetch(name, target)
            except ModelNotFoundError:
                if self.resolve(name, alias) == target:
                    raise
        raise RegistryError(f"{name}:{alias} kept moving while it was read; try again")

    def _fetch(self, name: str, version: int) -> ModelVersion:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.meta_key(name, version))
            pipe.get(self.weights_key(name, version))
            meta, weights = pipe.execute()
        if not meta:
            raise self._not_found(name, version)
        ref = f"{name}:{version}"
        advice = (
            f"it was not loaded; publish the model again (a new version), promote that one, then"
            f" delete this one with `seq2gmm models delete {name} {version}`"
        )
        if weights is None:
            raise CorruptVersionError(f"{ref} has metadata but no weights in Redis: {advice}")
        try:
            record = json.loads(meta[b"record"])
            expected = str(record["sha256"])
            size = int(record["size"])
            metadata = record["metadata"]
            if not isinstance(metadata, dict):
                raise TypeError("metadata is not an object")
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise CorruptVersionError(
                f"the stored record of {ref} is unreadable ({type(exc).__name__}: {exc}): {advice}"
            ) from None
        if len(weights) != size:
            raise CorruptVersionError(
                f"the weights of {ref} have {len(weights)} bytes, the record says {size}: the"
                f" stored version is corrupt or was tampered with; {advice}"
            )
        actual = sha256_hex(weights)
        if actual != expected:
            raise CorruptVersionError(
                f"the weights of {ref} fail their sha256 check (expected {expected[:16]}…, got"
                f" {actual[:16]}…): the stored version is corrupt or was tampered with; {advice}"
            )
        declared = metadata.get(CHECKPOINT_SHA_KEY)
        if declared is not None and declared != actual:
            raise CorruptVersionError(
                f"the metadata of {ref} names other weights ({CHECKPOINT_SHA_KEY}"
                f" {str(declared)[:16]}…) than the ones stored: the record was tampered with;"
                f" {advice}"
            )
        return ModelVersion(
            name=name,
            version=version,
            metadata=metadata,
            weights=weights,
            sha256=actual,
            created_at=_float(meta.get(b"created_at")),
        )

    def _not_found(self, name: str, version: int) -> ModelNotFoundError:
        return ModelNotFoundError(
            f"{name} has no version {version}; see the versions with `seq2gmm models list {name}`"
        )

    def _no_alias(self, name: str, alias: str) -> ModelNotFoundError:
        return ModelNotFoundError(
            f"{name} has no {alias} version; publish one with `seq2gmm models publish DIR --name"
            f" {name}` and point the alias at it with `seq2gmm models promote {name} VERSION"
            + ("" if alias == ACTIVE else f" --alias {alias}")
            + "`"
        )


def _aliases(raw: Mapping[Any, Any]) -> dict[str, int]:
    out = {}
    for k, v in raw.items():
        try:
            out[as_text(k)] = int(v)
        except ValueError:
            continue
    return dict(sorted(out.items()))


def _float(raw: Any) -> float:
    try:
        return float(raw) if raw is not None else 0.0
    except ValueError:
        return 0.0
