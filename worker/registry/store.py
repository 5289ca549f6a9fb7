"""The model registry in Redis: immutable numbered versions, aliases, promotion, rollback.

A *model* (e.g. ``ecg``) has versions ``1, 2, 3, ...``, each an immutable pair of weights bytes
(a safetensors file) and JSON metadata, with the sha256 of the weights. *Aliases* point at
versions: ``active`` is what every worker serves, any other name (``candidate``, ...) is free
for the operator. Every alias move is appended to the model's history and announced on a
pub/sub channel. See the README section "Model registry" for the key layout.

Guarantees:

* **Atomic publish.** The weights are uploaded to a private staging key (with a TTL) and a Lua
  script then allocates the version number, renames the staging key into place and writes the
  metadata, all at once: a half-written version is never visible, and a crashed upload leaves
  only a staging key that expires.
* **Immutable versions.** Numbers only grow (a deleted number is never reused) and the commit
  refuses to overwrite an existing version.
* **Atomic promotion and rollback** (Lua scripts): the pointer, the history entry and the
  pub/sub hint change together, so concurrent promoters leave a consistent chain.
* **Safe loading.** :meth:`ModelRegistry.get` checks the weights' size and sha256 before
  anything is deserialised; nothing here ever unpickles.
  :func:`worker.registry.loader.load_detector` is the only function that turns verified bytes
  into a detector (through :mod:`model.checkpoint`).
* **Hot reload** lives in :mod:`worker.registry.watcher`.

Single Redis/valkey instances (optionally with replicas or Sentinel) are supported; Redis
Cluster is not (the scripts touch keys of several hash slots).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import socket
import struct
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import redis
import structlog

from model.errors import CheckpointError, Seq2GMMError
from worker.dev.endpoints import resolve_redis_url
from worker.errors import ConfigError, ServiceError

if TYPE_CHECKING:
    from worker.ops.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: metadata key under which a checkpoint records the sha256 of its weights file
CHECKPOINT_SHA_KEY = "weights_sha256"
ACTIVE = "active"
#: how long an unfinished upload may live before Redis drops it
STAGING_TTL_S = 3600
#: weights are uploaded in chunks of this size (SET then APPEND) to keep commands modest
UPLOAD_CHUNK = 8 * 1024 * 1024
RECORD_FORMAT = 1

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# An alias never looks like a number, so NAME:VERSION and NAME:ALIAS cannot be confused.
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")


# ----------------------------------------------------------------------------------- errors


class RegistryError(Seq2GMMError):
    """A registry operation cannot be done; the message says why and what to do."""


class InvalidNameError(RegistryError, ValueError):
    """A model name, alias or version number is malformed."""


class ModelNotFoundError(RegistryError):
    """The model, version or alias does not exist."""


class VersionInUseError(RegistryError):
    """The version is still referenced by an alias (e.g. it is active) and cannot be deleted."""


class NoRollbackError(RegistryError):
    """There is no earlier version to roll back to."""


class CorruptVersionError(RegistryError, CheckpointError):
    """Stored bytes or metadata fail verification; the version was not deserialised."""


class ModelLoadError(RegistryError):
    """A verified version could not be turned into a model by the loader."""


# ------------------------------------------------------------------------------ connection


def describe_url(url: str) -> str:
    """``scheme://host:port/db`` without user name or password (safe for messages and logs)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable Redis URL)"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{host}{port}{parts.path or ''}"


def connect(url: str, *, timeout_s: float = 10.0) -> redis.Redis:
    """A binary-safe client for ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs.

    User name and password come from the URL (``redis://user:secret@host:6379/0``); TLS options
    can be given as query parameters (``rediss://host:6380/0?ssl_ca_certs=/etc/ca.pem``).
    """
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=False,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
    except ValueError as exc:
        # redis-py's messages name the scheme or option, never the password.
        raise ConfigError(
            f"SEQ2GMM_REDIS__URL is not a usable Redis URL ({exc}); expected"
            " redis://[user:password@]host:port/db or rediss://... for TLS"
        ) from None


def _service_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn redis-py connection and server errors into ServiceError (no secrets in them)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.AuthenticationError as exc:
            where = args[0].where if args and isinstance(args[0], ModelRegistry) else "Redis"
            raise ServiceError(
                f"Redis at {where} refused the credentials ({exc}); check the user name and"
                " password in SEQ2GMM_REDIS__URL"
            ) from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            where = args[0].where if args and isinstance(args[0], ModelRegistry) else "Redis"
            raise ServiceError(
                f"cannot reach Redis at {where} ({exc}); check SEQ2GMM_REDIS__URL or start"
                " the embedded one with `seq2gmm dev up`"
            ) from None
        except redis.RedisError as exc:
            raise ServiceError(
                f"Redis refused a registry command ({type(exc).__name__}: {exc}); check that"
                " the user in SEQ2GMM_REDIS__URL may run scripts and that no other program"
                " writes the registry's keys"
            ) from None

    return wrapper


