"""Inversion on tiny random SD1.5 / SDXL / SD3 pipelines and the lab: shapes, exactness where the
math makes it exact, convergence with the number of steps."""

from __future__ import annotations

import pytest
import torch

from couplednoise.pipelines.inversion import ddim_schedulers, encode_image, invert, matching_sampler
from tests.tiny_models import BUILDERS, DEFAULT_SIZE


def reference_image(size: int = DEFAULT_SIZE) -> torch.Tensor:
    """A smooth random image [1, 3, size, size] in [0, 1]."""
    noise = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.avg_pool2d(noise, 9, 1, 4, count_include_pad=False)


def unit_latent_pipe(family: str, damping: float | None = None):
    """A fresh tiny pipeline whose VAE scaling factor gives unit-variance latents of
    ``reference_image`` (what real VAEs' scaling factors are chosen for), its denoiser's output
    layer optionally scaled by ``damping``."""
    pipe = BUILDERS[family]()
    std = encode_image(pipe, reference_image()).std().item()
    pipe.vae.register_to_config(scaling_factor=pipe.vae.config.scaling_factor / std)
    if damping is not None:
        out = pipe.unet.conv_out if family != "sd3" else pipe.transformer.proj_out
        with torch.no_grad():
            out.weight.mul_(damping)
            out.bias.mul_(damping)
    return pipe


def reconstruct(pipe, image: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inverted noise, latents regenerated from it by the matching sampler), guidance 1."""
    noise = invert(pipe, image, num_inference_steps=steps, progress=False)
    sampler = matching_sampler(pipe)
    latents = sampler(
        prompt="",
        latents=noise,
        num_inference_steps=steps,
        guidance_scale=1.0,
        output_type="latent",
    ).images
    return noise, latents


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_noise_shape(tiny_pipe):
    image = reference_image().expand(2, -1, -1, -1)
    noise = invert(tiny_pipe, image, num_inference_steps=2, progress=False)
    channels = 16 if type(tiny_pipe).__name__.startswith("StableDiffusion3") else 4
    assert noise.shape == (2, channels, DEFAULT_SIZE // 8, DEFAULT_SIZE // 8)
    assert noise.dtype == torch.float32 and torch.isfinite(noise).all()
    # unit scale: no init_noise_sigma (~14.6 for Euler) or VAE factor left in
    assert 0.01 < noise.std() < 5


def test_encode_matches_vae_normalisation(sd3_pipe):
    """SD3 latents are (z - shift_factor) * scaling_factor of the posterior mean."""
    image = reference_image()
    vae = sd3_pipe.vae
    with torch.no_grad():
        raw = vae.encode(image * 2 - 1).latent_dist.mean
    expected = (raw - vae.config.shift_factor) * vae.config.scaling_factor
    torch.testing.assert_close(encode_image(sd3_pipe, image), expected)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_ddim_inversion_exact_for_a_zero_denoiser(family):
    """With eps = 0 the DDIM ODE keeps x / sqrt(alpha_bar) constant: inversion must give exactly
    sqrt(alpha_bar_T / alpha_bar_0) z0 and regeneration z0 (checks scheduler pairing, no clipping,
    no init_noise_sigma or VAE factor mix-up), at any number of steps."""
    pipe = unit_latent_pipe(family, damping=0.0)
    image = reference_image()
    z0 = encode_image(pipe, image)
    noise, latents = reconstruct(pipe, image, steps=3)
    forward, _ = ddim_schedulers(pipe)
    forward.set_timesteps(3)
    top = forward.alphas_cumprod[forward.timesteps[0]]
    bottom = forward.final_alpha_cumprod
    torch.testing.assert_close(noise, z0 * (top / bottom).sqrt(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(latents, z0, rtol=1e-4, atol=1e-5)


def test_ddim_reconstruction_converges_with_steps():
    """A smooth denoiser (the random UNet's output scaled down, unit-variance latents): the
    inverse-then-sample error is first order in the step size, so it shrinks with more steps."""
    pipe = unit_latent_pipe("sd15", damping=0.1)
    image = reference_image()
    z0 = encode_image(pipe, image)
    coarse = relative_error(reconstruct(pipe, image, steps=4)[1], z0)
    fine = relative_error(reconstruct(pipe, image, steps=48)[1], z0)
    assert fine < 0.02  # measured 0.0096 at 64 steps, 0.043 at 4
    assert fine < coarse / 2


def test_flow_reconstruction_converges_with_steps():
    """SD3's flow ODE: Euler inversion on the sampler's own sigma grid reconstructs the encoded
    latent, first order in the step size (measured 0.080 at 5 steps, 0.0087 at 40)."""
    pipe = unit_latent_pipe("sd3")
    image = reference_image()
    z0 = encode_image(pipe, image)
    noise, latents = reconstruct(pipe, image, steps=40)
    coarse = relative_error(reconstruct(pipe, image, steps=5)[1], z0)
    assert relative_error(latents, z0) < 0.02
    assert relative_error(latents, z0) < coarse / 4
    assert relative_error(noise, z0) > 0.5  # the noise is not the image


def test_lab_inversion_reconstructs_the_scene():
    """The lab's exact denoiser: DDIM inversion then DDIM sampling returns the reference pixels."""
    from couplednoise.pipelines.lab import load_lab_pipeline

    pipe = load_lab_pipeline("lab")
    image = pipe.world.images[:1]
    noise, latents = reconstruct(pipe, image, steps=20)
    assert noise.shape == (1, 3, pipe.world.size, pipe.world.size)
    assert (latents / 2 + 0.5 - image).abs().max() < 0.01


def test_unsupported_family_is_a_clear_error():
    class Other:
        config = None

    with pytest.raises(ValueError, match="inversion supports"):
        invert(Other(), reference_image(), num_inference_steps=2)
