"""Checkpoints of every servable detector kind: weights as safetensors (never pickle) plus JSON
metadata naming the kind (``seq2gmm``, ``dagmm``, ``vae-lstm``, ``classifier``, ``knn``).

Layout on disk: ``DIR/metadata.json`` and ``DIR/weights.safetensors``. The same pair travels
through the Redis model registry as (metadata JSON, weights bytes): :func:`checkpoint_to_bytes`
and :func:`checkpoint_from_bytes`. Loading checks the weights' sha256 against the metadata
before deserialising anything, refuses an unknown kind or format, and hands the config and
tensors to that kind's ``from_checkpoint`` (see :class:`model.base.CalibratedDetector`).

The weights file holds every tensor needed to score bit-identically (for Seq2GMM: network
parameters, the mixture in float64, input normalisation, the per-position energy calibration)
and the held-out reference scores used by ``infer_threshold``. The metadata holds the rest
(config, shapes, threshold, training-score quantiles, metrics, training summary and history).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import model
from model.base import CalibratedDetector
from model.cycles import cutter_from_config
from model.errors import CheckpointError, DataError
from model.kinds import SERVABLE_KINDS, detector_class
from model.thresholds import EnergyQuantiles, Threshold

FORMAT = "seq2gmm-checkpoint"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "weights.safetensors"
_REF = "scoring.reference_scores"  # every kind's held-out normal scores


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that strict JSON can hold: numpy scalars become Python numbers,
    non-finite floats None (JSON has no NaN), tuples lists and mapping keys strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return _finite(obj)
    return obj


def checkpoint_to_bytes(detector: CalibratedDetector) -> tuple[dict[str, Any], bytes]:
    """(metadata, safetensors bytes) of a fitted detector; metadata carries the weights' sha256."""
    if not detector.is_fitted:
        detector._require_fitted()
    tensors = dict(detector.checkpoint_tensors())
    if _REF in tensors:
        raise CheckpointError(f"{detector.kind} detector tensors must not use the key {_REF!r}")
    if detector.reference_scores is not None:
        tensors[_REF] = torch.as_tensor(
            np.ascontiguousarray(detector.reference_scores, dtype=np.float64)
        )
    weights = st_save(tensors, metadata={"format": FORMAT, "kind": detector.kind})
    thr = detector._threshold
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": detector.kind,
        "package_version": model.__version__,
        "config": detector.checkpoint_config(),
        **detector.checkpoint_metadata(),
        "window_length": detector.window_length,
        "hop": detector.hop,
        "cycles": detector.cycles,
        "n_features": detector.n_features,
        "threshold": thr.to_dict() if thr is not None else None,
        "energy_quantiles": detector.quantiles.to_dict()
        if detector.quantiles is not None
        else None,
        "metrics": detector.metrics,
        "training_data": detector.training_summary,
        "history": detector.history,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": _sha256(weights),
        "weights_bytes": len(weights),
    }
    return json_safe(metadata), weights


def _check_metadata(metadata: dict[str, Any]) -> type[CalibratedDetector]:
    """The detector class of a checkpoint whose metadata is complete and readable."""
    if not isinstance(metadata, dict):
        raise CheckpointError("checkpoint metadata must be a JSON object")
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"not a Seq2GMM checkpoint (format {metadata.get('format')!r}, expected {FORMAT!r})"
        )
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version!r} is newer than this package supports"
            f" ({FORMAT_VERSION}); upgrade seq2gmm-worker"
        )
    for key in ("kind", "config", "n_features", "weights_sha256"):
        if key not in metadata:
            raise CheckpointError(
                f"checkpoint metadata lacks {key!r}; the checkpoint is incomplete"
            )
    kind = metadata["kind"]
    if kind not in SERVABLE_KINDS:
        raise CheckpointError(
            f"checkpoint holds a {kind!r} detector, which cannot be checkpointed; known kinds:"
            f" {', '.join(SERVABLE_KINDS)}"
        )
    return detector_class(kind)