# ------------------------------------------------------------------------------ data types


@dataclass(frozen=True)
class ModelVersion:
    """One verified version: the weights' sha256 matched before this object was built."""

    name: str
    version: int
    metadata: Mapping[str, Any]
    weights: bytes = field(repr=False)
    sha256: str
    created_at: float

    @property
    def size(self) -> int:
        return len(self.weights)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class VersionInfo:
    """A version's description without its weights (for listings)."""

    name: str
    version: int
    sha256: str
    size: int
    created_at: float
    metadata: Mapping[str, Any]
    aliases: tuple[str, ...] = ()
    publisher: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "created_at": self.created_at,
            "aliases": list(self.aliases),
            "publisher": dict(self.publisher),
            "problem": self.problem,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class HistoryEntry:
    """One alias move. ``from_version`` is None for the alias's first assignment."""

    seq: int
    alias: str
    from_version: int | None
    to_version: int | None
    time: float
    action: str  # "promote", "rollback" or "remove"
    undoes: int | None = None  # for a rollback: the seq of the entry it reverted

    @classmethod
    def from_json(cls, raw: bytes | str) -> HistoryEntry:
        d = json.loads(raw)
        return cls(
            seq=int(d["seq"]),
            alias=str(d["alias"]),
            from_version=None if d.get("from") is None else int(d["from"]),
            to_version=None if d.get("to") is None else int(d["to"]),
            time=float(d["time"]),
            action=str(d["action"]),
            undoes=None if d.get("undoes") is None else int(d["undoes"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "time": self.time,
            "action": self.action,
            "undoes": self.undoes,
        }


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: int
    latest: int | None
    aliases: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": self.versions,
            "latest": self.latest,
            "aliases": dict(self.aliases),
        }


# ------------------------------------------------------------------------------ validation


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidNameError(
            f"invalid model name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -"
        )
    return name


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias):
        raise InvalidNameError(
            f"invalid alias {alias!r}: start with a letter, then up to 31 characters from"
            " A-Z a-z 0-9 _ . -"
        )
    return alias


def validate_version(version: int | str) -> int:
    try:
        v = int(version)
    except (TypeError, ValueError):
        v = 0
    if isinstance(version, bool) or v < 1:
        raise InvalidNameError(f"invalid version {version!r}: versions are whole numbers >= 1")
    return v


def parse_ref(ref: str) -> tuple[str, int | str | None]:
    """``NAME`` -> (NAME, None); ``NAME:3`` -> (NAME, 3); ``NAME:candidate`` -> (NAME, alias)."""
    name, sep, rest = ref.partition(":")
    validate_name(name)
    if not sep:
        return name, None
    if rest.isdigit():
        return name, validate_version(rest)
    return name, validate_alias(rest)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_safetensors_header(weights: bytes) -> None:
    """Cheap structural check of a safetensors blob (header only; no tensor is read)."""
    if len(weights) < 8:
        raise CheckpointError("the weights are not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", weights[:8])
    if n < 2 or 8 + n > len(weights):
        raise CheckpointError(
            "the weights are not a safetensors file (header length out of range); export the"
            " model again"
        )
    try:
        header = json.loads(weights[8 : 8 + n])
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(
            "the weights are not a safetensors file (unreadable header); export the model again"
        )


# ---------------------------------------------------------------------------- Lua scripts

_LUA_PRELUDE = r"""
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local function jint(v)
  if v == nil or v == false or v == cjson.null then return 'null' end
  local n = tonumber(v)
  if n == nil then return 'null' end
  return string.format('%d', n)
end
-- Point `alias` at `to` (nil removes it), append the history entry, publish the hint.
-- Returns the entry's JSON, or nil when the alias already had that value.
local function move(aliases, history, channel, alias, to, action, undoes)
  local cur = redis.call('HGET', aliases, alias)
  if cur and to and tonumber(cur) == to then return nil end
  if (not cur) and (not to) then return nil end
  if to then
    redis.call('HSET', aliases, alias, string.format('%d', to))
  else
    redis.call('HDEL', aliases, alias)
  end
  local seq = redis.call('LLEN', history) + 1
  local entry = '{"seq":' .. seq .. ',"alias":' .. cjson.encode(alias)
    .. ',"from":' .. jint(cur) .. ',"to":' .. jint(to) .. ',"time":' .. now()
    .. ',"action":' .. cjson.encode(action) .. ',"undoes":' .. jint(undoes) .. '}'
  redis.call('RPUSH', history, entry)
  redis.call('PUBLISH', channel, entry)
  return entry
end
"""

