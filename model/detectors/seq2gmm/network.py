"""The Seq2GMM networks in one file: compression network, reconstruction features, estimator.

Shapes: S segments in a batch, T the longest segment, F input features per sample, H GRU
units, D the width of the feature vector z, K mixture components.

Pipeline for a :class:`~model.segmentation.base.SegmentBatch`::

    values (S, T, F) --SegmentEncoder (packed GRU)--> h_c (S, H)
    h_c --decoder--> x' (S, T', F)        T' = T (+3 for the reference's [EOS, PAD, PAD])
    (target, x') --masked distances--> rd, cs (S,)
    z = [rd, h_c, cs, descriptors] (S, D) --EstimationNetwork--> log gamma (S, K)
    (z, log gamma) --GaussianMixture--> energy (S,)

The per-segment context (:class:`SegmentInfo`) and the hand-made descriptors appended to z are
in :mod:`model.detectors.seq2gmm.descriptors`.

Padding never leaks: the encoder reads packed sequences (its code is the state after the
segment's own last sample), the decoders are causal (outputs before a segment's end never see
later inputs), and every distance or descriptor is masked to the segment's own samples.

The modules take plain numbers, not config objects (see :func:`build_model` in
:mod:`model.detectors.seq2gmm.detector` for the mapping from
:class:`~model.detectors.seq2gmm.config.Seq2GMMConfig`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from model.detectors.seq2gmm.descriptors import (
    SegmentInfo,
    segment_descriptors,
    segment_descriptors_width,
)
from model.errors import DataError
from model.fitting import StandardisedNetwork
from model.gmm import GaussianMixture
from model.segmentation.base import SegmentBatch


class SegmentEncoder(nn.Module):
    """GRU over each segment's true samples; the code is its final state (last layer)."""

    def __init__(
        self, n_features: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False
    ):
        super().__init__()
        self.gru = nn.GRU(
            n_features, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional
        )
        self.num_layers = num_layers
        self.directions = 2 if bidirectional else 1
        self.hidden_size = hidden_size
        self.code_dim = hidden_size * self.directions

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x (S, T, F), lengths (S,) -> h_c (S, H * directions)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)  # (layers * dirs, S, H), restored to input order
        s = x.shape[0]
        h_last = h_n.view(self.num_layers, self.directions, s, self.hidden_size)[-1]  # (dirs, S, H)
        return h_last.transpose(0, 1).reshape(s, self.code_dim)  # (S, dirs * H)


class FreeRunningDecoder(nn.Module):
    """The reference decoder: starts from h_c with input EOS, then feeds back its read-out."""

    def __init__(self, n_features: int, hidden_size: int, code_dim: int, eos_value: float = 1.0):
        super().__init__()
        self.cell = nn.GRUCell(n_features, hidden_size)
        self.readout = nn.Linear(hidden_size, n_features)
        # the reference feeds h_c straight in; a projection only when the sizes differ
        self.init = nn.Linear(code_dim, hidden_size) if code_dim != hidden_size else nn.Identity()
        self.n_features = n_features
        self.eos_value = eos_value

    def forward(self, code: torch.Tensor, lengths: torch.Tensor, n_steps: int) -> torch.Tensor:
        # code (S, C) -> x' (S, n_steps, F); step t depends only on steps < t (causal)
        h = self.init(code)  # (S, H)
        inp = torch.full(
            (code.shape[0], self.n_features), self.eos_value, dtype=code.dtype, device=code.device
        )
        outs = []
        for _ in range(n_steps):
            h = self.cell(inp, h)  # (S, H)
            inp = self.readout(h)  # (S, F), next input = this output
            outs.append(inp)
        return torch.stack(outs, dim=1)  # (S, n_steps, F)


def code_and_phase(code: torch.Tensor, lengths: torch.Tensor, n_steps: int) -> torch.Tensor:
    """(S, n_steps, C + 1): the code at every step next to the step's phase t / (L - 1) in the
    segment (clamped denominator: a one-sample segment has phase t)."""
    s = code.shape[0]
    t = torch.arange(n_steps, device=code.device, dtype=code.dtype)  # (T,)
    denom = (lengths.to(code.dtype) - 1.0).clamp_min(1.0)  # (S,)
    phase = (t[None, :] / denom[:, None]).unsqueeze(-1)  # (S, T, 1)
    return torch.cat([code[:, None, :].expand(s, n_steps, code.shape[1]), phase], dim=-1)


