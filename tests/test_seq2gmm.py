"""The networks: shapes, padding independence, descriptors, finite energies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.detectors.seq2gmm.config import default_config, faithful_config
from model.detectors.seq2gmm.descriptors import (
    SegmentInfo,
    resample_segments,
    segment_positions,
    window_context,
)
from model.detectors.seq2gmm.detector import Seq2GMMDetector, build_model
from model.detectors.seq2gmm.network import FreeRunningDecoder, SegmentEncoder, Seq2GMM
from model.detectors.seq2gmm.train import select_segments
from model.errors import DataError
from model.gmm import fit_em
from model.segmentation.base import Segmentation, SegmentBatch, pack_segments

DECODERS = ["free_running", "conditioned", "phase_mlp"]


def _model(decoder: str, n_features: int = 1, **kw: object) -> Seq2GMM:
    torch.manual_seed(0)
    return Seq2GMM(
        n_features,
        hidden_size=6,
        decoder=decoder,
        eos_in_target=decoder == "free_running",
        descriptors=(
            "shape",
            "length",
            "position",
            "level",
            "spread",
            "endpoints",
            "slope",
            "context",
        ),
        shape_points=8,
        context_points=5,
        estimator_hidden=(8,),
        estimator_activation="tanh",
        **kw,  # type: ignore[arg-type]
    ).eval()


def _batch(windows: list[np.ndarray], cuts: list[list[int]]) -> SegmentBatch:
    return pack_segments(windows, Segmentation(np.array(cuts)))


def _windows(rng: np.random.Generator, n: int, length: int, f: int = 1) -> list[np.ndarray]:
    t = np.linspace(0, 2 * np.pi, length)
    return [
        np.sin(t)[:, None] * rng.uniform(0.8, 1.2, f) + 0.05 * rng.normal(size=(length, f))
        for _ in range(n)
    ]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("n_features", [1, 3])
def test_output_shapes(decoder: str, n_features: int) -> None:
    rng = np.random.default_rng(0)
    wins = _windows(rng, 4, 30, n_features)
    batch = _batch(wins, [[0, 9, 20, 29]] * 4)
    model = _model(decoder, n_features, n_components=2)
    out = model(batch)
    s, t = 12, int(batch.lengths.max())
    extra = 3 if decoder == "free_running" else 0
    assert out.code.shape == (s, 6)
    assert out.recon.shape == (s, t + extra, n_features)
    assert out.target.shape == out.recon.shape and out.target_mask.shape == (s, t + extra)
    assert out.z.shape == (s, model.z_dim)
    assert out.log_gamma.shape == (s, 2)
    assert torch.allclose(out.log_gamma.exp().sum(1), torch.ones(s))
    fit_em(model.gmm, out.z.detach(), floor_abs=1e-6)
    assert model.energy(out).shape == (s,)


@pytest.mark.parametrize("decoder", DECODERS)
def test_padding_does_not_leak(decoder: str) -> None:
    """The same segment gives the same code and features whatever the batch's padding."""
    rng = np.random.default_rng(1)
    short = rng.normal(size=(12, 1))
    long = rng.normal(size=(60, 1))
    model = _model(decoder)
    alone = _batch([short], [[0, 11]])
    # the same segment padded to 60 by a longer neighbour in the batch
    mixed = _batch([short, long], [[0, 11], [0, 59]])
    with torch.no_grad():
        a = model(alone)
        b = model(mixed)
        # the same single segment with 40 extra padding steps and garbage in the padding
        padded = SegmentBatch(
            values=torch.cat([alone.values, torch.full((1, 40, 1), 7.0)], dim=1),
            lengths=alone.lengths,
            window=alone.window,
            start=alone.start,
            end=alone.end,
            n_windows=1,
        )
        c = model(padded)
    torch.testing.assert_close(b.code[:1], a.code, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b.z[:1], a.z, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c.code, a.code, rtol=0, atol=0)
    torch.testing.assert_close(c.z, a.z, rtol=1e-6, atol=1e-7)
    n = int(a.target_mask.sum())
    torch.testing.assert_close(b.recon[0, :n], a.recon[0, :n], rtol=1e-5, atol=1e-6)