# KEYS: staging, seq, versions, models, aliases, history
# ARGV: model key base, name, size, record JSON, promote ('1' or ''), channel, alias
_LUA_COMMIT = (
    _LUA_PRELUDE
    + r"""
local size = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'error', 'staging_missing'} end
local have = redis.call('STRLEN', KEYS[1])
if have ~= size then return {'error', 'staging_size', tostring(have)} end
local v = redis.call('INCR', KEYS[2])
local top = redis.call('ZREVRANGE', KEYS[3], 0, 0)
if #top > 0 and tonumber(top[1]) >= v then
  v = tonumber(top[1]) + 1
  redis.call('SET', KEYS[2], string.format('%d', v))
end
local vs = string.format('%d', v)
local meta = ARGV[1] .. ':v:' .. vs .. ':meta'
local weights = ARGV[1] .. ':v:' .. vs .. ':weights'
if redis.call('EXISTS', meta) == 1 or redis.call('EXISTS', weights) == 1 then
  return {'error', 'exists', vs}
end
redis.call('RENAME', KEYS[1], weights)
redis.call('PERSIST', weights)
redis.call('HSET', meta, 'record', ARGV[4], 'version', vs, 'created_at', now())
redis.call('ZADD', KEYS[3], v, vs)
redis.call('SADD', KEYS[4], ARGV[2])
local entry = ''
if ARGV[5] == '1' then
  entry = move(KEYS[5], KEYS[6], ARGV[6], ARGV[7], v, 'promote', nil) or ''
end
return {'ok', vs, entry}
"""
)

# KEYS: aliases, history, versions      ARGV: channel, alias, version, action
_LUA_PROMOTE = (
    _LUA_PRELUDE
    + r"""
local to = tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[3], string.format('%d', to)) then
  return {'error', 'no_version'}
end
local entry = move(KEYS[1], KEYS[2], ARGV[1], ARGV[2], to, ARGV[4], nil)
if entry then return {'ok', entry} end
return {'noop', ''}
"""
)

# KEYS: aliases, history      ARGV: channel, alias
_LUA_UNSET = (
    _LUA_PRELUDE
    + r"""
local entry = move(KEYS[1], KEYS[2], ARGV[1], ARGV[2], nil, 'remove', nil)
if entry then return {'ok', entry} end
return {'noop', ''}
"""
)

# Roll `alias` back: walk the history from the end, skipping rollbacks and the entries they
# reverted; the first entry still in effect is undone (its `from` becomes current again).
# KEYS: aliases, history, versions      ARGV: channel, alias
_LUA_ROLLBACK = (
    _LUA_PRELUDE
    + r"""
local alias = ARGV[2]
local cur = redis.call('HGET', KEYS[1], alias)
if not cur then return {'error', 'no_alias'} end
local entries = redis.call('LRANGE', KEYS[2], 0, -1)
local undone = {}
for i = #entries, 1, -1 do
  local e = cjson.decode(entries[i])
  if e['alias'] == alias then
    if e['action'] == 'rollback' then
      if e['undoes'] ~= cjson.null then undone[tonumber(e['undoes'])] = true end
    elseif not undone[tonumber(e['seq'])] then
      if e['to'] == cjson.null or tonumber(e['to']) ~= tonumber(cur) then
        return {'error', 'inconsistent', cur}
      end
      if e['from'] == cjson.null then return {'error', 'no_previous', cur} end
      local target = tonumber(e['from'])
      if not redis.call('ZSCORE', KEYS[3], string.format('%d', target)) then
        return {'error', 'target_deleted', string.format('%d', target)}
      end
      local entry = move(KEYS[1], KEYS[2], ARGV[1], alias, target, 'rollback', e['seq'])
      return {'ok', entry}
    end
  end
end
return {'error', 'no_previous', cur}
"""
)

