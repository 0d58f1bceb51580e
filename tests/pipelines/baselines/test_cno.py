"""CNO on tiny SD1.5 / SDXL / SD3 pipelines and the lab: the first step, the loss, the optimiser."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
import torch.nn.functional as F

from couplednoise import latents_for
from couplednoise.pipelines.baselines import (
    CADSSettings,
    CNOSettings,
    cno_latents,
    cno_loss,
    count_evaluations,
    first_step,
)
from couplednoise.pipelines.lab import load_lab_pipeline
from couplednoise.pipelines.lab.denoiser import posterior_mean
from tests.tiny_models import with_scheduler

PROMPTS = ["a red car", "a blue bird"]
K = 3
CALL = {"num_inference_steps": 4, "guidance_scale": 5.0}


def coupled_latents(pipe, coupling="repulsive", seed=0, k=K, prompts=PROMPTS):
    return latents_for(
        pipe,
        coupling,
        num_images_per_prompt=k,
        num_prompts=len(prompts),
        generator=torch.Generator().manual_seed(seed),
    )


def pipeline_first_x0(pipe, latents):
    """x0 of the pipeline's own first step, read off its scheduler's first step() call."""
    pipe = with_scheduler(pipe, type(pipe.scheduler))  # a fresh scheduler, modules shared
    scheduler, record = pipe.scheduler, {}
    step = scheduler.step

    def recording_step(model_output, timestep, sample, *args, return_dict=True, **kwargs):
        out = step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
        record.setdefault("first", (model_output, sample, out))
        return out if return_dict else out.to_tuple()

    scheduler.step = recording_step
    pipe(PROMPTS, num_images_per_prompt=K, latents=latents, **CALL)
    _, sample, out = record["first"]
    original = getattr(out, "pred_original_sample", None)
    if original is not None:  # DDIM, Euler
        return original
    sigma, sigma_next = scheduler.sigmas[0], scheduler.sigmas[1]  # flow-match Euler
    velocity = (out.prev_sample - sample) / (sigma_next - sigma)
    return sample - sigma * velocity


def test_first_step_is_the_pipelines_own_prediction(tiny_pipe):
    latents = coupled_latents(tiny_pipe)
    step = first_step(tiny_pipe, PROMPTS, latents, num_images_per_prompt=K, **CALL)
    expected = pipeline_first_x0(tiny_pipe, latents).float()
    assert step.guidance_scale == 5.0
    with torch.no_grad():
        predicted = step.predict(latents)
    torch.testing.assert_close(predicted, expected, rtol=1e-4, atol=1e-4)


def released_loss(x0, reference, k, tau, gamma, pool):
    """The released iopt_diverse loss, written out per gallery, location and image (float64)."""
    total = 0.0
    for g in range(x0.shape[0] // k):
        v = F.adaptive_avg_pool2d(x0[g * k : (g + 1) * k].double(), (pool, pool))
        r = F.adaptive_avg_pool2d(reference[g * k : (g + 1) * k].double(), (pool, pool))
        v = F.normalize(v.flatten(2), dim=1)
        r = F.normalize(r.flatten(2), dim=1)
        losses = []
        for p in range(v.shape[2]):
            for i in range(k):
                positive = math.exp(float(r[i, :, p] @ v[i, :, p]) / tau / gamma)
                negatives = sum(
                    math.exp(float(v[i, :, p] @ v[j, :, p]) / tau) for j in range(k) if j != i
                )
                losses.append(-math.log(positive / (positive + negatives + 1e-8)))
        total += sum(losses) / len(losses)
    return total


def test_loss_matches_a_direct_recomputation(sd15_pipe):
    start, moved = coupled_latents(sd15_pipe, seed=0), coupled_latents(sd15_pipe, seed=1)
    step = first_step(sd15_pipe, PROMPTS, start, num_images_per_prompt=K, **CALL)
    with torch.no_grad():
        reference, x0 = step.predict(start), step.predict(0.8 * start + 0.6 * moved)
    for tau, gamma, pool in ((0.1, 1.0, 16), (0.5, 2.0, 4)):
        ours = float(cno_loss(x0, reference, gallery_size=K, tau=tau, gamma=gamma, pool=pool))
        assert ours == pytest.approx(released_loss(x0, reference, K, tau, gamma, pool), rel=1e-5)


def test_the_optimiser_lowers_the_loss(tiny_pipe):
    latents = coupled_latents(tiny_pipe)
    result = cno_latents(tiny_pipe, PROMPTS, latents, num_images_per_prompt=K, **CALL)
    step = first_step(tiny_pipe, PROMPTS, latents, num_images_per_prompt=K, **CALL)
    with torch.no_grad():
        reference = step.predict(latents)
        before = float(cno_loss(reference, reference, gallery_size=K))
        after = float(cno_loss(step.predict(result.latents), reference, gallery_size=K))
    assert len(result.losses) == 3
    assert result.losses[0] == pytest.approx(before, rel=1e-4)
    assert after < before
    # Adam moves each coordinate by about lr a step (exactly lr on the first): ~3 lr in all.
    assert 0.01 < float((result.latents - latents).abs().max()) <= 1.05 * 3 * 0.01
    assert result.latents.dtype == latents.dtype and result.latents.shape == latents.shape


def test_zero_iterations_return_the_input_with_no_evaluation(sd15_pipe):
    latents = coupled_latents(sd15_pipe)
    with count_evaluations(sd15_pipe) as count:
        result = cno_latents(
            sd15_pipe, PROMPTS, latents, CNOSettings(iterations=0), num_images_per_prompt=K
        )
    assert result.latents is latents and result.losses == []
    assert (count.forward, count.backward) == (0, 0)


def test_gradients_reach_the_latents_and_not_the_weights(tiny_pipe):
    latents = coupled_latents(tiny_pipe)
    step = first_step(tiny_pipe, PROMPTS, latents, num_images_per_prompt=K, **CALL)
    with torch.no_grad():
        reference = step.predict(latents)
    z = (latents + 0.1 * coupled_latents(tiny_pipe, seed=3)).requires_grad_(True)
    cno_loss(step.predict(z), reference, gallery_size=K).backward()
    assert torch.isfinite(z.grad).all()
    assert (z.grad.flatten(1).norm(dim=1) > 0).all()  # every image gets a gradient

    network = tiny_pipe.unet if hasattr(tiny_pipe, "unet") else tiny_pipe.transformer
    network.zero_grad(set_to_none=True)
    cno_latents(tiny_pipe, PROMPTS, latents, num_images_per_prompt=K, **CALL)
    assert all(p.grad is None and p.requires_grad for p in network.parameters())


def test_each_iteration_frees_its_graph_and_counts_match_the_cost(sd15_pipe):
    alive_at_call, outputs = [], []

    def before(_module, _args):
        alive_at_call.append(sum(ref() is not None for ref in outputs))

    def after(_module, _args, output):
        outputs.append(weakref.ref(output[0]))

    handles = [
        sd15_pipe.unet.register_forward_pre_hook(before),
        sd15_pipe.unet.register_forward_hook(after),
    ]
    latents = coupled_latents(sd15_pipe)
    try:
        with count_evaluations(sd15_pipe) as count:
            cno_latents(sd15_pipe, PROMPTS, latents, num_images_per_prompt=K, **CALL)
    finally:
        for handle in handles:
            handle.remove()
    # The recorded (cancelled) first call, the reference, 3 iterations: nothing kept between them.
    assert alive_at_call == [0, 0, 0, 0, 0]
    images = len(PROMPTS) * K
    assert count.per_image(images) == {"forward": 8.0, "backward": 6.0}  # 2 (CFG) x (1 + 3), 2 x 3


def test_gradient_checkpointing_gives_the_same_latents_and_is_restored(sd15_pipe):
    latents = coupled_latents(sd15_pipe)
    plain = cno_latents(sd15_pipe, PROMPTS, latents, num_images_per_prompt=K, **CALL)
    checkpointed = cno_latents(
        sd15_pipe,
        PROMPTS,
        latents,
        CNOSettings(gradient_checkpointing=True),
        num_images_per_prompt=K,
        **CALL,
    )
    torch.testing.assert_close(checkpointed.latents, plain.latents, rtol=0, atol=1e-6)
    assert not sd15_pipe.unet.is_gradient_checkpointing


@pytest.mark.parametrize(
    ("settings", "kwargs", "message"),
    [
        (None, {"num_images_per_prompt": 1}, "num_images_per_prompt must be an int >= 2"),
        (None, {"num_images_per_prompt": 2}, r"latents must be \[4, C, h, w\]"),
        (None, {"num_images_per_prompt": K, "guidance_rescale": 0.7}, "guidance_rescale"),
        (CADSSettings(), {"num_images_per_prompt": K}, "settings must be CNOSettings"),
    ],
)
def test_bad_arguments_fail_before_any_network(sd15_pipe, settings, kwargs, message):
    latents = coupled_latents(sd15_pipe)
    with count_evaluations(sd15_pipe) as count:
        with pytest.raises((ValueError, TypeError), match=message):
            cno_latents(sd15_pipe, PROMPTS, latents, settings, **kwargs)
        with pytest.raises(ValueError, match="non-finite"):
            cno_latents(sd15_pipe, PROMPTS, latents * float("nan"), num_images_per_prompt=K, **CALL)
        with pytest.raises(ValueError, match="a spatial latent grid"):
            cno_latents(sd15_pipe, PROMPTS, latents.flatten(2), num_images_per_prompt=K)
    assert count.forward == 0
    with pytest.raises(TypeError, match="no differentiable denoiser"):
        cno_latents(object(), PROMPTS, latents, num_images_per_prompt=K)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("iterations", -1),
        ("iterations", 2.0),
        ("lr", 0),
        ("tau", float("nan")),
        ("gamma", -1),
        ("pool", 0),
        ("gradient_checkpointing", "yes"),
    ],
)
def test_settings_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        CNOSettings(**{field: value})


def test_lab_posterior_mean_is_differentiable_also_under_a_prior():
    gen = torch.Generator().manual_seed(0)
    scenes = torch.rand(7, 5, generator=gen, dtype=torch.float64) * 2 - 1
    x = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    prior = torch.rand(3, 7, generator=gen, dtype=torch.float64)
    prior[0, :4] = 0  # excluded scenes, across a chunk boundary
    log_prior = prior.log()
    for kwargs in ({}, {"log_prior": log_prior}):
        assert torch.autograd.gradcheck(
            lambda x, kw=kwargs: posterior_mean(
                x, scenes, 0.6, 0.8, smoothing=0.1, chunk_size=3, **kw
            ),
            (x,),
        )


def test_cno_runs_on_the_lab():
    pipe = load_lab_pipeline("lab")
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle", "a large square"]
    latents = coupled_latents(pipe, "independent", k=4, prompts=prompts)
    with count_evaluations(pipe) as count:
        result = cno_latents(
            pipe, prompts, latents, num_images_per_prompt=4, num_inference_steps=10
        )
    assert count.per_image(8) == {"forward": 4.0, "backward": 3.0}  # guidance 1: one branch
    assert len(result.losses) == 3 and all(math.isfinite(v) for v in result.losses)
    assert 0.01 < float((result.latents - latents).abs().max()) <= 1.05 * 3 * 0.01
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        cno_latents(
            pipe,
            prompts,
            latents,
            CNOSettings(gradient_checkpointing=True),
            num_images_per_prompt=4,
        )