class ConditionedDecoder(nn.Module):
    """A non-autoregressive GRU decoder: at step t it reads [h_c, t / (L - 1)], so it knows the
    segment's length and phase; initial state tanh(W h_c). Causal, hence padding-safe."""

    def __init__(self, n_features: int, hidden_size: int, code_dim: int):
        super().__init__()
        self.init = nn.Linear(code_dim, hidden_size)
        self.gru = nn.GRU(code_dim + 1, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, n_features)

    def forward(self, code: torch.Tensor, lengths: torch.Tensor, n_steps: int) -> torch.Tensor:
        # code (S, C), lengths (S,) -> x' (S, n_steps, F)
        inp = code_and_phase(code, lengths, n_steps)  # (S, T, C+1)
        h0 = torch.tanh(self.init(code))[None]  # (1, S, H)
        out, _ = self.gru(inp, h0)  # (S, T, H)
        return self.readout(out)  # (S, T, F)


class PhaseDecoder(nn.Module):
    """A non-recurrent decoder: x'_t = MLP([h_c, t / (L - 1)]), every step in parallel.

    It reconstructs the segment as a function of its phase, conditioned on the code; each
    output depends only on the code, its own step and the segment's true length.
    """

    def __init__(self, n_features: int, hidden_size: int, code_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(code_dim + 1, 4 * hidden_size),
            nn.Tanh(),
            nn.Linear(4 * hidden_size, 4 * hidden_size),
            nn.Tanh(),
            nn.Linear(4 * hidden_size, n_features),
        )

    def forward(self, code: torch.Tensor, lengths: torch.Tensor, n_steps: int) -> torch.Tensor:
        # code (S, C), lengths (S,) -> x' (S, n_steps, F)
        return self.net(code_and_phase(code, lengths, n_steps))  # (S, T, F)


