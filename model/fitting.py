"""Setup that every detector's fit shares, written once.

- :func:`config_items`: a detector config's JSON object checked against its dataclass fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from model.errors import DataError


def config_items(cls: type, data: Any, where: str) -> dict[str, Any]:
    """``data`` as a dict of ``cls``'s (a dataclass) fields; a DataError naming ``where``
    when it is not a JSON object or has unknown keys. Every detector config uses it."""
    if not isinstance(data, Mapping):
        raise DataError(f"{where} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(f"unknown {where} keys {unknown}; valid keys are {sorted(known)}")
    return dict(data)
