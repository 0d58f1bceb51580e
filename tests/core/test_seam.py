"""The seam (couplednoise.coupled / generate): which draw is coupled, threads, errors."""

from __future__ import annotations

import sys
import threading

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
)

from couplednoise import (
    Repulsive,
    UnsupportedPipelineError,
    check_latents,
    coupled,
    generate,
    latents_for,
    sample_groups,
)
from couplednoise.seam import pipeline_modules
from tests.tiny_models import capture_denoiser_inputs, tiny_sd15, with_scheduler

PROMPTS = ["a cat", "a dog"]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def per_image(generators: list[torch.Generator], k: int) -> list[torch.Generator]:
    return [g for g in generators for _ in range(k)]


def test_coupled_serves_the_initial_draw_at_the_pipelines_shape(sd15_pipe):
    with (
        capture_denoiser_inputs(sd15_pipe) as inputs,
        coupled(sd15_pipe, "repulsive", num_prompts=2, generator=[seeded(1), seeded(2)]) as seam,
    ):
        sd15_pipe(PROMPTS, num_images_per_prompt=3, num_inference_steps=1, output_type="latent")
    assert seam.shape == (6, 4, 8, 8) and seam.drawn_in == "StableDiffusionPipeline.prepare_latents"
    expected = torch.cat([Repulsive().sample(3, (4, 8, 8), generator=seeded(s)) for s in (1, 2)])
    assert torch.equal(seam.noise, expected)  # K = 6 // 2 read from the draw; a group per prompt
    init_sigma = sd15_pipe.scheduler.init_noise_sigma  # DDIM: 1
    torch.testing.assert_close(inputs[0][6:], expected * init_sigma, rtol=0, atol=0)


def test_other_draws_pass_through_unchanged(sd15_pipe):
    with coupled(sd15_pipe, "repulsive"):
        sd15_pipe("x", num_inference_steps=1, output_type="latent")
    module = sys.modules[type(sd15_pipe).__module__]
    dispatcher = module.randn_tensor
    assert dispatcher is not dispatcher.__wrapped__  # installed, and kept for good
    # Outside a seam (and inside one, for draws that are not the initial one) it is diffusers'.
    for shape in [(2, 4, 8, 8), (3, 5)]:
        assert torch.equal(
            dispatcher(shape, generator=seeded(0)),
            dispatcher.__wrapped__(shape, generator=seeded(0)),
        )
    # Schedulers keep their own binding: their step noise is never served by the seam.
    scheduler_module = sys.modules[EulerAncestralDiscreteScheduler.__module__]
    assert not hasattr(scheduler_module.randn_tensor, "__couplednoise_dispatch__")
    assert scheduler_module not in pipeline_modules(sd15_pipe)


@pytest.mark.parametrize(
    "scheduler",
    [
        lambda c: EulerAncestralDiscreteScheduler.from_config(c),
        lambda c: DPMSolverMultistepScheduler.from_config(c, algorithm_type="sde-dpmsolver++"),
    ],
    ids=["euler-ancestral", "sde-dpmsolver++"],
)
def test_stochastic_schedulers_keep_their_own_step_noise(sd15_pipe, scheduler):
    """generate == explicit coupled latents + the pipeline's own draws from the same generators."""
    pipe = with_scheduler(sd15_pipe, scheduler(sd15_pipe.scheduler.config))
    call = {"num_inference_steps": 3, "output_type": "latent"}
    out = generate(pipe, PROMPTS, "repulsive", 2, generator=[seeded(3), seeded(4)], **call).images
    generators = [seeded(3), seeded(4)]
    latents = latents_for(
        pipe, "repulsive", num_images_per_prompt=2, num_prompts=2, generator=generators
    )
    reference = pipe(
        PROMPTS,
        num_images_per_prompt=2,
        latents=latents,
        generator=per_image(generators, 2),
        **call,
    ).images
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    # The step noise is fresh (not coupled): the outputs' group sums are far from zero.
    assert out.reshape(2, 2, -1).sum(1).abs().max() > 0.1


