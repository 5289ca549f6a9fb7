"""What can go wrong in the registry; every message says why and what to do."""

from __future__ import annotations

from model.errors import CheckpointError, Seq2GMMError


class RegistryError(Seq2GMMError):
    """A registry operation cannot be done; the message says why and what to do."""


class InvalidNameError(RegistryError, ValueError):
    """A model name, alias or version number is malformed."""


class ModelNotFoundError(RegistryError):
    """The model, version or alias does not exist."""


class VersionInUseError(RegistryError):
    """The version is still referenced by an alias (e.g. it is active) and cannot be deleted."""


class AliasMovedError(RegistryError):
    """A conditional promotion found the alias pointing elsewhere (someone moved it)."""


class NoRollbackError(RegistryError):
    """There is no earlier version to roll back to."""


class CorruptVersionError(RegistryError, CheckpointError):
    """Stored bytes or metadata fail verification; the version was not deserialised."""


class ModelLoadError(RegistryError):
    """A verified version could not be turned into a model by the loader."""


__all__ = [
    "AliasMovedError",
    "CorruptVersionError",
    "InvalidNameError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NoRollbackError",
    "RegistryError",
    "VersionInUseError",
]
