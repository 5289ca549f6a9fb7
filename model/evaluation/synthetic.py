"""Synthetic quasi-periodic series with labelled anomalies (for demos, tests and `produce`).

Each series repeats a heartbeat-like cycle (three bumps on a baseline: a small wave, a sharp
peak, a broad wave) whose period jitters from cycle to cycle (optionally also swinging slowly:
phase drift) and whose phase is shifted per series (synchronisation errors); every feature is
a scaled, shifted copy plus noise.
Anomalous cycles get one of:

* ``spike``: 1-4 samples pushed up by 3-8 noise-free amplitudes in a few features;
* ``drift``: a linear ramp added from a random point of the cycle;
* ``pattern``: the cycle replaced by a sinusoid of another frequency;
* ``shape``: the sharp peak widened and moved (a cycle-shape change only a segment-level
  model sees: the cycle's value range and mean stay close to normal).

Labels come per time point and per cycle. Fully determined by the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.errors import DataError
from model.evaluation.data import sliding_windows

KINDS = ("spike", "drift", "pattern", "shape")


@dataclass(frozen=True)
class SyntheticConfig:
    n_series: int = 4
    n_cycles: int = 60
    period: int = 64
    period_jitter: float = 0.08  # relative std of the cycle length (its bound when uniform)
    jitter_law: str = "normal"  # "uniform": cycle lengths uniform within +-period_jitter
    period_drift: float = 0.0  # relative amplitude of a slow swing of the mean period (one
    # sine over the series): the phase drifts against any fixed clock
    n_features: int = 1
    noise: float = 0.03
    anomaly_rate: float = 0.05  # chance that an anomaly episode starts at a cycle (from the 6th)
    episode_cycles: int = 1  # consecutive anomalous cycles per episode (one kind throughout)
    kinds: tuple[str, ...] = KINDS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.period < 8 or self.n_cycles < 1 or self.n_series < 1 or self.n_features < 1:
            raise DataError("period >= 8 and at least one series, cycle and feature are needed")
        if self.jitter_law not in ("normal", "uniform") or not 0 <= self.period_drift < 0.5:
            raise DataError("jitter_law is 'normal' or 'uniform'; period_drift within [0, 0.5)")
        if not 0 <= self.anomaly_rate <= 1:
            raise DataError("anomaly_rate must be within [0, 1]")
        if self.episode_cycles < 1:
            raise DataError("episode_cycles must be at least 1")
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise DataError(f"unknown anomaly kinds {sorted(unknown)}; choose from {KINDS}")


@dataclass(frozen=True)
class SyntheticSeries:
    series_id: str
    values: np.ndarray  # (T, F)
    point_labels: np.ndarray  # (T,) 0/1
    cycle_starts: np.ndarray  # (C,) first sample of each cycle
    cycle_labels: np.ndarray  # (C,) 0/1
    cycle_kinds: tuple[str, ...]  # (C,) "" for normal cycles


def _bump(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def _cycle(n: int, peak_at: float = 0.4, peak_width: float = 0.025) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    return (
        0.25 * _bump(t, 0.18, 0.04)
        + 1.0 * _bump(t, peak_at, peak_width)
        + 0.4 * _bump(t, 0.7, 0.07)
    )


def generate(cfg: SyntheticConfig) -> list[SyntheticSeries]:
    rng = np.random.default_rng(cfg.seed)
    out = []
    for s in range(cfg.n_series):
        scale = 1.0 + 0.2 * rng.standard_normal(cfg.n_features)  # (F,)
        offset = 0.1 * rng.standard_normal(cfg.n_features)  # (F,)
        phase = int(rng.integers(0, cfg.period))  # synchronisation shift
        cycles, labels, kinds, starts = [], [], [], []
        pos = 0
        episode, episode_kind = 0, ""  # cycles left in the episode under way, and its kind
        for c in range(cfg.n_cycles):
            n = _cycle_length(cfg, c, rng)
            base = np.roll(_cycle(n), phase % n)
            x = np.outer(base, scale) + offset  # (n, F)
            kind = ""
            point = np.zeros(n, dtype=np.int64)
            if episode == 0 and c >= 5 and cfg.kinds and rng.random() < cfg.anomaly_rate:
                episode, episode_kind = cfg.episode_cycles, str(rng.choice(cfg.kinds))
            if episode > 0:
                kind, episode = episode_kind, episode - 1
                x, point = _inject(kind, x, base, scale, offset, phase, rng)
            x = x + cfg.noise * rng.standard_normal(x.shape)
            cycles.append(x)
            labels.append(point)
            kinds.append(kind)
            starts.append(pos)
            pos += n
        values = np.concatenate(cycles)
        point_labels = np.concatenate(labels)
        out.append(
            SyntheticSeries(
                series_id=f"synthetic-{s}",
                values=values,
                point_labels=point_labels,
                cycle_starts=np.array(starts),
                cycle_labels=np.array([int(k != "") for k in kinds]),
                cycle_kinds=tuple(kinds),
            )
        )
    return out


def _cycle_length(cfg: SyntheticConfig, c: int, rng: np.random.Generator) -> int:
    """The length of cycle ``c``: the period, swung by the drift, jittered."""
    mean = cfg.period * (1 + cfg.period_drift * np.sin(2 * np.pi * c / cfg.n_cycles))
    if cfg.jitter_law == "uniform":
        return max(8, round(mean * (1 + cfg.period_jitter * rng.uniform(-1.0, 1.0))))
    return max(8, round(mean * (1 + cfg.period_jitter * rng.standard_normal())))


def _inject(
    kind: str,
    x: np.ndarray,
    base: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    phase: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    n, f = x.shape
    x = x.copy()
    point = np.zeros(n, dtype=np.int64)
    if kind == "spike":
        width = int(rng.integers(1, 5))
        at = int(rng.integers(0, n - width))
        feats = rng.choice(f, size=max(1, f // 2), replace=False)
        x[at : at + width, feats] += rng.uniform(3, 8) * np.abs(scale[feats])
        point[at : at + width] = 1
    elif kind == "drift":
        at = int(rng.integers(0, n // 2))
        ramp = np.linspace(0.0, rng.uniform(0.8, 1.5), n - at)
        x[at:] += ramp[:, None]
        point[at:] = 1
    elif kind == "pattern":
        t = np.arange(n)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2.5, 4.5) * t / n)
        x = np.outer(wave, scale) + offset
        point[:] = 1
    elif kind == "shape":
        moved = np.roll(_cycle(n, peak_at=0.55, peak_width=0.06), phase % n)
        x = np.outer(moved, scale) + offset
        point[np.abs(moved - base) > 0.05] = 1
    return x, point


def synthetic_training_windows(length: int, seed: int) -> list[np.ndarray]:
    """Normal synthetic series cut into windows of ``length`` with a hop of length/2."""
    cfg = SyntheticConfig(n_series=4, n_cycles=60, period=length, anomaly_rate=0.0, seed=seed)
    hop = max(1, length // 2)
    windows: list[np.ndarray] = []
    for s in generate(cfg):
        windows += list(sliding_windows(s.values, length, hop).windows)
    return windows