# KEYS: aliases, versions, meta, weights, models      ARGV: version, name
_LUA_DELETE = r"""
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return {'error', 'no_version'} end
local holders = {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  if flat[i + 1] == ARGV[1] then table.insert(holders, flat[i]) end
end
if #holders > 0 then return {'error', 'aliased', table.concat(holders, ',')} end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[5], ARGV[2]) end
return {'ok'}
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -------------------------------------------------------------------------------- registry


class ModelRegistry:
    """Named models with immutable numbered versions and aliases, stored under ``prefix``.

    ``client`` must be binary-safe (``decode_responses=False``); use :func:`connect` or
    :meth:`from_settings`. Methods raise :class:`RegistryError` subclasses for registry
    problems and :class:`~worker.errors.ServiceError` when Redis is unreachable.
    """

    def __init__(self, client: redis.Redis, prefix: str, *, where: str | None = None) -> None:
        if client.get_encoder().decode_responses:
            raise ConfigError(
                "the registry needs a binary-safe Redis client (decode_responses=False);"
                " create it with worker.registry.store.connect(url)"
            )
        if not prefix or not re.match(r"^[\w.:-]+$", prefix):
            raise ConfigError(
                f"invalid registry key prefix {prefix!r}: set SEQ2GMM_REDIS__KEY_PREFIX to"
                " letters, digits, '_', '.', ':' or '-'"
            )
        self.client = client
        self.prefix = prefix
        self.where = where or self._describe_client(client)
        self._commit_script = client.register_script(_LUA_COMMIT)
        self._promote_script = client.register_script(_LUA_PROMOTE)
        self._unset_script = client.register_script(_LUA_UNSET)
        self._rollback_script = client.register_script(_LUA_ROLLBACK)
        self._delete_script = client.register_script(_LUA_DELETE)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """A registry on the configured Redis (or the embedded one), with its key prefix."""
        url = resolve_redis_url(settings)
        return cls(connect(url), settings.redis.key_prefix, where=describe_url(url))

    @staticmethod
    def _describe_client(client: redis.Redis) -> str:
        kw = client.connection_pool.connection_kwargs
        if "path" in kw:
            return f"unix://{kw['path']}"
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ModelRegistry:
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

    def meta_key(self, name: str, version: int) -> str:
        return f"{self.model_key(name)}:v:{version}:meta"

    def weights_key(self, name: str, version: int) -> str:
        return f"{self.model_key(name)}:v:{version}:weights"

    def staging_key(self, name: str, token: str) -> str:
        return f"{self.model_key(name)}:staging:{token}"

    def channel(self, name: str) -> str:
        """The pub/sub channel that carries a hint (the history entry) on every alias move."""
        return f"{self.model_key(name)}:events"

    # -- publish --------------------------------------------------------------------------
    @_service_errors
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
        record = {
            "format": RECORD_FORMAT,
            "name": name,
            "sha256": digest,
            "size": len(weights),
            "metadata": dict(metadata),
            "publisher": _publisher(),
        }
        try:
            record_json = json.dumps(record, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise RegistryError(
                f"model metadata is not JSON-serialisable ({exc}); keep it to JSON types"
            ) from None
        token = uuid.uuid4().hex
        staging = self.staging_key(name, token)
        committed = False
        try:
            self._upload(staging, weights)
            result = self._commit(name, staging, len(weights), record_json, promote, alias)
            committed = True
        finally:
            if not committed:
                self._discard_staging(staging)
        status = _s(result[0])
        if status == "ok":
            version = int(result[1])
            structlog.get_logger().info(
                "model_published", model=name, version=version, sha256=digest, promoted=promote
            )
            return version
        code = _s(result[1])
        if code == "staging_size":
            raise RegistryError(
                f"the upload of {name} arrived incomplete ({_s(result[2])} of {len(weights)}"
                " bytes); nothing was published, try again"
            )
        if code == "staging_missing":
            raise RegistryError(
                f"the upload of {name} expired or vanished before it was committed; nothing"
                " was published, try again"
            )
        if code == "exists":
            raise RegistryError(
                f"keys of an unlisted version {_s(result[2])} of {name} exist already and"
                " versions are never overwritten (were registry keys written by hand?);"
                " nothing was published, publish again to get the next free number"
            )
        raise RegistryError(f"publishing {name} failed ({code})")

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

    # -- read -----------------------------------------------------------------------------
    @_service_errors
    def list_models(self) -> list[ModelSummary]:
        names = sorted(_s(n) for n in self.client.smembers(self.models_key()))
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

    @_service_errors
    def list_versions(self, name: str) -> list[VersionInfo]:
        """Committed versions, oldest first (staging uploads are never listed)."""
        validate_name(name)
        versions = [int(_s(v)) for v in self.client.zrange(self.versions_key(name), 0, -1)]
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

    @_service_errors
    def info(self, name: str, version: int) -> VersionInfo:
        """One version's description (no weights, no verification)."""
        validate_name(name)
        version = validate_version(version)
        meta = self.client.hgetall(self.meta_key(name, version))
        if not meta:
            raise self._not_found(name, version)
        return self._info(name, version, meta, self.aliases(name))

    @_service_errors
    def resolve(self, name: str, alias: str = ACTIVE) -> int | None:
        """The version ``alias`` points at, or None. One HGET: cheap enough to poll."""
        validate_name(name)
        validate_alias(alias)
        raw = self.client.hget(self.aliases_key(name), alias)
        if raw is None:
            return None
        try:
            return validate_version(_s(raw))
        except InvalidNameError:
            raise RegistryError(
                f"the {alias} pointer of {name} holds no version number (it was written outside"
                f" the registry); repair it with `seq2gmm models promote {name} VERSION`"
            ) from None

    @_service_errors
    def aliases(self, name: str) -> dict[str, int]:
        validate_name(name)
        return _aliases(self.client.hgetall(self.aliases_key(name)))

    @_service_errors
    def history(self, name: str, *, alias: str | None = None) -> list[HistoryEntry]:
        """Every alias move of ``name``, oldest first (optionally of one alias only)."""
        validate_name(name)
        entries = [
            HistoryEntry.from_json(r) for r in self.client.lrange(self.history_key(name), 0, -1)
        ]
        return [e for e in entries if alias is None or e.alias == alias]

    @_service_errors
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

    # -- aliases ----------------------------------------------------------------------------
    @_service_errors
    def promote(self, name: str, version: int, alias: str = ACTIVE) -> HistoryEntry | None:
        """Point ``alias`` at ``version`` atomically, record it and publish a hint.

        Returns the history entry, or None when the alias already pointed there.
        """
        validate_name(name)
        version = validate_version(version)
        validate_alias(alias)
        result = self._promote_script(
            keys=[self.aliases_key(name), self.history_key(name), self.versions_key(name)],
            args=[self.channel(name), alias, str(version), "promote"],
        )
        status = _s(result[0])
        if status == "error":
            raise self._not_found(name, version)
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

    @_service_errors
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
        return HistoryEntry.from_json(result[1]) if _s(result[0]) == "ok" else None

    @_service_errors
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
        if _s(result[0]) == "ok":
            entry = HistoryEntry.from_json(result[1])
            structlog.get_logger().info(
                "model_rolled_back",
                model=name,
                alias=alias,
                to=entry.to_version,
                previous=entry.from_version,
            )
            return entry
        code = _s(result[1])
        if code == "no_alias":
            raise self._no_alias(name, alias)
        if code == "no_previous":
            raise NoRollbackError(
                f"{name}:{alias} (version {_s(result[2])}) has no earlier version to roll back"
                f" to; promote a version explicitly with `seq2gmm models promote {name} VERSION`"
            )
        if code == "target_deleted":
            raise NoRollbackError(
                f"cannot roll {name}:{alias} back: the previous version {_s(result[2])} was"
                f" deleted; promote a version explicitly with `seq2gmm models promote {name}"
                " VERSION`"
            )
        raise RegistryError(
            f"the history of {name}:{alias} does not end at its current version"
            f" {_s(result[2])} (the pointer was changed outside the registry); promote a version"
            f" explicitly with `seq2gmm models promote {name} VERSION`"
        )

    # -- delete -----------------------------------------------------------------------------
    @_service_errors
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
        if _s(result[0]) == "ok":
            structlog.get_logger().info("model_version_deleted", model=name, version=version)
            return
        if _s(result[1]) == "no_version":
            raise self._not_found(name, version)
        holders = _s(result[2]).split(",")
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


def _aliases(raw: Mapping[Any, Any]) -> dict[str, int]:
    out = {}
    for k, v in raw.items():
        try:
            out[_s(k)] = int(v)
        except ValueError:
            continue
    return dict(sorted(out.items()))


def _float(raw: Any) -> float:
    try:
        return float(raw) if raw is not None else 0.0
    except ValueError:
        return 0.0


def _publisher() -> dict[str, Any]:
    from worker import __version__

    return {"host": socket.gethostname(), "package_version": __version__}


@contextmanager
def open_registry(settings: Settings) -> Iterator[ModelRegistry]:
    """``with open_registry(settings) as reg:`` -- a registry that is closed afterwards."""
    registry = ModelRegistry.from_settings(settings)
    try:
        yield registry
    finally:
        registry.close()


__all__ = [
    "ACTIVE",
    "CHECKPOINT_SHA_KEY",
    "CorruptVersionError",
    "HistoryEntry",
    "InvalidNameError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelSummary",
    "ModelVersion",
    "NoRollbackError",
    "RegistryError",
    "VersionInUseError",
    "VersionInfo",
    "connect",
    "describe_url",
    "open_registry",
    "parse_ref",
]
