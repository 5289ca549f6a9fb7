"""The model registry in Redis: immutable numbered versions, aliases, promotion, rollback.

A *model* (e.g. ``ecg``) has versions ``1, 2, 3, ...``, each an immutable pair of weights bytes
(a safetensors file) and JSON metadata, with the sha256 of the weights. *Aliases* point at
versions: ``active`` is what every worker serves, any other name (``candidate``, ...) is free
for the operator. Every alias move is appended to the model's history and announced on a
pub/sub channel. See the README section "Model registry" for the key layout.

:class:`ModelRegistry` is the write side (publish, promote, roll back, delete) on top of
:class:`~worker.registry.reader.RegistryReader`; it takes a Redis client or URL, never the
settings (the CLI resolves where Redis is).

Guarantees:

* **Atomic publish.** The weights are uploaded to a private staging key (with a TTL) and a Lua
  script then allocates the version number, renames the staging key into place and writes the
  metadata, all at once: a half-written version is never visible, and a crashed upload leaves
  only a staging key that expires.
* **Immutable versions.** Numbers only grow (a deleted number is never reused) and the commit
  refuses to overwrite an existing version.
* **Atomic promotion and rollback** (Lua scripts in :mod:`worker.registry.lua`): the pointer,
  the history entry and the pub/sub hint change together, so concurrent promoters leave a
  consistent chain.
* **Safe loading.** :meth:`ModelRegistry.get` checks the weights' size and sha256 before
  anything is deserialised; nothing here ever unpickles.
  :func:`worker.registry.loader.load_detector` is the only function that turns verified bytes
  into a detector (through :mod:`model.checkpoint`).
* **Hot reload** lives in :mod:`worker.registry.watcher`.

Single Redis/valkey instances (optionally with replicas or Sentinel) are supported; Redis
Cluster is not (the scripts touch keys of several hash slots).
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import redis
import structlog

from worker.registry.connection import as_text, service_errors
from worker.registry.errors import (
    AliasMovedError,
    CorruptVersionError,
    NoRollbackError,
    RegistryError,
    VersionInUseError,
)
from worker.registry.lua import LUA_COMMIT, LUA_DELETE, LUA_PROMOTE, LUA_ROLLBACK, LUA_UNSET
from worker.registry.reader import RegistryReader
from worker.registry.records import (
    ACTIVE,
    CHECKPOINT_SHA_KEY,
    HistoryEntry,
    check_safetensors_header,
    sha256_hex,
    validate_alias,
    validate_name,
    validate_version,
)

#: how long an unfinished upload may live before Redis drops it
STAGING_TTL_S = 3600
#: weights are uploaded in chunks of this size (SET then APPEND) to keep commands modest
UPLOAD_CHUNK = 8 * 1024 * 1024
RECORD_FORMAT = 1
#: decisions of the retraining gate kept per model (older ones are trimmed)
GATE_LOG_LENGTH = 1000


class ModelRegistry(RegistryReader):
    """Named models with immutable numbered versions and aliases, stored under ``prefix``.

    ``client`` must be binary-safe (``decode_responses=False``); use
    :func:`~worker.registry.connection.connect` or :meth:`from_url`. Methods raise
    :class:`~worker.registry.errors.RegistryError` subclasses for registry problems and
    :class:`~worker.errors.ServiceError` when Redis is unreachable.
    """

    def __init__(self, client: redis.Redis, prefix: str, *, where: str | None = None) -> None:
        super().__init__(client, prefix, where=where)
        self._commit_script = client.register_script(LUA_COMMIT)
        self._promote_script = client.register_script(LUA_PROMOTE)
        self._unset_script = client.register_script(LUA_UNSET)
        self._rollback_script = client.register_script(LUA_ROLLBACK)
        self._delete_script = client.register_script(LUA_DELETE)

    # -- publish --------------------------------------------------------------------------
    @service_errors
    def publish(
        self,
        name: str,
        metadata: Mapping[str, Any],
        weights: bytes,
        *,
        promote: bool = False,
        alias: str = ACTIVE,
    ) -> int:
        """Store a new immutable version and return its number (optionally promoting it).

        ``metadata`` is the checkpoint's JSON metadata; when it carries ``weights_sha256`` the
        weights must match it. The version becomes visible all at once or not at all.
        """
        validate_name(name)
        validate_alias(alias)
        weights, digest = _checked_weights(metadata, weights)
        record_json = _record_json(name, metadata, weights, digest)
        result = self._stage_and_commit(name, weights, record_json, promote, alias)
        if as_text(result[0]) != "ok":
            raise _publish_failure(name, result, len(weights))
        version = int(result[1])
        structlog.get_logger().info(
            "model_published", model=name, version=version, sha256=digest, promoted=promote
        )
        return version

    def _stage_and_commit(
        self, name: str, weights: bytes, record_json: str, promote: bool, alias: str
    ) -> list[Any]:
        """Upload to a private staging key, then commit it; a failed commit drops the upload."""
        staging = self.staging_key(name, uuid.uuid4().hex)
        committed = False
        try:
            self._upload(staging, weights)
            result = self._commit(name, staging, len(weights), record_json, promote, alias)
            committed = True
        finally:
            if not committed:
                self._discard_staging(staging)
        return result

    def _upload(self, staging: str, weights: bytes) -> None:
        """Write the weights to the private staging key (invisible to every reader)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(staging, weights[:UPLOAD_CHUNK], ex=STAGING_TTL_S)
            for start in range(UPLOAD_CHUNK, len(weights), UPLOAD_CHUNK):
                pipe.append(staging, weights[start : start + UPLOAD_CHUNK])
            pipe.expire(staging, STAGING_TTL_S)
            pipe.execute()

    def _commit(
        self, name: str, staging: str, size: int, record_json: str, promote: bool, alias: str
    ) -> list[Any]:
        keys = [
            staging,
            self.seq_key(name),
            self.versions_key(name),
            self.models_key(),
            self.aliases_key(name),
            self.history_key(name),
        ]
        args = [
            self.model_key(name),
            name,
            str(size),
            record_json,
            "1" if promote else "",
            self.channel(name),
            alias,
        ]
        return list(self._commit_script(keys=keys, args=args))

    def _discard_staging(self, staging: str) -> None:
        with suppress(redis.RedisError):  # else it expires on its own (STAGING_TTL_S)
            self.client.delete(staging)

    def publish_dir(
        self, directory: str | Path, name: str, *, promote: bool = False, alias: str = ACTIVE
    ) -> int:
        """Publish a checkpoint directory (metadata.json + weights.safetensors)."""
        validate_name(name)
        from model.checkpoint import read_checkpoint_dir

        metadata, weights = read_checkpoint_dir(directory)
        return self.publish(name, metadata, weights, promote=promote, alias=alias)

    # -- aliases ----------------------------------------------------------------------------
    @service_errors
    def promote(
        self, name: str, version: int, alias: str = ACTIVE, *, expected: int | None = None
    ) -> HistoryEntry | None:
        """Point ``alias`` at ``version`` atomically, record it and publish a hint; with
        ``expected``, only if the alias points at that version now (else
        :class:`AliasMovedError`, nothing changed).

        Returns the history entry, or None when the alias already pointed there.
        """
        validate_name(name)
        version = validate_version(version)
        validate_alias(alias)
        result = self._promote_script(
            keys=[self.aliases_key(name), self.history_key(name), self.versions_key(name)],
            args=[self.channel(name), alias, str(version), "promote", _opt(expected)],
        )
        status = as_text(result[0])
        if status == "error":
            raise self._not_found(name, version)
        if status == "moved":
            now = as_text(result[1]) or "nothing"
            raise AliasMovedError(
                f"{name}:{alias} points at {now}, not {expected}: it moved meanwhile, nothing"
                " was promoted"
            )
        if status == "noop":
            return None
        entry = HistoryEntry.from_json(result[1])
        structlog.get_logger().info(
            "model_promoted", model=name, alias=alias, to=version, previous=entry.from_version
        )
        return entry

    def set_alias(self, name: str, alias: str, version: int) -> HistoryEntry | None:
        """Point any alias (e.g. ``candidate``) at a version; same semantics as promote."""
        return self.promote(name, version, alias=alias)

    @service_errors
    def remove_alias(self, name: str, alias: str) -> HistoryEntry | None:
        """Remove a non-active alias (the active pointer only moves, it is never removed)."""
        validate_name(name)
        validate_alias(alias)
        if alias == ACTIVE:
            raise RegistryError(
                f"the active alias of {name} cannot be removed (workers serve it); promote"
                f" another version or roll back with `seq2gmm models rollback {name}`"
            )
        result = self._unset_script(
            keys=[self.aliases_key(name), self.history_key(name)],
            args=[self.channel(name), alias],
        )
        return HistoryEntry.from_json(result[1]) if as_text(result[0]) == "ok" else None

    @service_errors
    def rollback(self, name: str, alias: str = ACTIVE) -> HistoryEntry:
        """Move ``alias`` back to the version it had before its latest move still in effect.

        Repeated rollbacks walk further back (a rollback is itself never the target of one).
        """
        validate_name(name)
        validate_alias(alias)
        result = self._rollback_script(
            keys=[self.aliases_key(name), self.history_key(name), self.versions_key(name)],
            args=[self.channel(name), alias],
        )
        if as_text(result[0]) == "ok":
            entry = HistoryEntry.from_json(result[1])
            structlog.get_logger().info(
                "model_rolled_back",
                model=name,
                alias=alias,
                to=entry.to_version,
                previous=entry.from_version,
            )
            return entry
        code = as_text(result[1])
        if code == "no_alias":
            raise self._no_alias(name, alias)
        raise _rollback_failure(f"{name}:{alias}", name, code, as_text(result[2]))

    # -- gate decisions ---------------------------------------------------------------------
    @service_errors
    def record_gate(self, name: str, decision: Mapping[str, Any]) -> dict[str, Any]:
        """Append a decision of the retraining gate (JSON, with the server's time) to the
        model's gate log, keeping the latest :data:`GATE_LOG_LENGTH`; returns the entry."""
        validate_name(name)
        seconds, micros = self.client.time()
        entry = {"time": seconds + micros / 1e6, **decision}
        with self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(self.gates_key(name), json.dumps(entry, sort_keys=True))
            pipe.ltrim(self.gates_key(name), -GATE_LOG_LENGTH, -1)
            pipe.execute()
        return entry

    # -- delete -----------------------------------------------------------------------------
    @service_errors
    def delete(self, name: str, version: int) -> None:
        """Delete a version no alias points to. Its number is never reused."""
        validate_name(name)
        version = validate_version(version)
        result = self._delete_script(
            keys=[
                self.aliases_key(name),
                self.versions_key(name),
                self.meta_key(name, version),
                self.weights_key(name, version),
                self.models_key(),
            ],
            args=[str(version), name],
        )
        if as_text(result[0]) == "ok":
            structlog.get_logger().info("model_version_deleted", model=name, version=version)
            return
        if as_text(result[1]) == "no_version":
            raise self._not_found(name, version)
        holders = as_text(result[2]).split(",")
        what = "the active version" if ACTIVE in holders else "in use"
        raise VersionInUseError(
            f"refusing to delete {name}:{version}: it is {what} (aliases: {', '.join(holders)});"
            f" promote another version first (`seq2gmm models promote {name} VERSION`)"
            + (
                ""
                if holders == [ACTIVE]
                else f" or remove the alias (`seq2gmm models unalias {name} ALIAS`)"
            )
        )


