"""The lab's condition as prior weights over scenes, and its step callbacks (the CADS seam)."""

from __future__ import annotations

import pytest
import torch

from couplednoise.pipelines.lab import load_lab_pipeline

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def lab():
    pipe = load_lab_pipeline("lab")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def noise(lab, n, seed=0):
    return torch.randn(
        n, 3, lab.world.size, lab.world.size, generator=torch.Generator().manual_seed(seed)
    )


def test_the_prompts_own_weights_reproduce_the_prompt(lab):
    latents = noise(lab, 4)
    call = {"num_images_per_prompt": 4, "latents": latents, "num_inference_steps": 8}
    plain = lab(PROMPT, output_type="pt", **call).images
    own = lab.prompt_weights_for(PROMPT).expand(4, -1)
    weighted = lab(
        PROMPT, output_type="pt", prompt_weights=3.0 * own, **call
    ).images  # unnormalised
    torch.testing.assert_close(weighted, plain, atol=1e-4, rtol=0)
    assert float(own[0].sum()) == pytest.approx(1.0) and int((own[0] > 0).sum()) == 120


def test_weights_on_one_scene_generate_that_scene_even_off_the_prompt(lab):
    index = int(lab.scenes_for("a blue square on a black background")[0])
    weights = torch.zeros(2, len(lab.world))
    weights[:, index] = 1.0
    images = lab(
        PROMPT,
        num_images_per_prompt=2,
        latents=noise(lab, 2),
        num_inference_steps=10,
        output_type="pt",
        prompt_weights=weights,
    ).images
    target = lab.world.images[index].expand_as(images)
    torch.testing.assert_close(images, target, atol=0.02, rtol=0)


def test_step_callbacks_see_every_step_and_may_change_the_condition(lab):
    seen = []
    single = torch.zeros(2, len(lab.world))
    single[:, int(lab.scenes_for(PROMPT)[0])] = 1.0

    def callback(pipe, step, timestep, tensors):
        seen.append((step, int(timestep), sorted(tensors)))
        return {"prompt_weights": single} if step == 4 else {}

    images = lab(
        PROMPT,
        num_images_per_prompt=2,
        latents=noise(lab, 2, seed=3),
        num_inference_steps=10,
        output_type="pt",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "prompt_weights"],
    ).images
    assert [s for s, _, _ in seen] == list(range(10))
    assert [t for _, t, _ in seen] == lab.scheduler.timesteps.tolist()
    assert seen[0][2] == ["latents", "prompt_weights"]
    target = lab.world.images[int(lab.scenes_for(PROMPT)[0])].expand_as(images)
    torch.testing.assert_close(images, target, atol=0.02, rtol=0)  # from step 5 on, one scene


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_weights": torch.ones(3, 7)}, r"prompt_weights must be a tensor \[2, 2880\]"),
        ({"prompt_weights": -torch.ones(2, 2880)}, "finite and >= 0"),
        ({"prompt_weights": torch.zeros(2, 2880)}, "positive sum"),
        ({"callback_on_step_end_tensor_inputs": ["prompt_embeds"]}, "are not among"),
        ({"callback_on_step_end": 3}, "must be callable"),
    ],
)
def test_bad_conditions_and_callbacks_fail_before_sampling(lab, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        lab(PROMPT, num_images_per_prompt=2, num_inference_steps=2, **kwargs)


def test_the_local_denoiser_refuses_prior_weights():
    pipe = load_lab_pipeline("lab:locality=7")
    with pytest.raises(ValueError, match="exact denoiser"):
        pipe(PROMPT, num_images_per_prompt=1, prompt_weights=torch.ones(1, len(pipe.world)))
