"""couplednoise.latents_for / generate on tiny SD1.5, SDXL, SD3 (and FLUX) pipelines."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
)

import couplednoise
from couplednoise import Repulsive, generate, latent_shape, latents_for, sample_groups
from tests.tiny_models import BUILDERS, capture_denoiser_inputs, tiny_flux, with_scheduler

CHANNELS = {"sd15": 4, "sdxl": 4, "sd3": 16}
STEPS = 2


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def first_step_input(scheduler, latents: torch.Tensor) -> torch.Tensor:
    """What the denoiser must see first for ``latents``: init_noise_sigma once, scale_model_input."""
    ref = type(scheduler).from_config(scheduler.config)
    ref.set_timesteps(STEPS)
    x = latents * getattr(ref, "init_noise_sigma", 1.0)
    if hasattr(ref, "scale_model_input"):
        x = ref.scale_model_input(x, ref.timesteps[0])
    return x


SCHEDULERS = [
    ("sd15", DDIMScheduler),
    ("sd15", PNDMScheduler),
    ("sd15", EulerDiscreteScheduler),
    ("sd15", DPMSolverMultistepScheduler),
    ("sdxl", DDIMScheduler),
    ("sdxl", PNDMScheduler),
    ("sdxl", EulerDiscreteScheduler),
    ("sdxl", DPMSolverMultistepScheduler),
    ("sd3", FlowMatchEulerDiscreteScheduler),
]


def make_scheduler(pipe, cls):
    kwargs = {}
    if cls is DPMSolverMultistepScheduler:
        kwargs = {"algorithm_type": "dpmsolver++"}
    if cls is PNDMScheduler:
        kwargs = {"skip_prk_steps": True}
    return cls.from_config(pipe.scheduler.config, **kwargs)


@pytest.mark.parametrize(
    ("family", "scheduler_cls"), SCHEDULERS, ids=[f"{f}-{s.__name__}" for f, s in SCHEDULERS]
)
def test_coupled_latents_reach_denoiser_exactly(tiny_pipes, family, scheduler_cls):
    pipe = with_scheduler(tiny_pipes[family], make_scheduler(tiny_pipes[family], scheduler_cls))
    latents = latents_for(pipe, "repulsive", num_images_per_prompt=2, generator=seeded(0))
    call = dict(num_images_per_prompt=2, num_inference_steps=STEPS, guidance_scale=5.0)
    call.update(negative_prompt="blurry", output_type="pt")
    with capture_denoiser_inputs(pipe) as inputs:
        first = pipe("a red cube", latents=latents.clone(), generator=seeded(1), **call)
    expected = first_step_input(pipe.scheduler, latents)
    # Classifier-free guidance doubles the batch: [uncond, cond], each the scaled latents.
    torch.testing.assert_close(inputs[0], torch.cat([expected, expected]), rtol=1e-6, atol=1e-6)
    # init_noise_sigma is applied once, by the pipeline: unit-variance input after scaling
    # (Euler's init_noise_sigma is ~14.6, so applying it twice would show here).
    assert 0.8 < inputs[0].std().item() < 1.2
    # Same latents, another generator: same images (these schedulers add no noise of their own).
    second = pipe("a red cube", latents=latents.clone(), generator=seeded(2), **call)
    torch.testing.assert_close(first.images, second.images, rtol=0, atol=1e-6)


def test_latent_shape_dtype_device_and_default_size(tiny_pipe):
    c = tiny_pipe.vae.config.latent_channels
    latents = latents_for(tiny_pipe, "orthogonal", num_images_per_prompt=3, num_prompts=2)
    assert latents.shape == (6, c, 8, 8)  # default 64 x 64 pixels, vae_scale_factor 8
    assert latents.dtype == torch.float32 and latents.device.type == "cpu"
    assert latent_shape(tiny_pipe, height=128, width=64) == (c, 16, 8)
    with pytest.raises(ValueError, match="multiple of"):
        latents_for(tiny_pipe, "repulsive", num_images_per_prompt=2, height=60)


def test_channels_follow_the_family(tiny_pipes):
    for family, channels in CHANNELS.items():
        assert latent_shape(tiny_pipes[family])[0] == channels


def test_prompt_major_groups_drawn_from_their_own_generators(sd15_pipe):
    latents = latents_for(
        sd15_pipe,
        Repulsive(),
        num_images_per_prompt=4,
        num_prompts=3,
        generator=[seeded(10), seeded(11), seeded(12)],
    )
    for p in range(3):
        own = Repulsive().sample(4, (4, 8, 8), generator=seeded(10 + p))
        assert torch.equal(latents[4 * p : 4 * p + 4], own)


def test_groups_coupled_within_and_independent_across(sd15_pipe):
    # 256 x 256 pixels -> d = 4 * 32 * 32 = 4096 coordinates per sample: correlation estimates
    # have standard error <= 1 / sqrt(d) = 0.016; tolerance 4.5 standard errors.
    latents = latents_for(
        sd15_pipe, "repulsive", num_images_per_prompt=4, num_prompts=2, generator=seeded(3)
    )
    assert latents.shape[0] == 8
    latents = latents_for(
        sd15_pipe,
        "repulsive",
        num_images_per_prompt=4,
        num_prompts=2,
        height=256,
        width=256,
        generator=seeded(3),
    )
    flat = latents.flatten(1).double()
    corr = torch.corrcoef(flat)
    tol = 4.5 / flat.shape[1] ** 0.5
    within = corr[:4, :4][~torch.eye(4, dtype=torch.bool)]
    assert torch.allclose(within, torch.full_like(within, -1 / 3), atol=tol)
    assert corr[:4, 4:].abs().max() < tol
    # The centered construction sums to zero within each prompt's gallery, not across them.
    assert flat[:4].sum(0).abs().max() < 1e-4 and flat[4:].sum(0).abs().max() < 1e-4
    assert flat[[0, 1, 4, 5]].sum(0).abs().max() > 1.0
    stds = flat.std(dim=1)
    assert torch.allclose(stds, torch.ones_like(stds), atol=4.5 * (0.5 / flat.shape[1]) ** 0.5)


def test_pipeline_pairs_images_with_prompts_prompt_major(sd3_pipe):
    latents = latents_for(sd3_pipe, "repulsive", num_images_per_prompt=2, num_prompts=2)
    call = dict(num_images_per_prompt=2, num_inference_steps=STEPS, output_type="pt")
    both = sd3_pipe(["a cat", "a dog"], latents=latents, **call).images
    cat = sd3_pipe("a cat", latents=latents[:2], **call).images
    dog = sd3_pipe("a dog", latents=latents[2:], **call).images
    torch.testing.assert_close(both, torch.cat([cat, dog]), rtol=0, atol=1e-4)
    assert (cat - dog).abs().max() > 1e-3  # the prompt matters: the check above can fail


def test_generate_draws_latents_and_runs(tiny_pipe):
    generators = [seeded(5), seeded(6)]
    with capture_denoiser_inputs(tiny_pipe) as inputs:
        out = generate(
            tiny_pipe,
            ["a cat", "a dog"],
            "repulsive",
            num_images_per_prompt=2,
            generator=generators,
            num_inference_steps=1,
            output_type="pt",
        )
    assert out.images.shape == (4, 3, 64, 64)
    expected = latents_for(
        tiny_pipe,
        "repulsive",
        num_images_per_prompt=2,
        num_prompts=2,
        generator=[seeded(5), seeded(6)],
    )
    expected = first_step_input(tiny_pipe.scheduler, expected)
    torch.testing.assert_close(inputs[0][4:], expected, rtol=1e-6, atol=1e-6)  # cond half


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latents": torch.zeros(3, 4, 8, 8)}, r"needs \(4, 4, 8, 8\).*2 prompt\(s\) x 2"),
        ({"latents": torch.zeros(4, 16, 8, 8)}, r"needs \(4, 4, 8, 8\)"),
        ({"latents": torch.zeros(4, 4, 8, 8), "height": 128}, r"needs \(4, 4, 16, 8\)"),
        ({"coupling": "repulsive", "generator": [torch.Generator()] * 4}, "one per prompt"),
        ({"coupling": "repulsive", "latents": torch.zeros(4, 4, 8, 8)}, "not both"),
        ({"coupling": "equicorrelated:rho=-0.9", "num_images_per_prompt": 3}, "rho"),
        ({"coupling": "nope"}, "unknown coupling"),
        ({"coupling": "repulsive", "width": 100}, "multiple of 8"),
    ],
)
def test_bad_requests_fail_clearly_before_any_network_runs(sd15_pipe, kwargs, match):
    kwargs = {"coupling": None, "num_images_per_prompt": 2, **kwargs}
    with capture_denoiser_inputs(sd15_pipe) as inputs, pytest.raises(ValueError, match=match):
        generate(sd15_pipe, ["a cat", "a dog"], num_inference_steps=1, **kwargs)
    assert inputs == []


def test_generate_refuses_a_pipeline_without_latents():
    class NoLatents:
        unet = None
        transformer = torch.nn.Linear(1, 1)

        def __call__(self, prompt, num_images_per_prompt=1):
            raise AssertionError("must not run")

    with pytest.raises(TypeError, match="latents"):
        generate(NoLatents(), "x", "repulsive")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_half_precision_keeps_shape_and_variance(family, dtype):
    pipe = BUILDERS[family]().to(dtype=dtype)
    big = latents_for(
        pipe, "repulsive", num_images_per_prompt=4, height=256, width=256, generator=seeded(0)
    )
    reference = latents_for(
        BUILDERS[family](),
        "repulsive",
        num_images_per_prompt=4,
        height=256,
        width=256,
        generator=seeded(0),
    )
    assert big.dtype == dtype and big.shape == reference.shape
    assert torch.equal(big, reference.to(dtype))  # drawn in float32, cast at the end
    std = big.float().flatten(1).std(dim=1)
    assert torch.allclose(std, torch.ones_like(std), atol=0.05)
    if dtype is torch.float16 and family == "sd3":  # one half-precision run end to end
        with capture_denoiser_inputs(pipe) as inputs:
            out = generate(
                pipe,
                "a cat",
                "repulsive",
                2,
                generator=seeded(1),
                num_inference_steps=1,
                output_type="pt",
            )
        assert inputs[0].dtype == dtype and inputs[0].shape == (4, 16, 8, 8)
        assert out.images.shape == (2, 3, 64, 64) and torch.isfinite(out.images).all()


@pytest.fixture(scope="module")
def flux_pipe():
    return tiny_flux()


def test_flux_packed_latents_are_an_exact_permutation(flux_pipe):
    assert latent_shape(flux_pipe) == (4096, 64)  # FLUX's default 1024 x 1024
    latents = latents_for(
        flux_pipe,
        "repulsive",
        num_images_per_prompt=2,
        num_prompts=2,
        height=64,
        width=64,
        generator=seeded(0),
    )
    assert latents.shape == (4, 16, 64)  # (64/16)^2 tokens of 4 x 16 channels
    unpacked = flux_pipe._unpack_latents(latents, 64, 64, flux_pipe.vae_scale_factor)
    reference = sample_groups(Repulsive(), 2, 2, (16, 8, 8), generator=seeded(0))
    assert torch.equal(unpacked, reference)
    with capture_denoiser_inputs(flux_pipe) as inputs:
        out = flux_pipe(
            ["a", "b"],
            height=64,
            width=64,
            num_images_per_prompt=2,
            latents=latents,
            num_inference_steps=1,
            output_type="pt",
            max_sequence_length=16,
        )
    assert torch.equal(inputs[0], latents)  # flow matching: used as is
    assert out.images.shape == (4, 3, 64, 64)


def test_import_stays_light():
    code = "import sys, couplednoise; assert 'diffusers' not in sys.modules, 'diffusers'"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert callable(couplednoise.latents_for) and callable(couplednoise.generate)