def test_threads_never_receive_each_others_noise():
    """Two pipelines of one class (one module, one dispatcher) draw in two threads at once, a third
    thread runs the same class without a seam: each gets exactly its solo result."""
    pipes = [tiny_sd15(), tiny_sd15(), tiny_sd15()]
    call = {"num_inference_steps": 1, "output_type": "latent"}
    jobs = [
        lambda p: generate(p, PROMPTS, "repulsive", 2, generator=[seeded(1), seeded(2)], **call),
        lambda p: generate(p, ["a car"], "orthogonal", 3, generator=seeded(5), **call),
        lambda p: p("a boat", num_images_per_prompt=2, generator=seeded(7), **call),
    ]
    solo = [job(pipe).images for job, pipe in zip(jobs, pipes)]
    barrier = threading.Barrier(len(jobs), timeout=60)

    def meet(_module, _args) -> None:
        barrier.wait()

    for pipe in pipes:  # all three wait inside their text encoders, then draw together
        pipe.text_encoder.register_forward_pre_hook(meet)
    results: dict[tuple[int, int], torch.Tensor] = {}
    errors: list[BaseException] = []

    def run(i: int, rounds: int = 4) -> None:
        try:
            for r in range(rounds):
                # CFG encodes the prompt and the negative prompt: two barrier waits per call.
                results[i, r] = jobs[i](pipes[i]).images
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results) == 3 * 4
    for (i, _), images in results.items():
        torch.testing.assert_close(images, solo[i], rtol=0, atol=0)
    assert solo[1].reshape(3, -1).std() > 0  # the jobs differ, so a mix-up would show


def test_sdxl_refiner_hand_off_couples_the_base_draw(sdxl_pipe):
    refiner = StableDiffusionXLImg2ImgPipeline(**sdxl_pipe.components)
    refiner.set_progress_bar_config(disable=True)
    call = {"num_inference_steps": 4, "output_type": "latent"}
    with capture_denoiser_inputs(sdxl_pipe) as inputs:
        base = generate(
            sdxl_pipe, PROMPTS, "repulsive", 2, generator=seeded(0), denoising_end=0.5, **call
        ).images
    first = inputs[0][4:].double()  # the conditional half; Euler scales all samples alike
    assert first.reshape(2, 2, -1).sum(1).abs().max() < 1e-5 * first.abs().max()
    refined = refiner(
        PROMPTS, image=base, denoising_start=0.5, num_images_per_prompt=2, **call
    ).images
    assert refined.shape == base.shape and not torch.equal(refined, base)
    with (
        capture_denoiser_inputs(refiner) as inputs,
        pytest.raises(UnsupportedPipelineError, match="denoising_start"),
    ):
        generate(refiner, PROMPTS, "repulsive", 2, image=base, denoising_start=0.5, **call)
    assert inputs == []  # refused before any network ran


def test_a_call_that_draws_nothing_is_an_error_not_a_silent_result(sd15_pipe):
    latents = torch.zeros(1, 4, 8, 8)
    with (
        pytest.raises(UnsupportedPipelineError, match="drew no initial noise"),
        coupled(sd15_pipe, "repulsive"),
    ):
        sd15_pipe("x", latents=latents, num_inference_steps=1, output_type="latent")


def test_a_batch_that_is_not_prompts_times_k_is_a_clear_error(sd15_pipe):
    with (
        pytest.raises(ValueError, match=r"shape \(4, 4, 8, 8\).*2 prompt\(s\) x 3 per prompt"),
        coupled(sd15_pipe, "repulsive", num_prompts=2, num_per_prompt=3),
    ):
        sd15_pipe(PROMPTS, num_images_per_prompt=2, num_inference_steps=1, output_type="latent")


@pytest.mark.parametrize("bad", ["cpu", 0, [seeded(0), "cpu"]])
def test_a_generator_that_is_not_one_is_a_type_error(sd15_pipe, bad):
    for call in (
        lambda: generate(sd15_pipe, "x", "repulsive", 2, generator=bad),
        lambda: latents_for(sd15_pipe, "repulsive", num_images_per_prompt=2, generator=bad),
        lambda: coupled(sd15_pipe, "repulsive", generator=bad).__enter__(),
    ):
        with pytest.raises(TypeError, match=r"torch\.Generator"):
            call()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_latents_are_a_value_error(sd15_pipe, value):
    latents = sample_groups(Repulsive(), 1, 2, (4, 8, 8), generator=seeded(0))
    latents[1, 2, 3, 4] = value
    with capture_denoiser_inputs(sd15_pipe) as inputs:
        with pytest.raises(ValueError, match="NaN or infinite"):
            generate(sd15_pipe, "x", None, 2, latents=latents, num_inference_steps=1)
        with pytest.raises(ValueError, match="NaN or infinite"):
            check_latents(sd15_pipe, latents, num_prompts=1, num_images_per_prompt=2)
    assert inputs == []


