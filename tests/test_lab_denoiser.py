"""The lab's exact denoiser against brute-force references on tiny data."""

from __future__ import annotations

import pytest
import torch

from pipelines.lab.denoiser import model_output, posterior_mean


def brute_force_posterior_mean(x, scenes, alpha, sigma, smoothing):
    """Per-component Gaussian posterior, weights from explicit mixture densities (float64)."""
    variance = alpha**2 * smoothing**2 + sigma**2
    dist = torch.distributions.Normal(alpha * scenes[None], variance**0.5)  # [1, N, D]
    log_density = dist.log_prob(x[:, None]).sum(-1)  # [B, N]
    weights = torch.softmax(log_density, dim=1)
    gain = alpha * smoothing**2 / variance
    component_means = scenes[None] + gain * (x[:, None] - alpha * scenes[None])  # [B, N, D]
    return (weights[..., None] * component_means).sum(1)


def tweedie_posterior_mean(x, scenes, alpha, sigma, smoothing):
    """Tweedie's formula E[x0 | x_t] = (x_t + sigma^2 grad log p(x_t)) / alpha, which holds for any
    law of x0; here p is the noisy mixture of N(alpha mu_n, (alpha^2 s^2 + sigma^2) I) (autograd)."""
    x = x.clone().requires_grad_(True)
    variance = alpha**2 * smoothing**2 + sigma**2
    log_p = torch.logsumexp(-((x[:, None] - alpha * scenes[None]) ** 2).sum(-1) / (2 * variance), 1)
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    return (x + sigma**2 * grad).detach() / alpha


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize(("alpha", "sigma"), [(0.999, 0.045), (0.8, 0.6), (0.1, 0.995)])
def test_posterior_mean_equals_brute_force(alpha, sigma, smoothing):
    gen = torch.Generator().manual_seed(0)
    scenes = torch.rand(7, 12, generator=gen, dtype=torch.float64) * 2 - 1
    x = alpha * scenes[torch.tensor([0, 3, 3, 6])] + sigma * torch.randn(
        4, 12, generator=gen, dtype=torch.float64
    )
    got = posterior_mean(x, scenes, alpha, sigma, smoothing=smoothing, chunk_size=3)
    expected = brute_force_posterior_mean(x, scenes, alpha, sigma, smoothing)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    tweedie = tweedie_posterior_mean(x, scenes, alpha, sigma, smoothing)
    torch.testing.assert_close(got, tweedie, rtol=1e-8, atol=1e-8)


def test_posterior_mean_is_stable_at_tiny_noise_and_in_float32():
    gen = torch.Generator().manual_seed(1)
    scenes = torch.rand(50, 3 * 16 * 16, generator=gen) * 2 - 1
    x = scenes[7:9] + 1e-4 * torch.randn(2, scenes.shape[1], generator=gen)
    got = posterior_mean(
        x, scenes, 1.0, 1e-4, chunk_size=16
    )  # logits ~ 1e8: plain softmax overflows
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, scenes[7:9])
    mid = 0.7 * scenes[:3] + 0.7 * torch.randn(3, scenes.shape[1], generator=gen)
    float64 = posterior_mean(mid.double(), scenes.double(), 0.7, 0.714, smoothing=0.05)
    float32 = posterior_mean(mid, scenes, 0.7, 0.714, smoothing=0.05, chunk_size=7)
    torch.testing.assert_close(float32.double(), float64, rtol=1e-4, atol=1e-4)


def test_model_outputs_invert_to_the_posterior_mean():
    gen = torch.Generator().manual_seed(2)
    x0, x = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
    alpha, sigma = 0.6, 0.8
    eps = model_output(x0, x, alpha, sigma, "epsilon")
    torch.testing.assert_close((x - sigma * eps) / alpha, x0)
    v = model_output(x0, x, alpha, sigma, "v_prediction")
    torch.testing.assert_close(alpha * x - sigma * v, x0)  # diffusers' v -> x0
    flow = model_output(x0, x, 1 - 0.3, 0.3, "flow")
    torch.testing.assert_close(x - 0.3 * flow, x0)  # x0 = x_t - t v for rectified flow
    torch.testing.assert_close(model_output(x0, x, alpha, sigma, "sample"), x0)
    with pytest.raises(ValueError, match="parameterisation"):
        model_output(x0, x, alpha, sigma, "score")


def test_posterior_mean_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="at least one scene"):
        posterior_mean(torch.zeros(1, 3), torch.zeros(0, 3), 1.0, 0.5)
    with pytest.raises(ValueError, match="features per row"):
        posterior_mean(torch.zeros(1, 3), torch.zeros(2, 4), 1.0, 0.5)
