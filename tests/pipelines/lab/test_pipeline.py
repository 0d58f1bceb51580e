"""LabPipeline end to end: real diffusers schedulers, the SD call shape, couplednoise integration."""

from __future__ import annotations

import pytest
import torch

import couplednoise
from couplednoise.pipelines.lab import SCHEDULERS, LabPipeline, build_world, load_lab_pipeline
from couplednoise.pipelines.lab.readout import gallery_readout, nearest_scenes

SCHEDULER_NAMES = ("ddim", "euler", "dpm", "flow")
STEPS = 12


@pytest.fixture(scope="module")
def single_variant_world():
    return build_world(32, 1, 0)


def pipeline(world, scheduler: str, **kwargs) -> LabPipeline:
    pipe = LabPipeline(world, SCHEDULERS[scheduler](), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_one_matching_scene_is_returned_exactly(single_variant_world, scheduler):
    pipe = pipeline(single_variant_world, scheduler, smoothing=0.0)
    prompt = "a small red circle on the left on a white background"
    (index,) = pipe.scenes_for(prompt).tolist()
    images = pipe(
        prompt,
        num_images_per_prompt=3,
        num_inference_steps=STEPS,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    expected = single_variant_world.images[index].expand_as(images)
    torch.testing.assert_close(images, expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_generated_images_align_with_the_prompt_and_look_like_scenes(scheduler):
    pipe = load_lab_pipeline(f"lab:scheduler={scheduler}")
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle", "a square on a blue background", "a large triangle on the right"]
    images = pipe(
        prompts,
        num_images_per_prompt=4,
        num_inference_steps=STEPS,
        output_type="pt",
        generator=torch.Generator().manual_seed(1),
    ).images
    for p, prompt in enumerate(prompts):
        gallery = images[4 * p : 4 * (p + 1)]
        assert gallery_readout(gallery, prompt, pipe.world).alignment == 1.0
    # Within the smoothing floor of a real scene: RMS distance per pixel well under 1/255 * 5.
    _, distance = nearest_scenes(images, pipe.world)
    rms = distance / images[0].numel() ** 0.5
    assert rms.max() < 0.02, rms


def test_independent_noise_samples_the_prompt_distribution():
    """48 images of "a red circle": the 6 backgrounds are equally likely in the data; a chi-square
    test at the 0.1% level (critical value 20.5 for 5 degrees of freedom) must not reject."""
    pipe = load_lab_pipeline("lab")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        "a red circle",
        num_images_per_prompt=48,
        num_inference_steps=STEPS,
        output_type="pt",
        generator=torch.Generator().manual_seed(2),
    ).images
    index, _ = nearest_scenes(images, pipe.world)
    counts = torch.bincount(pipe.world.codes[index, 4], minlength=6).double()
    chi2 = ((counts - 8) ** 2 / 8).sum().item()
    assert chi2 < 20.5, counts


def test_guidance_zero_is_the_unconditional_model_and_negative_prompts_replace_it():
    pipe = load_lab_pipeline("lab")
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))

    def run(prompt, **kwargs):
        return pipe(
            prompt,
            num_images_per_prompt=2,
            latents=latents,
            num_inference_steps=8,
            output_type="pt",
            **kwargs,
        ).images

    torch.testing.assert_close(run("a red circle", guidance_scale=0.0), run(""))
    torch.testing.assert_close(
        run("a red circle", guidance_scale=0.0, negative_prompt="a blue square"),
        run("a blue square"),
    )
    guided = run("a red circle", guidance_scale=3.0)
    assert gallery_readout(guided, "a red circle", pipe.world).alignment == 1.0


def test_latents_for_and_generate_work_unchanged():
    pipe = load_lab_pipeline("lab")
    pipe.set_progress_bar_config(disable=True)
    latents = couplednoise.latents_for(
        pipe,
        "repulsive",
        num_images_per_prompt=4,
        num_prompts=2,
        generator=[torch.Generator().manual_seed(s) for s in (4, 5)],
    )
    assert latents.shape == (8, 3, 32, 32)
    assert latents.reshape(2, 4, -1).sum(1).abs().max() < 1e-4  # repulsive: each gallery sums to 0
    prompts = ["a red circle", "a blue square"]
    direct = pipe(
        prompts, num_images_per_prompt=4, latents=latents, num_inference_steps=6, output_type="pt"
    ).images
    generated = couplednoise.generate(
        pipe,
        prompts,
        "repulsive",
        num_images_per_prompt=4,
        generator=[torch.Generator().manual_seed(s) for s in (4, 5)],
        num_inference_steps=6,
        output_type="pt",
    ).images
    torch.testing.assert_close(generated, direct)


def test_output_types_and_sizes():
    pipe = load_lab_pipeline("lab:size=64,scheduler=flow")
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"num_inference_steps": 3, "generator": torch.Generator().manual_seed(0)}
    assert pipe.unet.config.in_channels == 3 and pipe.unet.config.sample_size == 64
    pil = pipe("a circle", num_images_per_prompt=2, **kwargs).images
    assert len(pil) == 2 and pil[0].size == (64, 64)
    array = pipe("a circle", output_type="np", **kwargs).images
    assert array.shape == (1, 64, 64, 3) and array.min() >= 0 and array.max() <= 1
    out = pipe("a circle", output_type="pt", return_dict=False, height=64, width=64, **kwargs)
    assert out[0].shape == (1, 3, 64, 64)


def test_bad_requests_fail_before_any_work():
    pipe = load_lab_pipeline("lab")
    with pytest.raises(ValueError, match=r"expected \(2, 3, 32, 32\)"):
        pipe("a circle", num_images_per_prompt=2, latents=torch.zeros(3, 3, 32, 32))
    with pytest.raises(ValueError, match="lab:size=64"):
        pipe("a circle", height=64)
    with pytest.raises(ValueError, match=r"(?s)unknown word.*'dog'.*shape: circle"):
        pipe("a dog")
    with pytest.raises(ValueError, match="output_type"):
        pipe("a circle", output_type="latents")
    with pytest.raises(ValueError, match="scheduler"):
        load_lab_pipeline("lab:scheduler=pndm")
    with pytest.raises(ValueError, match="key one of"):
        load_lab_pipeline("lab:resolution=64")
    with pytest.raises(ValueError, match="size must be one of"):
        load_lab_pipeline("lab:size=48")