def masked_norm(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over (T, F) of the masked samples. x (S, T, F), mask (S, T) -> (S,)."""
    sq = (x * x * mask[..., None]).sum(dim=(1, 2))
    return torch.sqrt(sq + 1e-20)  # + tiny: finite gradient at 0


def reconstruction_features(
    target: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DAGMM's reconstruction features on the true samples only.

    target, recon (S, T, F), mask (S, T) -> distance |x - x'| (S,), relative distance
    rd = |x - x'| / (|x| + eps) (S,), cosine similarity cs = <x, x'> / (|x| |x'| + eps) (S,).
    """
    m = mask[..., None].to(target.dtype)  # (S, T, 1)
    dist = masked_norm(target - recon, mask)  # (S,)
    x_norm = masked_norm(target, mask)
    r_norm = masked_norm(recon, mask)
    rd = dist / (x_norm + eps)
    cs = (target * recon * m).sum(dim=(1, 2)) / (x_norm * r_norm + eps)
    return dist, rd, cs


class EstimationNetwork(nn.Module):
    """MLP + softmax: z (S, D) -> log memberships log gamma (S, G * K).

    With G groups (segment positions) the softmax runs over the K components of each
    sample's own group; the other groups' memberships are exactly zero (log = -inf).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        n_components: int,
        activation: str | None = None,
        dropout: float = 0.0,
        n_groups: int = 1,
    ):
        super().__init__()
        self.n_groups = n_groups
        self.n_components = n_components
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if activation == "tanh":
                layers.append(nn.Tanh())
            elif activation == "relu":
                layers.append(nn.ReLU())
            elif activation is not None:
                raise DataError(f"unknown estimator activation {activation!r}")
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, n_components * n_groups))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.net(z)  # (S, G * K)
        if self.n_groups > 1:
            if groups is None:
                raise DataError("a grouped estimator needs each segment's group")
            comp_group = torch.arange(logits.shape[1], device=z.device) // self.n_components
            logits = logits.masked_fill(comp_group[None, :] != groups[:, None], -torch.inf)
        return torch.log_softmax(logits, dim=-1)  # (S, G * K)


@dataclass
class SegmentOutput:
    """Everything the model computes for a batch of segments."""

    code: torch.Tensor  # (S, C)
    recon: torch.Tensor  # (S, T', F)
    target: torch.Tensor  # (S, T', F)
    target_mask: torch.Tensor  # (S, T') bool
    dist: torch.Tensor  # (S,) |x - x'| over the target's true samples
    sq_err: torch.Tensor  # (S,) mean squared error over the target's true samples
    z: torch.Tensor  # (S, D)
    log_gamma: torch.Tensor  # (S, G * K)
    position: torch.Tensor  # (S,) segment position in its window


class Seq2GMM(StandardisedNetwork):
    """Compression network + estimation network + Gaussian mixture."""

    def __init__(
        self,
        n_features: int,
        hidden_size: int = 15,
        num_layers: int = 1,
        bidirectional: bool = False,
        decoder: str = "free_running",
        eos_value: float = 1.0,
        eos_in_target: bool = True,
        extra_steps: int = 3,
        recon_eps: float = 1e-8,
        descriptors: Sequence[str] = (),
        estimator_hidden: Sequence[int] = (128, 128),
        estimator_activation: str | None = None,
        estimator_dropout: float = 0.0,
        n_components: int = 1,
        covariance: str = "diag",
        energy_eps: float = 1e-12,
        n_positions: int = 1,
        membership: str = "estimator",
        shape_points: int = 16,
        z_parts: Sequence[str] = ("rd", "code", "cs"),
        context_points: int = 8,
    ):
        super().__init__(n_features)
        self.n_features = n_features
        self.encoder = SegmentEncoder(n_features, hidden_size, num_layers, bidirectional)
        code_dim = self.encoder.code_dim
        if decoder == "free_running":
            self.decoder: nn.Module = FreeRunningDecoder(
                n_features, hidden_size, code_dim, eos_value
            )
        elif decoder == "conditioned":
            self.decoder = ConditionedDecoder(n_features, hidden_size, code_dim)
        elif decoder == "phase_mlp":
            self.decoder = PhaseDecoder(n_features, hidden_size, code_dim)
        else:
            raise DataError(
                f"unknown decoder {decoder!r}: use 'free_running', 'conditioned' or 'phase_mlp'"
            )
        self.eos_value = eos_value
        self.eos_in_target = eos_in_target
        self.extra_steps = extra_steps if eos_in_target else 0
        self.recon_eps = recon_eps
        self.descriptors = tuple(descriptors)
        self.shape_points = shape_points
        self.context_points = context_points if "context" in self.descriptors else 0
        n_desc = len(
            segment_descriptors_width(self.descriptors, n_features, shape_points, context_points)
        )
        unknown = set(z_parts) - {"rd", "code", "cs"}
        if unknown:
            raise DataError(f"unknown z parts {sorted(unknown)}: use 'rd', 'code', 'cs'")
        self.z_parts = tuple(p for p in ("rd", "code", "cs") if p in z_parts)  # fixed order
        widths = {"rd": 1, "code": code_dim, "cs": 1}
        self.z_dim = sum(widths[p] for p in self.z_parts) + n_desc
        if self.z_dim == 0:
            raise DataError("z would be empty: keep at least one z part or descriptor")
        if membership not in ("estimator", "mixture"):
            raise DataError(f"membership must be 'estimator' or 'mixture', got {membership!r}")
        self.membership = membership
        # one mixture per segment position when n_positions > 1 (groups of the GMM)
        self.n_positions = n_positions
        # the reference's estimation network gives per-segment memberships; with
        # membership="mixture" the mixture's own EM weights are used and there is none
        self.estimator: EstimationNetwork | None = None
        if membership == "estimator":
            self.estimator = EstimationNetwork(
                self.z_dim,
                estimator_hidden,
                n_components,
                estimator_activation,
                estimator_dropout,
                n_positions,
            )
        self.gmm = GaussianMixture(n_components, self.z_dim, covariance, n_groups=n_positions)
        self.energy_eps = energy_eps

    def _target(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction target (S, T', F) and its mask (S, T')."""
        s, t, f = x.shape
        if not self.eos_in_target:
            steps = torch.arange(t, device=x.device)
            return x, steps[None, :] < lengths[:, None]
        # reference: segment, then EOS, then PAD = 0 (self.extra_steps - 1 of them)
        t2 = t + self.extra_steps
        target = torch.zeros(s, t2, f, dtype=x.dtype, device=x.device)
        target[:, :t] = x
        rows = torch.arange(s, device=x.device)
        target[rows, lengths] = self.eos_value
        steps = torch.arange(t2, device=x.device)
        return target, steps[None, :] < (lengths + self.extra_steps)[:, None]

    def groups(self, position: torch.Tensor) -> torch.Tensor | None:
        """Mixture group of each segment: its position, or None with a single mixture."""
        if self.n_positions == 1:
            return None
        if int(position.max()) >= self.n_positions:
            raise DataError(
                f"a window has more than {self.n_positions} segments; this model has one mixture"
                f" per position: segment windows into exactly {self.n_positions} segments"
            )
        return position

    def segment_info(self, batch: SegmentBatch) -> SegmentInfo:
        """What this model needs to know of each segment's window; compute it on whole windows
        (all their segments), then :meth:`SegmentInfo.select` sub-batches from it."""
        return SegmentInfo.of(batch, self.context_points)

    def forward(self, batch: SegmentBatch, info: SegmentInfo | None = None) -> SegmentOutput:
        info = self.segment_info(batch) if info is None else info
        lengths = batch.lengths.to(batch.values.device)
        valid = batch.mask()[..., None].to(batch.values.dtype)  # (S, T, 1)
        x = (batch.values - self.input_mean) / self.input_std * valid  # (S, T, F), padding = 0
        code = self.encoder(x, lengths)  # (S, C)
        target, tmask = self._target(x, lengths)  # (S, T', F), (S, T')
        recon = self.decoder(code, lengths, target.shape[1])  # (S, T', F)
        dist, rd, cs = reconstruction_features(target, recon, tmask, self.recon_eps)
        diff = (target - recon) ** 2 * tmask[..., None]
        sq_err = diff.sum(dim=(1, 2)) / (tmask.sum(1) * x.shape[2])  # (S,)
        context = None
        if info.context is not None:  # standardised like x (resampling commutes with it)
            context = (info.context.to(x.device) - self.input_mean) / self.input_std
        desc = segment_descriptors(
            batch, info, x, self.descriptors, self.shape_points, context
        )  # (S, D_extra)
        parts = {"rd": rd[:, None], "code": code, "cs": cs[:, None]}
        z = torch.cat([parts[p] for p in self.z_parts] + [desc], dim=1)  # (S, D)
        position = info.position.to(z.device)
        groups = self.groups(position)
        if self.estimator is not None:
            log_gamma = self.estimator(z, groups)  # (S, G * K)
        else:  # the mixture's weights, zero outside each segment's group
            lw = self.gmm.log_weights.to(z.dtype)[None, :].expand(z.shape[0], -1)  # (S, G * K)
            mask = self.gmm.group_mask(groups, z.shape[0])
            log_gamma = lw if mask is None else lw.masked_fill(~mask, -torch.inf)
        return SegmentOutput(code, recon, target, tmask, dist, sq_err, z, log_gamma, position)

    def replace_mixture(self, gmm: GaussianMixture) -> None:
        """Swap in another fitted mixture (model selection); needs membership="mixture"."""
        if self.estimator is not None:
            raise DataError("the estimator's width is tied to the mixture; cannot swap it")
        if gmm.dim != self.z_dim or gmm.n_groups != self.n_positions:
            raise DataError("the new mixture does not match this model's features or positions")
        self.gmm = gmm

    def energy(self, out: SegmentOutput) -> torch.Tensor:
        """(S,) segment energies under the (frozen) mixture: memberships from the estimator
        (reference) or the mixture's own weights."""
        log_gamma = out.log_gamma if self.membership == "estimator" else None
        return self.gmm.energy(
            out.z, log_gamma, eps=self.energy_eps, groups=self.groups(out.position)
        )