def test_pipelines_that_cannot_be_coupled_are_refused_with_a_workaround():
    class TwoStage:  # as diffusers' Kandinsky combined pipelines: a prior and a decoder
        prior_pipe = object()
        decoder_pipe = object()

        def __call__(self, prompt, num_images_per_prompt=1):
            raise AssertionError("must not run")

    with pytest.raises(UnsupportedPipelineError, match=r"prior_pipe.*decoder_pipe"):
        generate(TwoStage(), "x", "repulsive")


def test_one_output_per_prompt_pipelines_need_prompt_strings(sd15_pipe):
    class OnePerPrompt(type(sd15_pipe)):
        def __call__(self, prompt=None, prompt_embeds=None, num_videos_per_prompt=1, **kwargs):
            num_videos_per_prompt = 1
            raise AssertionError(f"must not run ({num_videos_per_prompt})")

    pipe = OnePerPrompt(**sd15_pipe.components)
    with pytest.raises(UnsupportedPipelineError, match=r"one output per prompt.*prompt strings"):
        generate(pipe, None, "repulsive", 2, prompt_embeds=torch.zeros(1, 77, 32))
    with pytest.raises(ValueError, match="num_videos_per_prompt is set by generate"):
        generate(pipe, "x", "repulsive", 2, num_videos_per_prompt=2)


def test_pipelines_without_prompts_couple_through_the_context_manager():
    """DDPM draws its noise in __call__ (no prepare_latents): the seam takes that draw."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match=r"couplednoise\.coupled"):
        generate(pipe, None, "repulsive", 4)
    with capture_denoiser_inputs(pipe) as inputs, coupled(pipe, "repulsive") as seam:
        pipe(batch_size=4, num_inference_steps=2, output_type="np", generator=seeded(0))
    assert seam.drawn_in == "DDPMPipeline.__call__" and seam.shape == (4, 3, 8, 8)
    torch.testing.assert_close(inputs[0], seam.noise, rtol=0, atol=0)
    assert inputs[0].sum(0).abs().max() < 1e-5


def test_check_request_raises_what_generate_would_without_running(sd15_pipe):
    from couplednoise import check_request

    with capture_denoiser_inputs(sd15_pipe) as inputs:
        check_request(sd15_pipe, PROMPTS, "orthogonal", 3, generator=[seeded(0), seeded(1)])
        for kwargs, error, match in [
            ({"coupling": "equicorrelated:rho=-0.9"}, ValueError, "rho"),
            ({"coupling": "repulsive", "width": 100}, ValueError, "multiple of 8"),
            ({"coupling": "repulsive", "generator": "cpu"}, TypeError, "generator"),
            ({"coupling": "repulsive", "denoising_start": 0.5}, UnsupportedPipelineError, "draws"),
        ]:
            with pytest.raises(error, match=match):
                check_request(sd15_pipe, PROMPTS, num_images_per_prompt=3, **kwargs)
    assert inputs == []


def test_threads_started_inside_the_block_do_not_see_it_but_to_thread_does(sd15_pipe):
    import asyncio

    call = {"num_images_per_prompt": 2, "num_inference_steps": 1, "output_type": "latent"}
    worker = threading.Thread(target=lambda: sd15_pipe("x", **call))
    with (
        pytest.raises(UnsupportedPipelineError, match="drew no initial noise"),
        coupled(sd15_pipe, "repulsive"),
    ):
        worker.start()
        worker.join()

    async def in_a_task():
        with coupled(sd15_pipe, "repulsive") as seam:
            await asyncio.to_thread(lambda: sd15_pipe("x", **call))
        return seam

    assert asyncio.run(in_a_task()).shape == (2, 4, 8, 8)
