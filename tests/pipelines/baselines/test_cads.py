"""CADS through step callbacks on tiny SD1.5 / SDXL / SD3 pipelines and the lab."""

from __future__ import annotations

import math

import pytest
import torch

from couplednoise import latents_for
from couplednoise.pipelines.baselines import (
    CADSSettings,
    CNOSettings,
    cads_gamma,
    count_evaluations,
    noise_condition,
    noise_prompt_weights,
    sample_with_cads,
)
from couplednoise.pipelines.lab import load_lab_pipeline

PROMPTS = ["a red car", "a blue bird"]
K = 2
CALL = {"num_inference_steps": 3, "guidance_scale": 5.0, "output_type": "pt"}


def coupled_latents(pipe, k=K, prompts=PROMPTS):
    return latents_for(
        pipe,
        "repulsive",
        num_images_per_prompt=k,
        num_prompts=len(prompts),
        generator=torch.Generator().manual_seed(0),
    )


@pytest.fixture(scope="module")
def lab():
    pipe = load_lab_pipeline("lab")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_gamma_schedule():
    values = {t: cads_gamma(t, 0.6, 0.9) for t in (0.0, 0.6, 0.675, 0.75, 0.825, 0.9, 1.0)}
    assert values == pytest.approx(
        {0.0: 1.0, 0.6: 1.0, 0.675: 0.75, 0.75: 0.5, 0.825: 0.25, 0.9: 0.0, 1.0: 0.0}
    )


def expected_condition(y, gamma, noise, s, psi):
    """CADS's formula, written out per row in float64."""
    rows = []
    for row, n in zip(y.double(), noise.double()):
        noisy = math.sqrt(gamma) * row + s * math.sqrt(1 - gamma) * n
        rescaled = (noisy - noisy.mean()) / noisy.std() * row.std() + row.mean()
        rows.append(psi * rescaled + (1 - psi) * noisy)
    return torch.stack(rows).float()


@pytest.mark.parametrize("psi", [0.0, 0.5, 1.0])
def test_noise_condition_is_the_formula(psi):
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(3, 6, 5, generator=gen) * 2 + 1
    noise = torch.randn(3, 6, 5, generator=gen)
    settings = CADSSettings(noise_scale=0.4, psi=psi)
    out = noise_condition(y, 0.3, noise, settings)
    torch.testing.assert_close(out, expected_condition(y, 0.3, noise, 0.4, psi), atol=1e-5, rtol=0)
    if psi == 1.0:  # the rescaled condition has y's statistics, per image
        torch.testing.assert_close(out.flatten(1).mean(1), y.flatten(1).mean(1), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.flatten(1).std(1), y.flatten(1).std(1), atol=1e-5, rtol=0)
    assert noise_condition(y, 1.0, None, settings) is y
    assert noise_condition(y, 0.0, None, CADSSettings(noise_scale=0)) is y


def test_lab_prior_weights_stay_a_prior_and_anneal_to_the_prompt(lab):
    clean = torch.stack([lab.prompt_weights_for("a red circle"), lab.prompt_weights_for("")])
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    settings = CADSSettings()
    assert noise_prompt_weights(clean, 1.0, noise, settings) is None
    matching = clean[0] > 0
    previous = 0.0
    for gamma in (0.0, 0.5, 0.9, 0.99):
        weights = noise_prompt_weights(clean, gamma, noise, settings)
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(1), torch.ones(2), atol=1e-5, rtol=0)
        assert torch.equal(weights[1], clean[1])  # the empty prompt constrains nothing
        mass = float(weights[0, matching].sum())  # prior mass on the prompt's scenes grows
        assert mass > previous
        previous = mass
    # Scenes off the prompt sit at weight 0, the edge of the simplex: noise leaks mass to them,
    # ~ s sqrt(1 - gamma) (about 4% at gamma = 0.99).
    assert 0.9 < previous < 1.0
    pure = noise_prompt_weights(clean, 0.0, noise, settings)[0]
    assert 0.4 < float((pure > 0).float().mean()) < 0.8  # a random prior over much of the world


def test_cads_at_zero_noise_is_plain_sampling_exactly(tiny_pipe):
    latents = coupled_latents(tiny_pipe)
    plain = tiny_pipe(PROMPTS, num_images_per_prompt=K, latents=latents, **CALL).images
    with count_evaluations(tiny_pipe) as count:
        cads = sample_with_cads(
            tiny_pipe,
            PROMPTS,
            latents,
            CADSSettings(noise_scale=0.0),
            num_images_per_prompt=K,
            **CALL,
        ).images
    assert torch.equal(cads, plain)
    assert count.forward == 2 * len(PROMPTS) * K * CALL["num_inference_steps"]


def test_cads_changes_the_images_at_no_extra_cost(tiny_pipe):
    latents = coupled_latents(tiny_pipe)
    plain = tiny_pipe(PROMPTS, num_images_per_prompt=K, latents=latents, **CALL).images
    with count_evaluations(tiny_pipe) as count:
        cads = sample_with_cads(
            tiny_pipe,
            PROMPTS,
            latents,
            num_images_per_prompt=K,
            generator=torch.Generator().manual_seed(1),
            **{**CALL, "num_inference_steps": 10},  # steps at t > tau1 (3 steps start at 0.67)
        ).images
    assert count.forward == 2 * len(PROMPTS) * K * 10 and count.backward == 0
    assert float((cads - plain).abs().max()) > 1e-3