def test_reference_target_has_eos_then_padding() -> None:
    model = _model("free_running")
    batch = _batch([np.arange(5.0) + 2.0, np.arange(9.0) + 2.0], [[0, 4], [0, 8]])
    out = model(batch)
    assert out.target.shape[1] == 9 + 3
    assert out.target[0, 5, 0] == 1.0 and out.target[0, 6, 0] == 0.0  # EOS, PAD after segment
    assert out.target_mask[0].sum() == 5 + 3 and out.target_mask[1].sum() == 9 + 3


def test_free_running_decoder_feeds_back_its_output() -> None:
    torch.manual_seed(0)
    dec = FreeRunningDecoder(1, 4, 4)
    code = torch.randn(2, 4)
    full = dec(code, torch.tensor([3, 5]), 6)
    part = dec(code, torch.tensor([3, 5]), 3)
    torch.testing.assert_close(full[:, :3], part)  # causal: later steps do not change earlier ones


def test_encoder_code_is_the_state_after_the_last_true_sample() -> None:
    torch.manual_seed(0)
    enc = SegmentEncoder(1, 5)
    x = torch.randn(1, 10, 1)
    h_short = enc(x[:, :4], torch.tensor([4]))
    h_masked = enc(x, torch.tensor([4]))
    torch.testing.assert_close(h_short, h_masked, rtol=0, atol=0)


def test_resample_segments_matches_numpy_interp() -> None:
    rng = np.random.default_rng(2)
    segs = [rng.normal(size=n) for n in (2, 7, 19)]
    values = torch.zeros(3, 19, 1, dtype=torch.float64)
    for i, s in enumerate(segs):
        values[i, : len(s), 0] = torch.tensor(s)
    values[0, 2:, 0] = 99.0  # garbage in the padding must not be read
    got = resample_segments(values, torch.tensor([2, 7, 19]), 11)[..., 0].numpy()
    for i, s in enumerate(segs):
        want = np.interp(np.linspace(0, 1, 11), np.linspace(0, 1, len(s)), s)
        np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=1e-12)


def test_segment_positions_survive_shuffled_sub_batches() -> None:
    rng = np.random.default_rng(3)
    wins = _windows(rng, 3, 20)
    batch = _batch(wins, [[0, 5, 12, 19]] * 3)
    info = SegmentInfo.of(batch)
    assert info.position.tolist() == [0, 1, 2] * 3
    assert info.window_length.tolist() == [20] * 9
    idx = torch.tensor([7, 2, 4, 0])
    assert info.select(idx).position.tolist() == [1, 2, 1, 0]
    # computed from the starts, positions do not depend on the order of the segments
    perm = torch.tensor([8, 3, 0, 5, 1, 7, 2, 6, 4])
    assert segment_positions(select_segments(batch, perm)).tolist() == info.position[perm].tolist()


def test_window_context_is_each_segments_window_resampled() -> None:
    rng = np.random.default_rng(6)
    wins = [rng.normal(size=(n, 2)) for n in (12, 20, 9)]
    cuts = [[0, 3, 7, 11], [0, 10, 11, 19], [0, 1, 2, 8]]
    batch = _batch(wins, cuts)
    got = window_context(batch, 7).numpy()  # (S, 7, 2)
    assert got.shape == (9, 7, 2)
    for s in range(9):
        w = wins[int(batch.window[s])]
        for f in range(2):
            want = np.interp(np.linspace(0, 1, 7), np.linspace(0, 1, len(w)), w[:, f])
            np.testing.assert_allclose(got[s, :, f], want, rtol=1e-5, atol=1e-5)
    # computed once on whole windows, it survives sub-batching in any order
    info = SegmentInfo.of(batch, context_points=7)
    perm = torch.tensor([8, 3, 0, 5])
    assert info.context is not None
    np.testing.assert_array_equal(info.select(perm).context, got[perm.numpy()])
    # a batch that lacks some windows entirely (the training share of a split)
    kept = torch.nonzero(batch.window != 1).flatten()
    np.testing.assert_array_equal(window_context(select_segments(batch, kept), 7), got[kept])


