"""Marginals, cross-sample dependence and exact structure of every coupling."""

import math

import pytest
import torch
from scipy import stats

import couplednoise as cn
from tests.coupling_stats import assert_correlation, assert_standard_normal, draws

SHAPE = (4, 8, 8)  # d = 256
MASK = torch.zeros(32, 32)
MASK[8:24, 4:20] = 1  # given at 4x the latent resolution

GAUSSIAN_FAMILY = [
    ("independent", cn.Independent()),
    ("repulsive", cn.Repulsive()),
    ("repulsive-half", cn.Repulsive(strength=0.5)),
    ("equicorrelated-attractive", cn.Equicorrelated(rho=0.6)),
    ("equicorrelated-repulsive", cn.Equicorrelated(rho=-0.2)),
    ("antithetic", cn.Antithetic()),
    ("gaussian-zero-sum", cn.Gaussian(cn.Repulsive().correlation(5))),
    (
        "gaussian-ar1",
        cn.Gaussian(torch.tensor([[0.7 ** abs(i - j) for j in range(5)] for i in range(5)])),
    ),
]
ALL = [
    *GAUSSIAN_FAMILY,
    ("orthogonal", cn.Orthogonal()),
    ("subspace-mask", cn.Subspace(mask=MASK, share=0.7)),
    ("subspace-lowpass", cn.Subspace(band="lowpass", cutoff=0.2, share=1.0)),
    ("subspace-highpass", cn.Subspace(band="highpass", cutoff=0.2, share=0.5)),
]


@pytest.mark.parametrize(("label", "coupling"), ALL, ids=[a for a, _ in ALL])
def test_every_sample_is_exactly_standard_normal(label, coupling):
    z = draws(coupling, 5, SHAPE, repeats=80, seed=1)  # 80 * 256 = 20,480 values per sample
    for i in range(5):
        assert_standard_normal(z[:, i], f"{label} sample {i}")


@pytest.mark.parametrize(
    ("label", "coupling"), GAUSSIAN_FAMILY, ids=[a for a, _ in GAUSSIAN_FAMILY]
)
def test_cross_sample_correlation_matches_target(label, coupling):
    z = draws(coupling, 5, SHAPE, repeats=100, seed=2)
    assert_correlation(z, coupling.correlation(5), label)


def test_repulsive_correlation_values():
    assert cn.Repulsive().correlation(4)[0, 1].item() == pytest.approx(-1 / 3)
    assert cn.Repulsive(strength=0.5).correlation(3)[0, 1].item() == pytest.approx(-0.25)
    assert torch.equal(cn.Repulsive().correlation(1), torch.ones(1, 1, dtype=torch.float64))


@pytest.mark.parametrize("n", [2, 4, 16])
def test_maximal_repulsion_is_zero_sum(n):
    z = cn.Repulsive().sample(n, SHAPE, generator=torch.Generator().manual_seed(n))
    assert z.sum(0).abs().max().item() < 1e-5 * n
    # and the singular Gaussian form of the same law is zero-sum too
    z = cn.Gaussian(cn.Repulsive().correlation(n)).sample(n, SHAPE)
    assert z.sum(0).abs().max().item() < 1e-4 * n


def test_equicorrelated_rho_one_repeats_one_noise():
    z = cn.Equicorrelated(rho=1.0).sample(4, SHAPE, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z, z[:1].expand_as(z), atol=1e-6)


def test_antithetic_pairs_and_odd_n():
    z = cn.Antithetic().sample(5, SHAPE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z[1], -z[0]) and torch.equal(z[3], -z[2])
    # the lone fifth sample is independent of the rest
    zs = draws(cn.Antithetic(), 5, SHAPE, repeats=100, seed=3)
    assert_correlation(zs, cn.Antithetic().correlation(5), "antithetic odd")
    assert cn.Antithetic().correlation(5)[4, :4].abs().sum() == 0


@pytest.mark.parametrize(
    ("n", "shape"), [(4, (2, 4, 4)), (8, (4, 8, 8)), (16, (4, 32, 32)), (32, (1, 8, 4))]
)
def test_orthogonal_rows_exactly_orthogonal(n, shape):
    """Both code paths: Householder (d < 16 n) and Cholesky QR (d >= 16 n)."""
    z = cn.Orthogonal().sample(n, shape, generator=torch.Generator().manual_seed(n)).flatten(1)
    unit = z.double() / z.double().norm(dim=1, keepdim=True)
    gram = unit @ unit.T
    assert (gram - torch.eye(n, dtype=gram.dtype)).abs().max().item() < 1e-5


@pytest.mark.parametrize("shape", [(2, 4, 4), (4, 16, 16)], ids=["householder", "cholesky-qr"])
def test_orthogonal_norms_are_chi(shape):
    d = math.prod(shape)
    z = draws(cn.Orthogonal(), 4, shape, repeats=500, seed=4)
    squared_norms = (z**2).sum(-1)  # [repeats, n], each chi^2_d
    for i in range(4):
        assert stats.kstest(squared_norms[:, i].numpy(), stats.chi2(d).cdf).pvalue > 1e-4
    # norms are independent across samples: correlation of squared norms within 5 sigma of 0
    r = torch.corrcoef(squared_norms.T)[0, 1].item()
    assert abs(r) < 5 / math.sqrt(500)