def test_unguided_cads_at_zero_noise_is_plain_sampling(sd15_pipe):
    latents = coupled_latents(sd15_pipe)
    call = {**CALL, "guidance_scale": 1.0}
    plain = sd15_pipe(PROMPTS, num_images_per_prompt=K, latents=latents, **call).images
    cads = sample_with_cads(
        sd15_pipe, PROMPTS, latents, CADSSettings(noise_scale=0), num_images_per_prompt=K, **call
    ).images
    assert torch.equal(cads, plain)


def test_the_condition_noise_is_annealed_as_specified(sd15_pipe):
    """Replay the schedule and the generator: every step's conditional embeddings, recomputed."""
    latents = coupled_latents(sd15_pipe)
    settings = CADSSettings(noise_scale=0.5, psi=1.0)
    seen = []
    handle = sd15_pipe.unet.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()),
        with_kwargs=True,
    )
    try:
        sample_with_cads(
            sd15_pipe,
            PROMPTS,
            latents,
            settings,
            num_images_per_prompt=K,
            generator=torch.Generator().manual_seed(7),
            **{**CALL, "num_inference_steps": 10},
        )
    finally:
        handle.remove()
    with torch.no_grad():
        clean, negative = sd15_pipe.encode_prompt(PROMPTS, "cpu", K, True, None)
    timesteps = sd15_pipe.scheduler.timesteps  # 901, 801, ..., 1 (leading spacing, offset 1)
    replay = torch.Generator().manual_seed(7)
    gammas = []
    for stacked, t in zip(seen, timesteps):
        gamma = cads_gamma(float(t) / 1000, 0.6, 0.9)
        gammas.append(gamma)
        assert torch.equal(stacked[: len(clean)], negative)  # the unconditional branch stays clean
        cond = stacked[len(clean) :]
        if gamma == 1.0:
            assert torch.equal(cond, clean)
            continue
        noise = torch.randn(clean.shape, generator=replay)
        expected = expected_condition(clean, gamma, noise, 0.5, 1.0)
        torch.testing.assert_close(cond, expected, atol=1e-5, rtol=1e-5)
    assert gammas[:5] == pytest.approx([0.0, 0.099 / 0.3, 0.199 / 0.3, 0.299 / 0.3, 1.0])
    first = seen[0][len(clean) :]  # gamma 0: rescaled noise, unrelated to the prompt
    correlation = torch.corrcoef(torch.stack([first.flatten(), clean.flatten()]))[0, 1]
    assert abs(float(correlation)) < 0.05


def test_lab_cads_at_zero_noise_is_plain_and_noises_the_prior_early(lab):
    prompts = ["a red circle", "a square on a blue background"]
    latents = coupled_latents(lab, k=3, prompts=prompts)
    call = {"num_inference_steps": 10, "output_type": "pt"}
    plain = lab(prompts, num_images_per_prompt=3, latents=latents, **call).images
    zero = sample_with_cads(
        lab, prompts, latents, CADSSettings(noise_scale=0), num_images_per_prompt=3, **call
    ).images
    assert torch.equal(zero, plain)

    used = []
    predict = lab.predict_x0

    def spy(*args, prompt_weights=None, **kwargs):
        used.append(prompt_weights)
        return predict(*args, prompt_weights=prompt_weights, **kwargs)

    lab.predict_x0 = spy
    try:
        with count_evaluations(lab) as count:
            noised = sample_with_cads(
                lab,
                prompts,
                latents,
                num_images_per_prompt=3,
                generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
                **call,
            ).images
    finally:
        del lab.predict_x0
    assert count.forward == 6 * 10  # guidance 1: one posterior per image and step
    times = [float(t) / 1000 for t in lab.scheduler.timesteps]  # 0.999, 0.899, ..., 0.099
    assert [w is None for w in used] == [t <= 0.6 for t in times]
    assert float((noised - plain).abs().max()) > 0


@pytest.mark.parametrize(
    ("settings", "kwargs", "error", "message"),
    [
        (None, {"prompt_embeds": torch.zeros(1)}, ValueError, "CADS sets prompt_embeds"),
        (None, {"callback_on_step_end": print}, ValueError, "callback_on_step_end"),
        (None, {"generator": [torch.Generator()]}, ValueError, "1 generators for 2 prompt"),
        (None, {"num_images_per_prompt": 3}, ValueError, "latents must be"),
        (CNOSettings(), {}, TypeError, "settings must be CADSSettings"),
    ],
)
def test_bad_arguments_fail_before_any_network(sd15_pipe, settings, kwargs, error, message):
    latents = coupled_latents(sd15_pipe)
    call = {"num_images_per_prompt": K, **CALL, **kwargs}
    with count_evaluations(sd15_pipe) as count, pytest.raises(error, match=message):
        sample_with_cads(sd15_pipe, PROMPTS, latents, settings, **call)
    assert count.forward == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tau1": 0.9, "tau2": 0.6}, "tau1 < tau2"),
        ({"tau2": 1.5}, "tau2"),
        ({"noise_scale": -0.1}, "noise_scale"),
        ({"psi": 1.5}, "psi"),
        ({"psi": float("nan")}, "psi must be finite"),
    ],
)
def test_settings_are_checked(settings, message):
    with pytest.raises(ValueError, match=message):
        CADSSettings(**settings)


def test_unsupported_pipelines_are_refused():
    latents = torch.zeros(2, 4, 8, 8)
    with pytest.raises(TypeError, match=r"CADS supports SD1\.5, SDXL, SD3 and the lab"):
        sample_with_cads(object(), "a cat", latents, num_images_per_prompt=2)
