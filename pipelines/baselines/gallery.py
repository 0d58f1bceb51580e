"""One call for any gallery method: plain sampling, CNO then sampling, or sampling with CADS.

latents = couplednoise.latents_for(pipe, "repulsive", num_images_per_prompt=4, generator=g)
output = sample_gallery(pipe, "a red car", latents, "cno", num_images_per_prompt=4)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from couplednoise.pipelines.baselines.cads import GeneratorArg, sample_with_cads
from couplednoise.pipelines.baselines.cno import check_gallery_latents, cno_latents, count_prompts
from couplednoise.pipelines.baselines.settings import (
    CADSSettings,
    CNOSettings,
    GalleryMethod,
    get_gallery_method,
)


def _pipeline_generator(generator: GeneratorArg, k: int) -> GeneratorArg:
    """diffusers wants one generator, or one per image: repeat a per-prompt list K times."""
    if isinstance(generator, (list, tuple)):
        return [g for g in generator for _ in range(k)]
    return generator


def sample_gallery(
    pipe: Any,
    prompt: str | Sequence[str],
    latents: torch.Tensor,
    method: GalleryMethod | str = "plain",
    *,
    num_images_per_prompt: int,
    generator: GeneratorArg = None,
    **pipe_kwargs: Any,
):
    """Run ``pipe`` from ``latents`` [num_prompts * K, ...] with ``method``; the pipeline output.

    ``pipe_kwargs``: the run's pipeline arguments (num_inference_steps, guidance_scale,
    negative_prompt, output_type, ...); CNO predicts its first step with the same ones.
    ``generator`` (one, or one per prompt) goes to the pipeline, and draws CADS's noise.
    """
    method = get_gallery_method(method)
    check_gallery_latents(latents, count_prompts(prompt), num_images_per_prompt)
    k = num_images_per_prompt
    if isinstance(method, CADSSettings):
        return sample_with_cads(
            pipe,
            prompt,
            latents,
            method,
            num_images_per_prompt=k,
            generator=generator,
            **pipe_kwargs,
        )
    if isinstance(method, CNOSettings):
        prediction = {
            key: value
            for key, value in pipe_kwargs.items()
            if key not in ("output_type", "return_dict", "generator")
        }
        latents = cno_latents(
            pipe, prompt, latents, method, num_images_per_prompt=k, **prediction
        ).latents
    return pipe(
        prompt=prompt,
        num_images_per_prompt=k,
        latents=latents,
        generator=_pipeline_generator(generator, k),
        **pipe_kwargs,
    )
