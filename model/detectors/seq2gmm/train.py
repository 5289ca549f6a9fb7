"""Alternating training of Seq2GMM ("surrogate-based optimisation" in the reference).

Per epoch:

1. features z of every training segment with the networks frozen (no gradient, eval mode);
2. EM fit of the Gaussian mixture to those z (fresh seeded k-means++ init, or warm-started);
3. validation metrics (if a validation split exists) for this consistent (networks, mixture)
   pair; the best pair so far is kept (model selection) and training stops after ``patience``
   epochs without improvement;
4. gradient steps on the networks with the mixture frozen: one full-batch step (reference) or
   one pass of shuffled mini-batches, minimising ``reconstruction + energy_weight * mean(E)``.

A warm-up (``warmup_steps`` Adam steps at ``warmup_lr`` on the reconstruction alone) runs first.

Training budget (fit time bounded as the training set grows): with ``max_epoch_segments`` an
epoch's EM and gradient pass use a fresh seeded sample of at most that many training segments
(and validation a fixed sample of at most that many), and ``sample_budget`` caps the epochs so
that epochs x sampled segments x their mean length stays within it. A small training set is
not sampled and keeps its full epoch count (bit-identical to training without a budget).
Nothing here prints: ``on_epoch(epoch, metrics)`` receives each epoch's metrics (the CLI draws a
progress bar with them) and the returned :class:`TrainResult` keeps the whole history.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model.detectors.seq2gmm.config import Seq2GMMConfig, TrainConfig
from model.detectors.seq2gmm.descriptors import SegmentInfo
from model.detectors.seq2gmm.network import SegmentOutput, Seq2GMM
from model.gmm import GaussianMixture, fit_em
from model.segmentation.base import SegmentBatch

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1  # epoch whose state was kept (-1: the final state)
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def select_segments(batch: SegmentBatch, idx: torch.Tensor) -> SegmentBatch:
    """Sub-batch of the segments ``idx`` (1-D indices), trimmed to its own longest segment."""
    lengths = batch.lengths[idx]
    t = int(lengths.max())
    return SegmentBatch(
        values=batch.values[idx, :t],
        lengths=lengths,
        window=batch.window[idx],
        start=batch.start[idx],
        end=batch.end[idx],
        n_windows=batch.n_windows,
    )


def reconstruction_loss(out: SegmentOutput, kind: str) -> torch.Tensor:
    """Mean over segments of |x - x'| ("distance", reference) or of the masked MSE ("mse")."""
    return out.dist.mean() if kind == "distance" else out.sq_err.mean()


def _chunks(n: int, size: int | None) -> list[torch.Tensor]:
    idx = torch.arange(n)
    if size is None or size >= n:
        return [idx]
    return list(torch.split(idx, size))


def compute_features(
    model: Seq2GMM, batch: SegmentBatch, info: SegmentInfo, chunk: int | None = 4096
) -> torch.Tensor:
    """(S, D) features z with the networks in eval mode, without gradient, in chunks."""
    was_training = model.training
    model.eval()
    zs = []
    with torch.no_grad():
        for idx in _chunks(batch.values.shape[0], chunk):
            if idx.shape[0] == batch.values.shape[0]:
                zs.append(model(batch, info).z)
            else:
                idx = idx.to(batch.values.device)
                zs.append(model(select_segments(batch, idx), info.select(idx)).z)
    model.train(was_training)
    return torch.cat(zs, dim=0)


def evaluate(
    model: Seq2GMM,
    batch: SegmentBatch,
    info: SegmentInfo,
    cfg: TrainConfig,
    chunk: int | None = 4096,
) -> dict[str, float]:
    """Loss terms on a batch with the current networks and mixture (no gradient)."""
    was_training = model.training
    model.eval()
    n = batch.values.shape[0]
    rec_sum = 0.0
    en_sum = 0.0
    with torch.no_grad():
        for idx in _chunks(n, chunk):
            if idx.shape[0] == n:
                out = model(batch, info)
            else:
                idx = idx.to(batch.values.device)
                out = model(select_segments(batch, idx), info.select(idx))
            k = idx.shape[0]
            rec_sum += float(reconstruction_loss(out, cfg.recon_loss)) * k
            en_sum += float(model.energy(out).mean()) * k
    model.train(was_training)
    rec, en = rec_sum / n, en_sum / n
    return {"recon": rec, "energy": en, "loss": rec + cfg.energy_weight * en}


