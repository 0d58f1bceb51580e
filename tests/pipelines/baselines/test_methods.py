"""Gallery method settings (spec, JSON record) and sample_gallery on a tiny pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from couplednoise import latents_for
from couplednoise.pipelines.baselines import (
    GALLERY_METHODS,
    CADSSettings,
    CNOSettings,
    PlainSampling,
    cno_latents,
    count_evaluations,
    get_gallery_method,
    method_from_record,
    sample_gallery,
)

PROMPTS = ["a red car", "a blue bird"]
K = 2
CALL = {"num_inference_steps": 3, "guidance_scale": 5.0, "output_type": "pt"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("plain", PlainSampling()),
        ("cno", CNOSettings()),
        ("CNO: iterations=10, lr=0.005", CNOSettings(iterations=10, lr=0.005)),
        ("cno:gradient_checkpointing=true", CNOSettings(gradient_checkpointing=True)),
        ("cads:tau1=0.42,tau2=0.65", CADSSettings(tau1=0.42, tau2=0.65)),
    ],
)
def test_specs_and_records_rebuild_the_method(spec, expected):
    method = get_gallery_method(spec)
    assert method == expected
    assert get_gallery_method(method.spec) == method
    record = json.loads(json.dumps(method.record()))  # JSON-able, as config.json stores it
    assert record["name"] == method.name and record["spec"] == method.spec
    assert method_from_record(record) == method
    assert get_gallery_method(method) is method


def test_the_defaults_are_the_released_and_published_settings():
    assert CNOSettings().record()["settings"] == {
        "iterations": 3,
        "lr": 0.01,
        "tau": 0.1,
        "gamma": 1.0,
        "pool": 16,
        "gradient_checkpointing": False,
    }
    assert CADSSettings().spec == "cads:tau1=0.6,tau2=0.9,noise_scale=0.25,psi=1.0"
    assert set(GALLERY_METHODS) == {"plain", "cno", "cads"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dpo", "unknown gallery method 'dpo'; valid: plain, cno, cads"),
        ("cno:steps=3", "unknown setting\\(s\\) steps for gallery method 'cno'"),
        ("cno:iterations", "is not key=value"),
        ("cno:lr=0.1,lr=0.2", "given twice"),
        ("cads:psi=2", "psi must be in"),
        ("", "non-empty string"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        get_gallery_method(spec)


def test_sample_gallery_is_the_pipeline_run_for_each_method(sd15_pipe):
    latents = latents_for(
        sd15_pipe,
        "repulsive",
        num_images_per_prompt=K,
        num_prompts=2,
        generator=torch.Generator().manual_seed(0),
    )
    run = {"num_images_per_prompt": K, **CALL}
    plain = sd15_pipe(PROMPTS, latents=latents, **run).images
    assert torch.equal(sample_gallery(sd15_pipe, PROMPTS, latents, "plain", **run).images, plain)

    optimised = cno_latents(
        sd15_pipe,
        PROMPTS,
        latents,
        num_images_per_prompt=K,
        num_inference_steps=3,
        guidance_scale=5.0,
    ).latents
    expected = sd15_pipe(PROMPTS, latents=optimised, **run).images
    with count_evaluations(sd15_pipe) as count:
        cno = sample_gallery(sd15_pipe, PROMPTS, latents, "cno", **run).images
    assert torch.equal(cno, expected)
    # 3 guided steps (2 x 3) + the reference (2) + 3 iterations (2 x 3 forward, 2 x 3 backward)
    assert count.per_image(2 * K) == {"forward": 14.0, "backward": 6.0}

    with count_evaluations(sd15_pipe) as count:
        cads = sample_gallery(sd15_pipe, PROMPTS, latents, CADSSettings(noise_scale=0), **run)
    assert torch.equal(cads.images, plain)
    assert count.per_image(2 * K) == {"forward": 6.0, "backward": 0.0}
