"""The lab's exact and local denoisers against brute-force references on tiny data."""

from __future__ import annotations

import pytest
import torch

from couplednoise.pipelines.lab.denoiser import local_posterior_mean, model_output, posterior_mean


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


def brute_force_local_posterior_mean(x, scenes, alpha, sigma, smoothing, window):
    """Pixel by pixel: the mixture posterior of the window around the pixel (clipped at the
    border), its per-scene Gaussian means read at the pixel (float64 loops)."""
    r = window // 2
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                rows, cols = slice(max(0, i - r), i + r + 1), slice(max(0, j - r), j + r + 1)
                patch, patches = x[b, :, rows, cols], scenes[:, :, rows, cols]
                posterior = brute_force_posterior_mean(
                    patch.flatten()[None], patches.flatten(1), alpha, sigma, smoothing
                ).view_as(patch)
                out[b, :, i, j] = posterior[:, i - rows.start, j - cols.start]
    return out


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("window", [1, 3, 5])
def test_local_posterior_mean_equals_per_pixel_brute_force(window, smoothing):
    gen = torch.Generator().manual_seed(3)
    scenes = torch.rand(5, 2, 6, 5, generator=gen, dtype=torch.float64) * 2 - 1
    alpha, sigma = 0.7, 0.6
    x = alpha * scenes[torch.tensor([0, 2, 4])] + sigma * torch.randn(
        3, 2, 6, 5, generator=gen, dtype=torch.float64
    )
    got = local_posterior_mean(
        x, scenes, alpha, sigma, window=window, smoothing=smoothing, chunk_size=2
    )
    expected = brute_force_local_posterior_mean(x, scenes, alpha, sigma, smoothing, window)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("window", [11, 13, 99])  # 2 * 6 - 1 = 11: every window is the image
def test_a_window_covering_the_image_is_the_exact_denoiser(window):
    gen = torch.Generator().manual_seed(4)
    scenes = torch.rand(6, 3, 6, 5, generator=gen, dtype=torch.float64) * 2 - 1
    x = 0.5 * scenes[:4] + 0.86 * torch.randn(4, 3, 6, 5, generator=gen, dtype=torch.float64)
    got = local_posterior_mean(x, scenes, 0.5, 0.86, window=window, smoothing=0.1, chunk_size=4)
    exact = posterior_mean(x.flatten(1), scenes.flatten(1), 0.5, 0.86, smoothing=0.1)
    torch.testing.assert_close(got, exact.view_as(x), rtol=1e-10, atol=1e-10)
    smaller = local_posterior_mean(x, scenes, 0.5, 0.86, window=9, smoothing=0.1)
    assert (smaller - exact.view_as(x)).abs().max() > 1e-3  # a smaller window is really local


def test_local_posterior_mean_is_stable_at_tiny_noise():
    gen = torch.Generator().manual_seed(5)
    scenes = torch.rand(20, 3, 8, 8, generator=gen) * 2 - 1
    x = scenes[3:5] + 1e-4 * torch.randn(2, 3, 8, 8, generator=gen)
    got = local_posterior_mean(x, scenes, 1.0, 1e-4, window=3, chunk_size=7)
    torch.testing.assert_close(got, scenes[3:5])


def test_local_posterior_mean_rejects_bad_windows_and_shapes():
    scenes = torch.zeros(2, 3, 4, 4)
    for window in (0, 4):
        with pytest.raises(ValueError, match="odd number"):
            local_posterior_mean(torch.zeros(1, 3, 4, 4), scenes, 1.0, 0.5, window=window)
    with pytest.raises(ValueError, match=r"x must be \[B, 3, 4, 4\]"):
        local_posterior_mean(torch.zeros(1, 3, 4, 5), scenes, 1.0, 0.5, window=3)
    with pytest.raises(ValueError, match="at least one scene"):
        local_posterior_mean(torch.zeros(1, 3, 4, 4), scenes[:0], 1.0, 0.5, window=3)


def test_lab_locality_option_swaps_in_the_local_denoiser():
    from couplednoise.pipelines.lab import load_lab_pipeline, parse_lab_spec

    assert parse_lab_spec("lab")["locality"] == 0
    assert parse_lab_spec("lab:locality=7")["locality"] == 7
    for spec in ("lab:locality=6", "lab:locality=-1"):
        with pytest.raises(ValueError, match="odd window"):
            load_lab_pipeline(spec)
    prompt = "a large red circle at the center"  # 12 scenes
    latents = torch.randn(
        2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    images = {}
    for spec in ("lab", "lab:locality=63", "lab:locality=7"):
        pipe = load_lab_pipeline(spec, dtype=torch.float64)
        pipe.set_progress_bar_config(disable=True)
        images[spec] = pipe(
            prompt,
            num_images_per_prompt=2,
            latents=latents,
            num_inference_steps=4,
            output_type="pt",
        )
    exact, covering, local = (
        images[s].images for s in ("lab", "lab:locality=63", "lab:locality=7")
    )
    torch.testing.assert_close(covering, exact, rtol=0, atol=1e-8)  # 63 = 2 * 32 - 1: global
    assert (local - exact).abs().max() > 0.1