def test_orthogonal_too_many_samples():
    with pytest.raises(ValueError, match=r"n <= dim = prod\(shape\) = 32"):
        cn.Orthogonal().sample(33, (2, 4, 4))


def test_subspace_mask_shares_inside_and_is_independent_outside():
    coupling = cn.Subspace(mask=MASK, share=1.0)
    z = draws(coupling, 4, SHAPE, repeats=60, seed=5).reshape(60, 4, *SHAPE)
    inside = (
        torch.nn.functional.interpolate(MASK[None, None], size=(8, 8), mode="area")[0, 0] >= 0.5
    )
    assert inside.sum() == 16  # 16x16 pixel box at 32x32 -> 4x4 cells at 8x8
    assert torch.equal(z[:, 0][..., inside], z[:, 3][..., inside])
    outside = z[..., ~inside].reshape(60, 4, -1)
    assert_correlation(outside, torch.eye(4, dtype=torch.float64), "outside mask")


@pytest.mark.parametrize("share", [0.0, 0.4])
def test_subspace_share_sets_inside_correlation(share):
    z = draws(cn.Subspace(mask=MASK, share=share), 4, SHAPE, repeats=150, seed=6)
    inside = cn.Subspace(mask=MASK).project(torch.ones(1, *SHAPE)).flatten().bool()
    assert_correlation(z[..., inside], cn.Subspace(mask=MASK, share=share).correlation(4), "inside")


def test_subspace_fourier_band_is_an_orthogonal_projector():
    coupling = cn.Subspace(band="lowpass", cutoff=0.2)
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    y = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    px = coupling.project(x)
    assert torch.allclose(coupling.project(px), px, atol=1e-5)  # idempotent
    assert torch.allclose(
        (px * y).sum(), (x * coupling.project(y)).sum(), rtol=1e-4
    )  # self-adjoint
    z = coupling.sample(4, SHAPE, generator=torch.Generator().manual_seed(2))
    low = coupling.project(z)
    assert (low - low[:1]).abs().max() < 1e-5  # share 1: the low band is identical
    high = draws(coupling, 4, SHAPE, repeats=60, seed=7)
    high = high - coupling.project(high.reshape(-1, *SHAPE).float()).reshape(60, 4, -1).double()
    # the high band is independent across samples (its variance is (1 - rank/d) per coordinate)
    c = torch.einsum("rid,rjd->ij", high, high)
    assert (c - torch.diag(torch.diagonal(c))).abs().max() < 5 * c.diagonal().mean() / math.sqrt(
        60 * 256
    )


def test_subspace_shared_noise_replaces_s():
    shared = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    z = cn.Subspace(mask=torch.ones(8, 8), share=1.0, shared=shared).sample(3, SHAPE)
    assert torch.allclose(z, shared.expand(3, *SHAPE))
    with pytest.raises(ValueError, match="shared has shape"):
        cn.Subspace(mask=torch.ones(8, 8), shared=torch.zeros(4, 4, 4)).sample(2, SHAPE)


def test_groups_are_independent_and_coupled_within():
    coupling = cn.Grouped(cn.Repulsive(), 3)
    z = draws(coupling, 6, SHAPE, repeats=100, seed=8)
    assert_correlation(z, coupling.correlation(6), "grouped")
    assert coupling.correlation(6)[0, 3] == 0
    one = cn.sample_groups(cn.Repulsive(), 2, 3, SHAPE, generator=torch.Generator().manual_seed(1))
    assert one.reshape(2, 3, -1).sum(1).abs().max() < 1e-5


def test_groups_with_one_generator_per_group_match_separate_draws():
    seeds = [11, 12]
    grouped = cn.sample_groups(
        cn.Orthogonal(), 2, 4, SHAPE, generator=[torch.Generator().manual_seed(s) for s in seeds]
    )
    for g, s in enumerate(seeds):
        alone = cn.Orthogonal().sample(4, SHAPE, generator=torch.Generator().manual_seed(s))
        assert torch.equal(grouped[4 * g : 4 * g + 4], alone)
    with pytest.raises(ValueError, match="3 generators for 2 groups"):
        cn.sample_groups(cn.Independent(), 2, 4, SHAPE, generator=[torch.Generator()] * 3)


def test_band_subspace_is_bit_identical_across_thread_counts():
    """1- and N-process batch runs must agree: the FFT projector may not depend on threads."""
    before = torch.get_num_threads()
    draws = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for band in ("lowpass", "highpass"):
                coupling = cn.Subspace(band=band, cutoff=0.15, share=0.6)
                gen = torch.Generator().manual_seed(5)
                draws.append((threads, band, coupling.sample(8, (4, 96, 96), generator=gen)))
    finally:
        torch.set_num_threads(before)
    one = {band: z for threads, band, z in draws if threads == 1}
    for threads, band, z in draws:
        assert torch.equal(z, one[band]), (threads, band)
