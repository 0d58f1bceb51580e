"""Pixel L2, cosine distance, MS-SSIM and Vendi: known values, reference implementations, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from couplednoise.eval import (
    ms_ssim_settings,
    pairwise_cosine_distance,
    pairwise_l2,
    pairwise_ms_ssim,
    similarity_kernel,
    vendi_score,
    vendi_score_from_kernel,
)


def _gallery(n: int = 5, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images (low-frequency noise upsampled) so SSIM terms are not degenerate."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").clamp(0, 1)


# ----------------------------------------------------------------------------- pixel L2
def test_pairwise_l2_matches_explicit_norms_and_is_symmetric():
    images = _gallery()
    matrix = pairwise_l2(images, reduction="none")
    for i in range(5):
        for j in range(5):
            expected = (images[i] - images[j]).flatten().norm()
            torch.testing.assert_close(matrix[i, j], expected, rtol=1e-5, atol=1e-6)
    upper = matrix[torch.triu_indices(5, 5, 1).unbind()]
    torch.testing.assert_close(pairwise_l2(images), upper.mean())


def test_pairwise_l2_identical_images_is_zero_and_order_invariant():
    same = _gallery(1).expand(4, -1, -1, -1)
    assert pairwise_l2(same).item() == 0.0
    images = _gallery(6)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(pairwise_l2(images[perm]), pairwise_l2(images))


def test_pairwise_l2_mask_counts_only_masked_pixels():
    images = _gallery(3)
    mask = torch.zeros(32, 32)
    mask[:, :16] = 1
    expected = pairwise_l2(images[..., :16], reduction="none")
    torch.testing.assert_close(pairwise_l2(images, mask=mask, reduction="none"), expected)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (torch.rand(1, 3, 8, 8), ValueError),  # one image: no pairs
        (torch.rand(3, 1, 8, 8), ValueError),  # not RGB
        (torch.rand(3, 3, 8), ValueError),  # not 4-d
        (torch.rand(3, 3, 8, 8) * 255, ValueError),  # not in [0, 1]
        (torch.randint(0, 255, (3, 3, 8, 8)), TypeError),  # uint8-like integers
        (np.zeros((3, 3, 8, 8)), TypeError),
    ],
)
def test_pairwise_metrics_reject_bad_input(bad, error):
    with pytest.raises(error):
        pairwise_l2(bad)
    with pytest.raises(error):
        pairwise_ms_ssim(bad)


def test_bad_reduction_is_rejected():
    with pytest.raises(ValueError, match="reduction"):
        pairwise_l2(_gallery(), reduction="sum")


# ----------------------------------------------------------------------------- cosine distance
def test_cosine_distance_known_values():
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    matrix = pairwise_cosine_distance(features, reduction="none")
    expected = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    torch.testing.assert_close(matrix, expected)
    torch.testing.assert_close(pairwise_cosine_distance(features), torch.tensor(4.0 / 3))


# ----------------------------------------------------------------------------- MS-SSIM
@pytest.mark.parametrize("size", [64, 176])
def test_pairwise_ms_ssim_equals_torchmetrics_per_pair(size):
    images = _gallery(3, size)
    settings = ms_ssim_settings(size, size)
    matrix = pairwise_ms_ssim(images, reduction="none", batch_size=2)
    for i in range(3):
        for j in range(i + 1, 3):
            expected = multiscale_structural_similarity_index_measure(
                images[i : i + 1],
                images[j : j + 1],
                data_range=1.0,
                betas=settings.betas,
                kernel_size=settings.kernel_size,
                sigma=settings.sigma,
            )
            torch.testing.assert_close(matrix[i, j], expected, rtol=1e-5, atol=1e-6)
            assert matrix[j, i] == matrix[i, j]
    assert torch.all(matrix.diagonal() == 1)


def test_ms_ssim_settings_standard_and_fallback():
    standard = ms_ssim_settings(256, 256)
    assert standard.betas == (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    assert standard.kernel_size == 11
    assert len(ms_ssim_settings(64, 64).betas) == 3
    assert len(ms_ssim_settings(128, 200).betas) == 4
    assert math.isclose(sum(ms_ssim_settings(64, 64).betas), 1.0)
    tiny = ms_ssim_settings(8, 8)
    assert tiny.betas == (1.0,) and tiny.kernel_size == 7


def test_ms_ssim_identical_is_one_and_noise_is_lower_and_order_invariant():
    same = _gallery(1, 48).expand(3, -1, -1, -1)
    torch.testing.assert_close(pairwise_ms_ssim(same), torch.tensor(1.0))
    images = _gallery(5, 48)
    value = pairwise_ms_ssim(images)
    assert 0 <= value < 0.99
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(pairwise_ms_ssim(images[perm]), value)
    # Tiny images work through the fallback instead of raising.
    assert (
        0
        <= pairwise_ms_ssim(torch.rand(3, 3, 9, 9, generator=torch.Generator().manual_seed(0)))
        <= 1
    )


# ----------------------------------------------------------------------------- Vendi
def test_vendi_known_values():
    for q in (0.0, 0.5, 1.0, 2.0, math.inf):
        assert vendi_score(torch.ones(6, 4), q=q).item() == pytest.approx(1.0, abs=1e-9)
        assert vendi_score(torch.eye(5) * 3, q=q).item() == pytest.approx(5.0, abs=1e-9)
    # Two identical pairs of orthogonal vectors: two equal eigenvalues -> 2 for every q.
    features = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    for q in (0.0, 1.0, 2.0, math.inf):
        assert vendi_score(features, q=q).item() == pytest.approx(2.0, abs=1e-9)


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0, math.inf])
def test_vendi_equals_vendi_score_package(q):
    from vendi_score import vendi

    features = torch.randn(12, 16, generator=torch.Generator().manual_seed(0))  # full rank
    normalised = torch.nn.functional.normalize(features.double(), dim=1).numpy()
    expected = vendi.score_K(normalised @ normalised.T, q="inf" if math.isinf(q) else q)
    assert vendi_score(features, q=q).item() == pytest.approx(float(expected), rel=1e-8)
    if q == 1.0:  # score_X ignores q, so it is a valid reference only for q = 1
        assert vendi_score(features).item() == pytest.approx(
            vendi.score_X(features.numpy()), rel=1e-5
        )


def test_vendi_rbf_kernel_equals_package_with_same_kernel():
    from vendi_score import vendi

    features = torch.randn(8, 3, generator=torch.Generator().manual_seed(2)).double()
    bandwidth = 1.3

    def rbf(a, b):
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * bandwidth**2)))

    expected = vendi.score(list(features.numpy()), rbf, q=1)
    got = vendi_score(features, kernel="rbf", bandwidth=bandwidth)
    assert got.item() == pytest.approx(expected, rel=1e-8)


def test_vendi_q0_counts_rank_not_round_off():
    basis = torch.randn(3, 16, generator=torch.Generator().manual_seed(3))
    mixing = torch.randn(10, 3, generator=torch.Generator().manual_seed(4))
    assert vendi_score(mixing @ basis, q=0).item() == 3


def test_vendi_is_order_invariant_and_grows_with_spread():
    g = torch.Generator().manual_seed(5)
    centre = torch.randn(1, 32, generator=g)
    tight = centre + 0.1 * torch.randn(10, 32, generator=g)
    wide = centre + 3.0 * torch.randn(10, 32, generator=g)
    assert vendi_score(tight) < vendi_score(wide)
    perm = torch.randperm(10, generator=g)
    assert vendi_score(wide[perm]).item() == pytest.approx(vendi_score(wide).item(), rel=1e-9)


def test_vendi_rejects_bad_input():
    with pytest.raises(ValueError, match="q must be"):
        vendi_score(torch.randn(4, 3), q=-1)
    with pytest.raises(ValueError, match="kernel"):
        vendi_score(torch.randn(4, 3), kernel="laplace")
    with pytest.raises(ValueError, match="non-zero"):
        vendi_score(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="n x n"):
        vendi_score_from_kernel(torch.ones(3, 4))
    with pytest.raises(ValueError):
        similarity_kernel(torch.randn(5))
