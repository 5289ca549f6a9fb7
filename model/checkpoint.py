"""Checkpoints: weights as safetensors (never pickle) plus JSON metadata.

Layout on disk: ``DIR/metadata.json`` and ``DIR/weights.safetensors``. The same pair travels
through the Redis model registry as (metadata JSON, weights bytes): :func:`checkpoint_to_bytes`
and :func:`checkpoint_from_bytes`. Loading checks the weights' sha256 against the metadata
before deserialising anything, and refuses a checkpoint of another detector kind or format.

The weights file holds every tensor needed to score bit-identically: network parameters, the
mixture (float64), input normalisation, the per-position energy calibration and the held-out
reference scores used by ``infer_threshold``. The metadata holds the rest (config, shapes,
threshold, training-score quantiles, metrics, training summary and history).
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
from model.config import Seq2GMMConfig
from model.errors import CheckpointError, DataError
from model.pipeline import Seq2GMMDetector, build_model
from model.scoring import EnergyNormaliser
from model.thresholds import EnergyQuantiles, Threshold

FORMAT = "seq2gmm-checkpoint"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "weights.safetensors"
_MODEL = "model."
_CAL_LOC = "scoring.energy_loc"
_CAL_SCALE = "scoring.energy_scale"
_REF = "scoring.reference_scores"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return _finite(obj)
    return obj


def checkpoint_to_bytes(detector: Seq2GMMDetector) -> tuple[dict[str, Any], bytes]:
    """(metadata, safetensors bytes) of a fitted detector; metadata carries the weights' sha256."""
    net = detector._require_model()
    tensors: dict[str, torch.Tensor] = {
        _MODEL + k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()
    }
    tensors[_CAL_LOC] = detector.normaliser.loc.detach().cpu().contiguous().clone()
    tensors[_CAL_SCALE] = detector.normaliser.scale.detach().cpu().contiguous().clone()
    if detector.reference_scores is not None:
        tensors[_REF] = torch.as_tensor(
            np.ascontiguousarray(detector.reference_scores, dtype=np.float64)
        )
    weights = st_save(tensors, metadata={"format": FORMAT, "kind": detector.kind})
    cfg = detector.config
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": detector.kind,
        "package_version": model.__version__,
        "config": cfg.to_dict(),
        "segmentation": cfg.segmentation.__dict__.copy(),
        "window_length": detector.window_length,
        "hop": detector.hop,
        "n_features": detector.n_features,
        "normalisation": {
            "mean": net.input_mean.detach().cpu().double().tolist(),
            "std": net.input_std.detach().cpu().double().tolist(),
        },
        "threshold": detector._threshold.to_dict() if detector._threshold is not None else None,
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
    return _clean(metadata), weights


def _check_metadata(metadata: dict[str, Any]) -> None:
    if not isinstance(metadata, dict):
        raise CheckpointError("checkpoint metadata must be a JSON object")
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"not a Seq2GMM checkpoint (format {metadata.get('format')!r}, expected {FORMAT!r})"
        )
    if metadata.get("kind") != Seq2GMMDetector.kind:
        raise CheckpointError(
            f"checkpoint holds a {metadata.get('kind')!r} detector, not 'seq2gmm'; load it with"
            " the loader of that detector kind"
        )
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version!r} is newer than this package supports"
            f" ({FORMAT_VERSION}); upgrade seq2gmm-worker"
        )
    for key in ("config", "n_features", "weights_sha256"):
        if key not in metadata:
            raise CheckpointError(
                f"checkpoint metadata lacks {key!r}; the checkpoint is incomplete"
            )


def checkpoint_from_bytes(
    metadata: dict[str, Any], weights: bytes, *, device: str | torch.device = "cpu"
) -> Seq2GMMDetector:
    """Rebuild a detector from metadata and weights bytes, verifying the sha256 first."""
    _check_metadata(metadata)
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
    try:
        cfg = Seq2GMMConfig.from_dict(metadata["config"])
    except DataError as exc:
        raise CheckpointError(f"checkpoint config is invalid: {exc}") from exc
    n_features = int(metadata["n_features"])
    net = build_model(cfg, n_features)
    state = {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights do not fit the model described by the metadata: {exc}"
        ) from exc
    det = Seq2GMMDetector(cfg, device=device)
    det.model = net.to(det.device).eval()
    det.n_features = n_features
    det.window_length = metadata.get("window_length")
    det.hop = metadata.get("hop")
    det.seed = (metadata.get("training_data") or {}).get("seed")
    if _CAL_LOC in tensors:
        det.normaliser = EnergyNormaliser(tensors[_CAL_LOC], tensors[_CAL_SCALE])
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


def save_checkpoint(detector: Seq2GMMDetector, directory: str | Path) -> Path:
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
) -> Seq2GMMDetector:
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