def _opt(version: int | None) -> str:
    return "" if version is None else str(validate_version(version))


def _checked_weights(metadata: Mapping[str, Any], weights: bytes) -> tuple[bytes, str]:
    """The weights as bytes and their sha256, once they look publishable (nothing uploaded)."""
    if not isinstance(metadata, Mapping):
        raise RegistryError("model metadata must be a JSON object (a dict)")
    if not isinstance(weights, bytes | bytearray | memoryview) or len(weights) == 0:
        raise RegistryError("the weights are empty; export the model again")
    weights = bytes(weights)
    check_safetensors_header(weights)
    digest = sha256_hex(weights)
    declared = metadata.get(CHECKPOINT_SHA_KEY)
    if declared is not None and declared != digest:
        raise CorruptVersionError(
            f"the weights do not match the metadata's {CHECKPOINT_SHA_KEY} (expected"
            f" {declared}, got {digest}): the checkpoint is corrupt or half-written;"
            " export it again"
        )
    return weights, digest


def _record_json(name: str, metadata: Mapping[str, Any], weights: bytes, digest: str) -> str:
    """The version's stored record (sha256, size, metadata, publisher) as JSON."""
    record = {
        "format": RECORD_FORMAT,
        "name": name,
        "sha256": digest,
        "size": len(weights),
        "metadata": dict(metadata),
        "publisher": _publisher(),
    }
    try:
        return json.dumps(record, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise RegistryError(
            f"model metadata is not JSON-serialisable ({exc}); keep it to JSON types"
        ) from None


def _publish_failure(name: str, result: list[Any], size: int) -> RegistryError:
    """The error for a commit script that refused the upload (``['error', code, ...]``)."""
    code = as_text(result[1])
    if code == "staging_size":
        return RegistryError(
            f"the upload of {name} arrived incomplete ({as_text(result[2])} of {size}"
            " bytes); nothing was published, try again"
        )
    if code == "staging_missing":
        return RegistryError(
            f"the upload of {name} expired or vanished before it was committed; nothing"
            " was published, try again"
        )
    if code == "exists":
        return RegistryError(
            f"keys of an unlisted version {as_text(result[2])} of {name} exist already and"
            " versions are never overwritten (were registry keys written by hand?);"
            " nothing was published, publish again to get the next free number"
        )
    return RegistryError(f"publishing {name} failed ({code})")


def _rollback_failure(ref: str, name: str, code: str, version: str) -> RegistryError:
    """The error for a rollback script that found no version to go back to."""
    if code == "no_previous":
        return NoRollbackError(
            f"{ref} (version {version}) has no earlier version to roll back"
            f" to; promote a version explicitly with `seq2gmm models promote {name} VERSION`"
        )
    if code == "target_deleted":
        return NoRollbackError(
            f"cannot roll {ref} back: the previous version {version} was"
            f" deleted; promote a version explicitly with `seq2gmm models promote {name}"
            " VERSION`"
        )
    return RegistryError(
        f"the history of {ref} does not end at its current version"
        f" {version} (the pointer was changed outside the registry); promote a version"
        f" explicitly with `seq2gmm models promote {name} VERSION`"
    )


def _publisher() -> dict[str, Any]:
    from worker import __version__

    return {"host": socket.gethostname(), "package_version": __version__}


__all__ = ["GATE_LOG_LENGTH", "RECORD_FORMAT", "STAGING_TTL_S", "UPLOAD_CHUNK", "ModelRegistry"]
