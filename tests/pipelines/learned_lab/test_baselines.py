"""CNO and CADS on the learned lab (committed weights): its embeds and step callbacks, the
first-step prediction CNO differentiates, and CADS's condition noise on its prompt tokens."""

from __future__ import annotations

import math

import pytest
import torch

from couplednoise import latents_for
from couplednoise.pipelines.baselines import (
    CADSSettings,
    cads_gamma,
    cno_latents,
    cno_loss,
    count_evaluations,
    first_step,
    noise_condition,
    sample_gallery,
    sample_with_cads,
)
from couplednoise.pipelines.learned_lab import SCHEDULERS, LearnedLabPipeline

PROMPTS = ["a red sneaker", "a bag on brick"]
K = 3
CALL = {"num_inference_steps": 4, "guidance_scale": 5.0}


def fresh(pipe) -> LearnedLabPipeline:
    """The committed modules with a scheduler of their own (the fixture stays untouched)."""
    out = LearnedLabPipeline(pipe.unet, pipe.prompt_encoder, SCHEDULERS["ddim"]())
    out.set_progress_bar_config(disable=True)
    return out


def coupled(pipe, seed=0, k=K, prompts=PROMPTS):
    return latents_for(
        pipe,
        "repulsive",
        num_images_per_prompt=k,
        num_prompts=len(prompts),
        generator=torch.Generator().manual_seed(seed),
    )


def test_prompt_embeds_give_the_prompts_images_exactly(learned_pipe):
    pipe = fresh(learned_pipe)
    latents = coupled(pipe)
    plain = pipe(PROMPTS, num_images_per_prompt=K, latents=latents, output_type="pt", **CALL)
    embeds = pipe.encode_prompt(PROMPTS, 1)
    negative = pipe.encode_prompt(["", ""], 1)
    via_embeds = pipe(
        prompt=None,
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        num_images_per_prompt=K,
        latents=latents,
        output_type="pt",
        **CALL,
    )
    assert torch.equal(plain.images, via_embeds.images)
    assert pipe.guidance_scale == 5.0 and pipe.do_classifier_free_guidance


def test_step_callbacks_see_the_stacked_condition_and_may_replace_it(learned_pipe):
    pipe = fresh(learned_pipe)
    latents = coupled(pipe, k=2)
    seen = []

    def callback(p, i, t, tensors):
        seen.append((i, int(t), tensors["prompt_embeds"].clone(), tensors["latents"].shape))
        return {"prompt_embeds": torch.zeros_like(tensors["prompt_embeds"])} if i == 0 else {}

    inputs = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda _m, _a, kw: inputs.append(kw["encoder_hidden_states"].clone()), with_kwargs=True
    )
    try:
        pipe(
            PROMPTS, num_images_per_prompt=2, latents=latents, output_type="pt",
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"], **CALL,
        )  # fmt: skip
    finally:
        handle.remove()
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    negative, tokens = pipe.encode_prompt(["", ""], 2), pipe.encode_prompt(PROMPTS, 2)
    assert torch.equal(seen[0][2], torch.cat([negative, tokens]))  # [negative; prompt]
    assert seen[0][3] == (4, 3, 32, 32)
    assert torch.equal(inputs[0], torch.cat([negative, tokens]))
    assert not inputs[1].any()  # step 1 ran on the callback's replacement
    with pytest.raises(ValueError, match="not among"):
        pipe(PROMPTS, callback_on_step_end_tensor_inputs=["noise_pred"], **CALL)
    with pytest.raises(ValueError, match="prompt_embeds must be a tensor"):
        pipe(prompt=None, prompt_embeds=torch.zeros(2, 3, 5), **CALL)
    with pytest.raises(ValueError, match="not both"):
        pipe(PROMPTS, prompt_embeds=tokens, **CALL)


def test_first_step_is_the_pipelines_own_prediction(learned_pipe):
    pipe = fresh(learned_pipe)
    latents = coupled(pipe)
    record = {}
    step_fn = pipe.scheduler.step

    def recording_step(model_output, timestep, sample, *args, **kwargs):
        out = step_fn(model_output, timestep, sample, *args, **kwargs)
        record.setdefault("x0", out.pred_original_sample.clone())
        return out

    pipe.scheduler.step = recording_step
    pipe(PROMPTS, num_images_per_prompt=K, latents=latents, output_type="latent", **CALL)
    del pipe.scheduler.step
    step = first_step(pipe, PROMPTS, latents, num_images_per_prompt=K, **CALL)
    assert step.parameterisation == "v_prediction" and step.guidance_scale == 5.0
    with torch.no_grad():
        predicted = step.predict(latents)
    torch.testing.assert_close(predicted, record["x0"], rtol=1e-4, atol=1e-4)


