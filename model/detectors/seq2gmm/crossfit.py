"""Cross-fitted segment energies: what every training window would score as a new window.

A training window's own energy is optimistic: the mixture was fitted to its features. With the
networks fixed, the training windows are split into folds (seeded) and each fold's segments are
scored by a mixture fitted by EM to the other folds' features only (same size, covariance and
floors as the model's own); the held-out windows keep the model's mixture, which never saw
them. These out-of-fold energies are the normal reference the threshold and the percentiles
are read from, so that ``threshold_fpr`` is a false-alarm rate on NEW normal cycles rather
than on the cycles the model was fitted to.
"""

from __future__ import annotations

import numpy as np
import torch

from model.detectors.seq2gmm.network import Seq2GMM
from model.detectors.seq2gmm.train import MixtureFit, compute_features, fit_mixture
from model.segmentation.base import SegmentBatch


def out_of_fold_energies(
    model: Seq2GMM,
    batch: SegmentBatch,
    train_idx: np.ndarray,
    *,
    n_folds: int,
    how: MixtureFit,
    seed: int,
) -> torch.Tensor:
    """(S,) float64 raw energies of every segment of ``batch`` (all training windows): those
    of the windows in ``train_idx`` out of fold, the others under the model's mixture."""
    device = model.input_mean.device
    batch = batch.to(device)
    info = model.segment_info(batch)
    z = compute_features(model, batch, info)  # (S, D)
    groups = model.groups(info.position)
    with torch.no_grad():
        energies = model.gmm.energy(z, eps=model.energy_eps, groups=groups).to(torch.float64)
    window = batch.window.cpu().numpy()
    folds = np.array_split(np.random.default_rng(seed).permutation(train_idx), n_folds)
    for k, fold in enumerate(folds):
        held = np.isin(window, fold)
        rest = np.isin(window, train_idx) & ~held
        if not held.any() or not rest.any():
            continue
        fit_on = torch.as_tensor(np.flatnonzero(rest), device=device)
        g_fit = groups[fit_on] if groups is not None else None
        gmm = fit_mixture(model, model.gmm.n_components, z[fit_on], g_fit, how, seed * 7919 + k)
        h = torch.as_tensor(np.flatnonzero(held), device=device)
        with torch.no_grad():
            g = groups[h] if groups is not None else None
            energies[h] = gmm.energy(z[h], eps=model.energy_eps, groups=g).to(torch.float64)
    return energies.cpu()