def test_context_features_do_not_depend_on_the_sub_batch() -> None:
    model = _model("phase_mlp", 2)
    rng = np.random.default_rng(7)
    wins = _windows(rng, 5, 25, 2)
    batch = _batch(wins, [[0, 6, 15, 24]] * 5)
    info = model.segment_info(batch)
    with torch.no_grad():
        z_all = model(batch, info).z
        idx = torch.tensor([14, 2, 7])
        z_sub = model(select_segments(batch, idx), info.select(idx)).z
    torch.testing.assert_close(z_sub, z_all[idx], rtol=1e-5, atol=1e-6)
    # a model without the context descriptor computes no context
    assert Seq2GMM(1).segment_info(batch).context is None


@pytest.mark.parametrize("name", ["faithful", "default"])
def test_energies_finite_on_constant_and_degenerate_windows(name: str) -> None:
    cfg = faithful_config() if name == "faithful" else default_config()
    model = build_model(cfg, 1).eval()
    rng = np.random.default_rng(4)
    normal = _windows(rng, 6, 24)
    weird = [np.zeros(24), np.full(24, 3.0), np.r_[np.zeros(23), 1e3], np.linspace(-1, 1, 24)]
    k = cfg.segmentation.n_segments
    cuts = np.tile(np.linspace(0, 23, k + 1).round().astype(int), (len(normal), 1))
    batch = pack_segments(normal, Segmentation(cuts))
    info = model.segment_info(batch)
    with torch.no_grad():
        z = model(batch, info).z
    fit_em(model.gmm, z, groups=model.groups(info.position), floor_abs=cfg.network.cov_floor)
    wbatch = pack_segments(weird, Segmentation(np.tile(cuts[:1], (len(weird), 1))))
    with torch.no_grad():
        out = model(wbatch)
        e = model.energy(out)
    assert torch.isfinite(out.z).all()
    assert torch.isfinite(e).all()


def test_grouped_model_refuses_more_segments_than_positions() -> None:
    model = _model("phase_mlp", n_positions=2)
    rng = np.random.default_rng(5)
    batch = _batch(_windows(rng, 1, 20), [[0, 5, 12, 19]])
    with pytest.raises(DataError, match="segments"):
        model(batch)


def test_unknown_options_are_refused() -> None:
    with pytest.raises(DataError):
        Seq2GMM(1, decoder="transformer")
    with pytest.raises(DataError):
        Seq2GMM(1, z_parts=("rd", "nonsense"))
    with pytest.raises(DataError):
        Seq2GMM(1, membership="vote")


def test_scoring_passes_are_bounded_by_a_sample_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # forward passes of at most SCORE_SAMPLES segment samples (segments x longest length), so
    # scoring memory does not grow with the batch; energies as in one pass up to float32 sums
    cfg = default_config()
    det = Seq2GMMDetector(cfg)
    det.model = build_model(cfg, 1).eval()
    windows = _windows(np.random.default_rng(6), 10, 30)
    k = cfg.segmentation.n_segments
    cuts = np.tile(np.linspace(0, 29, k + 1).round().astype(int), (len(windows), 1))
    batch = pack_segments(windows, Segmentation(cuts))
    info = det.model.segment_info(batch)
    with torch.no_grad():
        z = det.model(batch, info).z
    groups = det.model.groups(info.position)
    fit_em(det.model.gmm, z, groups=groups, floor_abs=cfg.network.cov_floor)
    whole, positions = det._raw_energies(batch)
    passes: list[int] = []
    forward = det.model.forward
    monkeypatch.setattr(det.model, "forward", lambda b, i=None: passes.append(1) or forward(b, i))
    longest = batch.values.shape[1]
    monkeypatch.setattr("model.detectors.seq2gmm.detector.SCORE_SAMPLES", 4 * longest)
    chunked, chunk_positions = det._raw_energies(batch)
    assert len(passes) == -(-batch.values.shape[0] // 4)
    assert torch.equal(chunk_positions, positions)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
