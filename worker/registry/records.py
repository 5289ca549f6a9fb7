"""What the registry stores and names: version records, alias history, and their validation.

:class:`ModelVersion` is a verified version with its weights; :class:`VersionInfo`,
:class:`HistoryEntry` and :class:`ModelSummary` describe versions, alias moves and models for
listings. Names, aliases, versions and ``NAME[:VERSION|:ALIAS]`` references are validated here,
and so are the weights' sha256 and the safetensors header (no tensor is read).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from model.errors import CheckpointError
from worker.registry.errors import InvalidNameError

#: metadata key under which a checkpoint records the sha256 of its weights file
CHECKPOINT_SHA_KEY = "weights_sha256"
#: the alias every worker serves
ACTIVE = "active"

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# An alias never looks like a number, so NAME:VERSION and NAME:ALIAS cannot be confused.
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")


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


__all__ = [
    "ACTIVE",
    "ALIAS_RE",
    "CHECKPOINT_SHA_KEY",
    "NAME_RE",
    "HistoryEntry",
    "ModelSummary",
    "ModelVersion",
    "VersionInfo",
    "check_safetensors_header",
    "parse_ref",
    "sha256_hex",
    "validate_alias",
    "validate_name",
    "validate_version",
]
