"""The local model cache: the last verified active version of a model, on disk.

A worker that starts while Redis is unreachable serves this copy until the registry answers
again (:class:`~worker.registry.watcher.ActiveModelWatcher` falls back to it). The layout, per
registry key prefix ``P`` and model ``N``::

    DIR/P/N/manifest.json                 name, version, sha256, size, metadata, created_at
    DIR/P/N/weights-SHA16.safetensors     the weights the manifest names

Writes are atomic: the weights go to a content-addressed file first, then the manifest is
replaced in one ``os.replace``; a crash leaves the previous manifest and its weights intact.
Reads check the size and sha256 (against the manifest and the checkpoint's own
``weights_sha256``) before anything is deserialised, exactly as a read from Redis does; the
loader then checks the sha256 once more. Nothing here unpickles.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from worker.registry.errors import CorruptVersionError
from worker.registry.records import (
    CHECKPOINT_SHA_KEY,
    ModelVersion,
    sha256_hex,
    validate_name,
    validate_version,
)

FORMAT = "seq2gmm-model-cache"
MANIFEST = "manifest.json"


class ModelCache:
    """The verified copies of active versions under ``directory``, one per model."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = Path(directory)
        self.prefix = prefix

    def path(self, name: str) -> Path:
        """The directory holding ``name``'s cached version."""
        return self.directory / self.prefix / validate_name(name)

    def save(self, record: ModelVersion) -> Path:
        """Keep ``record`` (a verified version) as ``name``'s cached copy; atomic."""
        folder = self.path(record.name)
        if self._holds(folder, record):
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        weights_file = f"weights-{record.sha256[:16]}.safetensors"
        _write_atomic(folder / weights_file, record.weights)
        manifest = {
            "format": FORMAT,
            "name": record.name,
            "version": record.version,
            "sha256": record.sha256,
            "size": record.size,
            "created_at": record.created_at,
            "cached_at": time.time(),
            "weights_file": weights_file,
            "metadata": dict(record.metadata),
        }
        _write_atomic(folder / MANIFEST, json.dumps(manifest).encode())
        self._remove_stale_weights(folder)
        return folder

    def load(self, name: str) -> ModelVersion | None:
        """The cached version of ``name`` (verified), or None when nothing is cached.

        Raises CorruptVersionError when the copy fails verification; it is never deserialised.
        """
        folder = self.path(name)
        try:
            raw = (folder / MANIFEST).read_bytes()
        except FileNotFoundError:
            return None
        manifest = self._manifest(folder, raw)
        weights_path = folder / manifest["weights_file"]
        try:
            weights = weights_path.read_bytes()
        except OSError as exc:
            raise self._corrupt(folder, f"its weights file is unreadable ({exc})") from None
        if len(weights) != manifest["size"]:
            size = manifest["size"]
            raise self._corrupt(folder, f"its weights have {len(weights)} bytes, not {size}")
        actual = sha256_hex(weights)
        declared = manifest["metadata"].get(CHECKPOINT_SHA_KEY)
        for what, expected in (("manifest", manifest["sha256"]), ("metadata", declared)):
            if expected is not None and expected != actual:
                raise self._corrupt(
                    folder,
                    f"its weights fail the sha256 of its {what} (expected {str(expected)[:16]}…,"
                    f" got {actual[:16]}…)",
                )
        if manifest["name"] != name:
            raise self._corrupt(folder, f"its manifest names model {manifest['name']!r}")
        return ModelVersion(
            name=name,
            version=manifest["version"],
            metadata=manifest["metadata"],
            weights=weights,
            sha256=actual,
            created_at=manifest["created_at"],
        )

    # -- internals --------------------------------------------------------------------------
    def _manifest(self, folder: Path, raw: bytes) -> dict[str, Any]:
        try:
            m = json.loads(raw)
            if not isinstance(m, dict) or m.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} manifest")
            if not isinstance(m.get("metadata"), dict):
                raise TypeError("metadata is not an object")
            weights_file = str(m["weights_file"])
            if Path(weights_file).name != weights_file:
                raise ValueError(f"weights_file {weights_file!r} leaves the cache directory")
            return {
                "name": str(m["name"]),
                "version": validate_version(m["version"]),
                "sha256": str(m["sha256"]),
                "size": int(m["size"]),
                "created_at": float(m.get("created_at") or 0.0),
                "weights_file": weights_file,
                "metadata": m["metadata"],
            }
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise self._corrupt(
                folder, f"its manifest is unreadable ({type(exc).__name__}: {exc})"
            ) from None

    @staticmethod
    def _corrupt(folder: Path, why: str) -> CorruptVersionError:
        return CorruptVersionError(
            f"the cached model in {folder} is refused: {why}; it was not loaded. It is corrupt"
            f" or was tampered with: delete {folder} (the worker writes it again from the"
            " registry once Redis answers)"
        )

    def _holds(self, folder: Path, record: ModelVersion) -> bool:
        """The manifest already names this version with these weights (nothing to write)."""
        try:
            m = json.loads((folder / MANIFEST).read_bytes())
            return (
                m.get("version") == record.version
                and m.get("sha256") == record.sha256
                and (folder / str(m.get("weights_file"))).stat().st_size == record.size
            )
        except (OSError, ValueError, AttributeError):
            return False

    @staticmethod
    def _remove_stale_weights(folder: Path) -> None:
        """Delete weights no manifest names (read again: another worker may share the folder)."""
        try:
            keep = json.loads((folder / MANIFEST).read_bytes()).get("weights_file")
        except (OSError, ValueError, AttributeError):
            return
        for f in folder.glob("weights-*.safetensors"):
            if f.name != keep:
                with contextlib.suppress(OSError):
                    f.unlink()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


__all__ = ["ModelCache"]
