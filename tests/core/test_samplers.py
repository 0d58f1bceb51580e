"""couplednoise.initial_noise with the real k-diffusion samplers and an EDM-style Heun loop.

The data model is Gaussian, x0 ~ N(mu, s^2 I), so the exact denoiser is known:
D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2). Every deterministic sampler step is then
affine in x with the same coefficients for every sample: sample(x) = c x + d, d = sample(0). So
the outputs of a repulsive group are c times its noise plus one offset, and their mean is d up to
c times the group sum of the float32 draw (zero to rounding): the coupling survives exactly.
"""

from __future__ import annotations

import itertools
import os
import warnings

import pytest
import torch

import couplednoise
from couplednoise import Repulsive, initial_noise, sample_groups

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clip-anytorch imports the deprecated pkg_resources
        import k_diffusion as K
except ImportError:  # pragma: no cover - CI installs it (see docs/diffusers.md)
    if os.environ.get("CI"):
        pytest.fail("k-diffusion is not installed: pip install k-diffusion 'setuptools<81'")
    pytest.skip("k-diffusion is not installed", allow_module_level=True)

MU, S = 0.7, 0.5
SHAPE = (3, 8, 8)
SIGMAS = K.sampling.get_sigmas_karras(8, 0.002, 80.0, rho=7.0).double()


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact denoiser of N(MU, S^2 I) data, as k-diffusion's model(x, sigma) signature."""
    sigma = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return (S**2 * x + sigma**2 * MU) / (S**2 + sigma**2)


def edm_heun(net, latents: torch.Tensor, t_steps: torch.Tensor) -> torch.Tensor:
    """EDM's deterministic sampler (Karras et al. 2022, Algorithm 1: Heun, Euler at the end)."""
    x_next = latents.double() * t_steps[0]
    for i, (t_cur, t_next) in enumerate(itertools.pairwise(t_steps)):
        x_cur = x_next
        d_cur = (x_cur - net(x_cur, t_cur.expand(len(x_cur)))) / t_cur
        x_next = x_cur + (t_next - t_cur) * d_cur
        if i < len(t_steps) - 2:
            d_prime = (x_next - net(x_next, t_next.expand(len(x_cur)))) / t_next
            x_next = x_cur + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


def assert_affine_in_the_coupled_noise(out, offset, x) -> None:
    """out = c x + offset exactly (one scalar c for all samples) and the group mean is offset."""
    deviations, noise = (out - offset).flatten().double(), x.flatten().double()
    c = float(deviations @ noise / (noise @ noise))
    assert 0 < c < 1
    torch.testing.assert_close(deviations, c * noise, rtol=0, atol=1e-12 * noise.abs().max())
    group_sum = x.double().sum(0)
    assert group_sum.abs().max() < 1e-6 * x.abs().max()  # repulsive, to float32 rounding
    torch.testing.assert_close(out.mean(0), offset[0] + c * group_sum / len(x), rtol=0, atol=1e-12)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def test_initial_noise_is_sigma_times_the_coupled_draw():
    x = initial_noise(
        "repulsive",
        SHAPE,
        num_per_prompt=4,
        num_prompts=2,
        sigma=SIGMAS[0],
        generator=[seeded(1), seeded(2)],
    )
    reference = sample_groups(Repulsive(), 2, 4, SHAPE, generator=[seeded(1), seeded(2)])
    assert x.dtype == torch.float32 and x.shape == (8, *SHAPE)
    torch.testing.assert_close(x, reference * 80.0, rtol=1e-6, atol=0)
    assert initial_noise("orthogonal", SHAPE, num_per_prompt=2, dtype=torch.float64).dtype == (
        torch.float64
    )
    for bad, error in [
        (0.0, ValueError),
        (float("nan"), ValueError),
        ("80", TypeError),
        (torch.ones(2), ValueError),
    ]:
        with pytest.raises(error, match="sigma"):
            initial_noise("repulsive", SHAPE, num_per_prompt=2, sigma=bad)


@pytest.mark.parametrize(
    "sampler", ["sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_lms"]
)
def test_k_diffusion_samplers_keep_the_coupling_exactly(sampler):
    sample = getattr(K.sampling, sampler)
    k = 4
    x = initial_noise(
        "repulsive",
        SHAPE,
        num_per_prompt=k,
        sigma=SIGMAS[0],
        generator=seeded(0),
        dtype=torch.float64,
    )
    out = sample(gaussian_denoiser, x, SIGMAS, disable=True)
    offset = sample(gaussian_denoiser, torch.zeros_like(x[:1]), SIGMAS, disable=True)
    assert_affine_in_the_coupled_noise(out, offset, x)
    # The sampler did real work: the outputs are near the data law, not the noise.
    assert (out.mean() - MU).abs() < 0.2 and 0.2 < out.std() < 1.0


def test_edm_style_loop_takes_the_same_noise_and_matches_k_diffusion_heun():
    latents = initial_noise(
        "repulsive", SHAPE, num_per_prompt=3, generator=seeded(4), dtype=torch.float64
    )
    edm = edm_heun(gaussian_denoiser, latents, SIGMAS)
    kd = K.sampling.sample_heun(gaussian_denoiser, latents * SIGMAS[0], SIGMAS, disable=True)
    torch.testing.assert_close(edm, kd, rtol=1e-12, atol=1e-12)
    zero = edm_heun(gaussian_denoiser, torch.zeros_like(latents[:1]), SIGMAS)
    assert_affine_in_the_coupled_noise(edm, zero, latents * SIGMAS[0])


def test_ancestral_samplers_start_from_it_and_add_their_own_noise():
    x = initial_noise("repulsive", SHAPE, num_per_prompt=2, sigma=SIGMAS[0], generator=seeded(5))
    seen = []

    def model(x_in, sigma):
        seen.append(x_in.clone())
        return gaussian_denoiser(x_in, sigma)

    torch.manual_seed(0)
    out = K.sampling.sample_euler_ancestral(model, x, SIGMAS.float(), disable=True)
    torch.testing.assert_close(seen[0], x, rtol=0, atol=0)  # the coupled noise, as given
    torch.testing.assert_close(seen[0].sum(0), torch.zeros(SHAPE), rtol=0, atol=1e-4)
    offset = K.sampling.sample_euler(
        gaussian_denoiser, torch.zeros_like(x[:1]), SIGMAS.float(), disable=True
    )
    # Fresh step noise: the pair no longer averages to the deterministic offset.
    assert (out.mean(0, keepdim=True) - offset).abs().max() > 1e-2


def test_exported():
    assert couplednoise.initial_noise is initial_noise