def train(
    model: Seq2GMM,
    train_batch: SegmentBatch,
    val_batch: SegmentBatch | None,
    cfg: TrainConfig,
    *,
    floor_abs: float,
    floor_rel: float,
    shrinkage: bool = False,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train ``model`` in place (already on its device; batches are moved to it)."""
    t0 = time.perf_counter()
    device = model.input_mean.device
    train_batch = train_batch.to(device)
    train_info = model.segment_info(train_batch)  # whole windows: positions and lengths are right
    val_batch = val_batch.to(device) if val_batch is not None else None
    val_info = model.segment_info(val_batch) if val_batch is not None else None
    gen = torch.Generator(device="cpu").manual_seed(seed)
    result = TrainResult()

    def em(epoch: int, warm: bool, batch: SegmentBatch, info: SegmentInfo) -> tuple[float, int]:
        z = compute_features(model, batch, info)
        res = fit_em(
            model.gmm,
            z,
            groups=model.groups(info.position),
            max_iter=cfg.em_max_iter,
            tol=cfg.em_tol,
            floor_abs=floor_abs,
            floor_rel=floor_rel,
            warm_start=warm,
            seed=seed * 100003 + epoch,
            shrinkage=shrinkage,
        )
        return res.log_likelihood[-1], res.n_iter

    model.train()
    _warm_up(model, train_batch, train_info, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = _BestState(cfg.min_delta)
    if val_batch is not None and val_info is not None:
        val_batch, val_info = _sample(val_batch, val_info, cfg.max_epoch_segments, gen)
    for epoch in range(budget_epochs(train_batch, cfg)):
        te = time.perf_counter()
        batch, info = _sample(train_batch, train_info, cfg.max_epoch_segments, gen)
        em_ll, em_iter = em(epoch, cfg.em_warm_start and epoch > 0, batch, info)
        metrics: dict[str, float] = {"em_log_likelihood": em_ll, "em_iterations": float(em_iter)}
        if val_batch is not None and val_info is not None:
            val = evaluate(model, val_batch, val_info, cfg)
            metrics.update({f"val_{k}": v for k, v in val.items()})
            best.update(val[cfg.selection], epoch, model)
        metrics.update(_gradient_pass(model, opt, batch, info, cfg, gen))
        metrics["seconds"] = time.perf_counter() - te
        result.history.append({"epoch": float(epoch), **metrics})
        result.epochs_run = epoch + 1
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if cfg.patience is not None and val_batch is not None and best.waited >= cfg.patience:
            result.stopped_early = True
            break

    if best.state is not None:
        model.load_state_dict(best.state)
        result.best_epoch = best.epoch
    elif cfg.final_em_refit or cfg.epochs == 0:
        em(result.epochs_run, cfg.em_warm_start and cfg.epochs > 0, train_batch, train_info)
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


def budget_epochs(batch: SegmentBatch, cfg: TrainConfig) -> int:
    """``cfg.epochs``, fewer when ``cfg.sample_budget`` would be exceeded (at least one)."""
    n = batch.values.shape[0]
    if cfg.sample_budget is None or n == 0:
        return cfg.epochs
    per_epoch = min(n, cfg.max_epoch_segments or n) * float(batch.lengths.double().mean())
    return max(1, min(cfg.epochs, int(cfg.sample_budget // per_epoch)))


def _sample(
    batch: SegmentBatch, info: SegmentInfo, cap: int | None, gen: torch.Generator
) -> tuple[SegmentBatch, SegmentInfo]:
    """A seeded sample of at most ``cap`` segments (all of them, no draw, when they fit)."""
    n = batch.values.shape[0]
    if cap is None or n <= cap:
        return batch, info
    idx = torch.randperm(n, generator=gen)[:cap].sort().values.to(batch.values.device)
    return select_segments(batch, idx), info.select(idx)


class _BestState:
    """Model selection: the state of the epoch with the lowest validation value so far."""

    def __init__(self, min_delta: float) -> None:
        self.min_delta = min_delta
        self.value = math.inf
        self.state: dict[str, torch.Tensor] | None = None
        self.epoch = -1
        self.waited = 0  # epochs since the best one

    def update(self, value: float, epoch: int, model: torch.nn.Module) -> None:
        if value < self.value - self.min_delta:
            self.value, self.epoch, self.waited = value, epoch, 0
            self.state = copy.deepcopy(model.state_dict())
        else:
            self.waited += 1


def _warm_up(model: Seq2GMM, batch: SegmentBatch, info: SegmentInfo, cfg: TrainConfig) -> None:
    """``warmup_steps`` full-batch Adam steps at ``warmup_lr`` on the reconstruction alone."""
    if cfg.warmup_steps <= 0:
        return
    warm_opt = torch.optim.Adam(model.parameters(), lr=cfg.warmup_lr)
    for _ in range(cfg.warmup_steps):
        warm_opt.zero_grad(set_to_none=True)
        loss = reconstruction_loss(model(batch, info), cfg.recon_loss)
        loss.backward()
        warm_opt.step()


def _gradient_pass(
    model: Seq2GMM,
    opt: torch.optim.Optimizer,
    batch: SegmentBatch,
    info: SegmentInfo,
    cfg: TrainConfig,
    gen: torch.Generator,
) -> dict[str, float]:
    """One epoch's gradient steps with the mixture frozen: one full-batch step, or one pass of
    shuffled mini-batches; returns the segment-weighted mean loss, recon and energy."""
    n = batch.values.shape[0]
    order = torch.randperm(n, generator=gen) if cfg.batch_size is not None else torch.arange(n)
    tot_loss = tot_rec = tot_en = 0.0
    for idx in _chunks(n, cfg.batch_size):
        sel = order[idx]
        if sel.shape[0] == n:
            out = model(batch, info)
        else:
            sel = sel.to(batch.values.device)
            out = model(select_segments(batch, sel), info.select(sel))
        rec = reconstruction_loss(out, cfg.recon_loss)
        en = model.energy(out).mean()
        loss = rec + cfg.energy_weight * en
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        k = sel.shape[0]
        tot_loss += float(loss.detach()) * k
        tot_rec += float(rec.detach()) * k
        tot_en += float(en.detach()) * k
    return {"loss": tot_loss / n, "recon": tot_rec / n, "energy": tot_en / n}


def train_from_config(
    model: Seq2GMM,
    train_batch: SegmentBatch,
    val_batch: SegmentBatch | None,
    cfg: Seq2GMMConfig,
    *,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """:func:`train` with the training settings and mixture floors of a whole config, as
    ``Seq2GMMDetector.fit`` runs it."""
    return train(
        model,
        train_batch,
        val_batch,
        cfg.train,
        floor_abs=cfg.network.cov_floor,
        floor_rel=cfg.network.cov_floor_relative,
        shrinkage=cfg.network.cov_shrinkage,
        seed=seed,
        on_epoch=on_epoch,
    )


@dataclass(frozen=True)
class MixtureFit:
    """How a mixture is refitted by EM to the features of fixed networks (component choice,
    cross-fitting): the covariance floors and shrinkage of the model's config, EM's stops."""

    floor_abs: float
    floor_rel: float
    shrinkage: bool = False
    em_max_iter: int = 100
    em_tol: float = 1e-3

    @classmethod
    def from_config(cls, cfg: Seq2GMMConfig) -> MixtureFit:
        n, t = cfg.network, cfg.train
        return cls(n.cov_floor, n.cov_floor_relative, n.cov_shrinkage, t.em_max_iter, t.em_tol)


def fit_mixture(
    model: Seq2GMM,
    n_components: int,
    z: torch.Tensor,
    groups: torch.Tensor | None,
    how: MixtureFit,
    seed: int,
) -> GaussianMixture:
    """A new mixture of ``n_components`` per segment position, shaped for ``model``'s
    features and covariance type, fitted by EM to ``z`` (the networks untouched)."""
    gmm = GaussianMixture(n_components, model.z_dim, model.gmm.covariance, model.n_positions)
    gmm.to(z.device)
    fit_em(
        gmm,
        z,
        groups=groups,
        max_iter=how.em_max_iter,
        tol=how.em_tol,
        floor_abs=how.floor_abs,
        floor_rel=how.floor_rel,
        seed=seed,
        shrinkage=how.shrinkage,
    )
    return gmm


def select_components(
    model: Seq2GMM,
    train_batch: SegmentBatch,
    val_batch: SegmentBatch,
    candidates: list[int],
    how: MixtureFit,
    *,
    seed: int = 0,
) -> tuple[int, dict[int, float]]:
    """Pick the number of mixture components by held-out log-likelihood; installs the winner.

    With the networks fixed, a mixture with each candidate number of components (per segment
    position) is fitted by EM to the training features and scored on the validation features
    (normal windows held out of training, never test data). The best mean log-likelihood wins;
    ties go to fewer components. Returns the choice and every candidate's score.
    """
    device = model.input_mean.device
    train_batch, val_batch = train_batch.to(device), val_batch.to(device)
    train_info, val_info = model.segment_info(train_batch), model.segment_info(val_batch)
    z_train = compute_features(model, train_batch, train_info)
    z_val = compute_features(model, val_batch, val_info)
    g_train, g_val = model.groups(train_info.position), model.groups(val_info.position)
    scores: dict[int, float] = {}
    best: tuple[float, int, GaussianMixture] | None = None
    for k in sorted(set(candidates)):
        gmm = fit_mixture(model, k, z_train, g_train, how, seed)
        with torch.no_grad():
            ll = float(-gmm.energy(z_val, groups=g_val).mean())
        scores[k] = ll
        if best is None or ll > best[0]:
            best = (ll, k, gmm)
    assert best is not None
    model.replace_mixture(best[2])
    return best[1], scores