def test_cno_lowers_its_loss_through_the_trained_unet(learned_pipe):
    pipe = fresh(learned_pipe)
    latents = coupled(pipe)
    with count_evaluations(pipe) as count:
        result = cno_latents(pipe, PROMPTS, latents, num_images_per_prompt=K, **CALL)
    # 3 iterations + the reference, each a guided pair; 3 backward passes of the pair.
    assert count.per_image(len(PROMPTS) * K) == {"forward": 8.0, "backward": 6.0}
    step = first_step(pipe, PROMPTS, latents, num_images_per_prompt=K, **CALL)
    with torch.no_grad():
        reference = step.predict(latents)
        before = float(cno_loss(reference, reference, gallery_size=K))
        after = float(cno_loss(step.predict(result.latents), reference, gallery_size=K))
    assert result.losses[0] == pytest.approx(before, rel=1e-4)
    assert after < before and all(math.isfinite(v) for v in result.losses)
    assert 0.01 < float((result.latents - latents).abs().max()) <= 1.05 * 3 * 0.01
    assert all(p.grad is None for p in pipe.unet.parameters())


def test_cads_at_zero_noise_is_plain_sampling_exactly(learned_pipe):
    pipe = fresh(learned_pipe)
    latents = coupled(pipe)
    call = {**CALL, "output_type": "pt"}
    plain = pipe(PROMPTS, num_images_per_prompt=K, latents=latents, **call).images
    with count_evaluations(pipe) as count:
        cads = sample_with_cads(
            pipe, PROMPTS, latents, CADSSettings(noise_scale=0.0), num_images_per_prompt=K, **call
        ).images
    assert torch.equal(cads, plain)
    assert count.forward == 2 * len(PROMPTS) * K * CALL["num_inference_steps"]


def test_cads_noises_the_prompt_tokens_as_specified(learned_pipe):
    """Replay the generator: each step's conditional tokens are CADS's formula on the clean ones,
    the negative half stays clean, and the evaluation count is plain sampling's."""
    pipe = fresh(learned_pipe)
    latents = coupled(pipe)
    settings = CADSSettings(tau1=0.42, tau2=0.65)
    seen = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["encoder_hidden_states"].clone()), with_kwargs=True
    )
    steps = 10
    try:
        with count_evaluations(pipe) as count:
            images = sample_gallery(
                pipe, PROMPTS, latents, settings, num_images_per_prompt=K,
                generator=torch.Generator().manual_seed(7),
                **{**CALL, "num_inference_steps": steps, "output_type": "pt"},
            ).images  # fmt: skip
    finally:
        handle.remove()
    assert count.forward == 2 * len(PROMPTS) * K * steps and count.backward == 0
    clean = pipe.encode_prompt(PROMPTS, K)
    negative = pipe.encode_prompt(["", ""], K)
    replay = torch.Generator().manual_seed(7)
    gammas = []
    for stacked, t in zip(seen, pipe.scheduler.timesteps):
        gamma = cads_gamma(float(t) / 1000, settings.tau1, settings.tau2)
        gammas.append(gamma)
        assert torch.equal(stacked[: len(clean)], negative)
        if gamma < 1.0:
            noise = torch.randn(clean.shape, generator=replay)
            expected = noise_condition(clean, gamma, noise, settings)
            torch.testing.assert_close(stacked[len(clean) :], expected, atol=1e-5, rtol=1e-5)
        else:
            assert torch.equal(stacked[len(clean) :], clean)
    # trailing spacing: t = 0.999, 0.899, ..., 0.099; pure noise down to 0.65, clean from 0.42
    window = [(0.65 - t) / 0.23 for t in (0.599, 0.499)]
    assert gammas == pytest.approx([0, 0, 0, 0, *window, 1, 1, 1, 1])
    plain = pipe(
        PROMPTS, num_images_per_prompt=K, latents=latents, output_type="pt",
        **{**CALL, "num_inference_steps": steps},
    ).images  # fmt: skip
    assert float((images - plain).abs().max()) > 1e-2


def test_the_baselines_study_readout_counts_attribute_combinations(learned_classifier):
    from couplednoise.eval.studies.baselines import learned_lab_readout
    from couplednoise.pipelines.learned_lab.readout import read_attributes
    from couplednoise.pipelines.learned_lab.world import render

    codes = torch.tensor([[4, 0, 0, 0], [4, 0, 0, 0], [4, 0, 0, 3]])  # two equal, one new bg
    images = render(codes, "test", generator=torch.Generator().manual_seed(0)).images
    images = torch.cat([images[:1], images[:1], images[2:]])  # the first image twice
    reads = read_attributes(images, learned_classifier)
    row = learned_lab_readout(None, images, "")  # everything open: 7 x 6 x 4 x 6 combinations
    distinct = len({tuple(a.values()) for a in reads})
    assert distinct == (1 if reads[0] == reads[2] else 2)
    assert row["scene_cov"] == pytest.approx(distinct / 3)
    assert row["alignment"] == 1.0
    named = learned_lab_readout(None, images, "on the left")  # alignment: position is named
    aligned = [a for a in reads if a["position"] == "left"]
    assert named["alignment"] == pytest.approx(len(aligned) / 3)