def checkpoint_from_bytes(
    metadata: dict[str, Any], weights: bytes, *, device: str | torch.device = "cpu"
) -> CalibratedDetector:
    """Rebuild a detector from metadata and weights bytes, verifying the sha256 first."""
    cls = _check_metadata(metadata)
    digest = _sha256(weights)
    if digest != metadata["weights_sha256"]:
        raise CheckpointError(
            f"weights checksum mismatch: sha256 {digest[:16]}... but the metadata expects"
            f" {str(metadata['weights_sha256'])[:16]}...; the weights are corrupt or belong to"
            " another checkpoint; re-save or re-publish the model"
        )
    try:
        tensors = st_load(weights)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"weights are not a valid safetensors file: {exc}") from exc
    if not isinstance(metadata["config"], dict):
        raise CheckpointError("checkpoint config must be a JSON object")
    try:
        n_features = int(metadata["n_features"])
    except (TypeError, ValueError):
        raise CheckpointError(
            f"checkpoint n_features must be an integer, got {metadata['n_features']!r}"
        ) from None
    try:
        det = cls.from_checkpoint(metadata["config"], tensors, n_features=n_features, device=device)
    except DataError as exc:
        raise CheckpointError(
            f"the checkpoint's {metadata['kind']} config is invalid: {exc}"
        ) from exc
    det.window_length = metadata.get("window_length")
    det.hop = metadata.get("hop")
    det.cycles = _cycles(metadata)
    det.seed = (metadata.get("training_data") or {}).get("seed")
    if _REF in tensors:
        det.reference_scores = tensors[_REF].numpy().copy()
    try:
        if metadata.get("threshold") is not None:
            det.threshold = Threshold.from_dict(metadata["threshold"])
        if metadata.get("energy_quantiles") is not None:
            det.quantiles = EnergyQuantiles.from_dict(metadata["energy_quantiles"])
    except DataError as exc:
        raise CheckpointError(f"checkpoint calibration is invalid: {exc}") from exc
    det.metrics = dict(metadata.get("metrics") or {})
    det.training_summary = dict(metadata.get("training_data") or {})
    det.history = list(metadata.get("history") or [])
    return det


def _cycles(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's cutter config, checked (absent in checkpoints of fixed windows)."""
    config = metadata.get("cycles")
    if config is None:
        return None
    try:
        return cutter_from_config(config).to_config()
    except DataError as exc:
        raise CheckpointError(f"the checkpoint's cycle cutter is invalid: {exc}") from exc


def save_checkpoint(detector: CalibratedDetector, directory: str | Path) -> Path:
    """Write ``DIR/metadata.json`` and ``DIR/weights.safetensors`` (atomically each)."""
    metadata, weights = checkpoint_to_bytes(detector)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _atomic_write(d / WEIGHTS_FILE, weights)
    _atomic_write(
        d / METADATA_FILE, (json.dumps(metadata, indent=2, allow_nan=False) + "\n").encode()
    )
    return d


def load_checkpoint(
    directory: str | Path, *, device: str | torch.device = "cpu"
) -> CalibratedDetector:
    """Load a checkpoint directory written by :func:`save_checkpoint`."""
    metadata, weights = read_checkpoint_dir(directory)
    return checkpoint_from_bytes(metadata, weights, device=device)


def read_checkpoint_dir(directory: str | Path) -> tuple[dict[str, Any], bytes]:
    """(metadata, weights bytes) of a checkpoint directory, unverified and not deserialised."""
    d = Path(directory)
    meta_path, weights_path = d / METADATA_FILE, d / WEIGHTS_FILE
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise CheckpointError(
                f"{p} is missing: a model directory holds {METADATA_FILE} and {WEIGHTS_FILE}"
                " (train with `seq2gmm train ... --out DIR`)"
            )
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{meta_path} must hold a JSON object; export the model again")
    return metadata, weights_path.read_bytes()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
