"""Coupled galleries: K images of one prompt whose initial noises are drawn jointly.

    gallery = generate_gallery(pipe, "a red car", "repulsive", num_images=4, seed=0)
    gallery.images        # [4, 3, H, W] float in [0, 1], CPU
    gallery.metadata      # model, family, scheduler, steps, guidance, size, dtype, seed, versions

A gallery's noise depends only on its seed: ``torch.Generator("cpu").manual_seed(seed)`` draws the
coupling's K noises (the same on every machine), so one seed gives paired galleries across
couplings. The same generator then goes to the pipeline (stochastic schedulers, VAE sampling).
Each gallery is one pipeline call, so regenerating one gallery alone reproduces it exactly.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from couplednoise import (
    Coupling,
    check_request,
    count_prompts,
    generate,
    get_coupling,
    latents_for,
)
from couplednoise.pipelines.provenance import pipeline_record, versions


@dataclass
class Gallery:
    """One prompt's K images from one coupling and seed, with what reproduces them."""

    prompt: str
    coupling: str
    seed: int
    images: torch.Tensor  # [K, 3, H, W] float in [0, 1], CPU
    metadata: dict[str, Any] = field(default_factory=dict)
    method: str = "plain"  # the gallery method's spec (couplednoise.pipelines.baselines)


def call_defaults(pipe: Any) -> dict[str, Any]:
    """The pipeline's own defaults for the arguments we record (steps, guidance)."""
    parameters = inspect.signature(pipe.__call__).parameters
    return {
        name: parameters[name].default
        for name in ("num_inference_steps", "guidance_scale")
        if name in parameters and parameters[name].default is not inspect.Parameter.empty
    }


def sampling_settings(
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    negative_prompt: str | None = None,
    height: int | None = None,
    width: int | None = None,
) -> dict[str, Any]:
    """The pipeline keywords that were given (None = the pipeline's default), checked: steps in
    [1, 1000], a finite guidance, positive sizes. The one place these settings are assembled."""
    for name, value, low, high in (
        ("num_inference_steps", num_inference_steps, 1, 1000),
        ("height", height, 1, 1 << 15),
        ("width", width, 1, 1 << 15),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
        ):
            raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    if guidance_scale is not None and (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, (int, float))
        or not math.isfinite(guidance_scale)
    ):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise ValueError(f"negative_prompt must be a string, got {type(negative_prompt).__name__}")
    settings = {
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "negative_prompt": negative_prompt,
        "height": height,
        "width": width,
    }
    return {k: v for k, v in settings.items() if v is not None}


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    return seed


def generate_gallery(
    pipe: Any,
    prompt: str,
    coupling: Coupling | str,
    *,
    num_images: int,
    seed: int,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    negative_prompt: str | None = None,
    height: int | None = None,
    width: int | None = None,
    method: Any = "plain",
    **pipe_kwargs: Any,
) -> Gallery:
    """``num_images`` images of ``prompt`` whose initial noises come jointly from ``coupling``.

    ``method`` (a spec or a GalleryMethod, couplednoise.pipelines.baselines): "plain" samples the
    pipeline from the coupled noise; "cno:..." optimises that noise first (contrastive noise
    optimisation); "cads:..." anneals noise on the condition while sampling. Recorded in the
    metadata with all its settings.
    """
    from couplednoise.pipelines.baselines.settings import PlainSampling, get_gallery_method

    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    coupling = get_coupling(coupling)
    method = get_gallery_method(method)
    seed = check_seed(seed)
    settings = sampling_settings(
        num_inference_steps, guidance_scale, negative_prompt, height, width
    )
    generator = torch.Generator("cpu").manual_seed(seed)
    call = {"num_images_per_prompt": num_images, "generator": generator, "output_type": "pt"}
    if isinstance(method, PlainSampling):
        output = generate(pipe, prompt, coupling, **call, **settings, **pipe_kwargs)
    else:  # the method takes the coupled noise as given latents: latents_for draws it
        from couplednoise.pipelines.baselines.gallery import sample_gallery

        latents = latents_for(
            pipe,
            coupling,
            num_images_per_prompt=num_images,
            height=height,
            width=width,
            generator=generator,
        )
        output = sample_gallery(pipe, prompt, latents, method, **call, **settings, **pipe_kwargs)
    images = output.images.detach().float().cpu()
    effective = {**call_defaults(pipe), **settings}
    metadata = {
        **pipeline_record(pipe),
        "steps": effective.get("num_inference_steps"),
        "guidance": effective.get("guidance_scale"),
        "negative_prompt": negative_prompt,
        "size": [int(images.shape[-2]), int(images.shape[-1])],
        "dtype": str(getattr(pipe, "dtype", None) or images.dtype).removeprefix("torch."),
        "device": str(getattr(pipe, "device", "cpu")),
        "seed": seed,
        "noise_generator": "torch.Generator('cpu').manual_seed(seed)",
        "coupling": coupling.spec,
        "method": method.record(),
        "num_images": num_images,
        "extra_pipeline_kwargs": sorted(pipe_kwargs),
        "versions": versions(),
    }
    return Gallery(prompt, coupling.spec, seed, images, metadata, method.spec)


def generate_galleries(pipe: Any, prompts, couplings, **options: Any) -> list[Gallery]:
    """One gallery per (prompt, seed, coupling), in that nesting order: ``iter_galleries``'s
    arguments, collected into a list."""
    return list(iter_galleries(pipe, prompts, couplings, **options))


def iter_galleries(
    pipe: Any,
    prompts: Sequence[str],
    couplings: Sequence[Coupling | str],
    *,
    num_images: int,
    seeds: Sequence[int],
    methods: Sequence[Any] = ("plain",),
    progress: bool = True,
    **settings: Any,
) -> Iterator[Gallery]:
    """Yield one gallery per (prompt, seed, coupling, method), in that nesting order, with a
    progress bar over galleries; a caller can write each one as it comes (memory stays one
    gallery). ``methods``: gallery method specs (``generate_gallery``), plain sampling by default.

    ``settings`` are generate_gallery's keywords (num_inference_steps, guidance_scale,
    negative_prompt, height, width, other pipeline arguments). Everything is validated before
    the first pipeline call.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    count_prompts(prompts, {})  # non-empty list of strings, else ValueError
    couplings = [get_coupling(c) for c in couplings]
    if not couplings:
        raise ValueError("give at least one coupling")
    seeds = [check_seed(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed")
    from couplednoise.pipelines.baselines.settings import get_gallery_method

    methods = [get_gallery_method(m) for m in methods]
    if not methods:
        raise ValueError("give at least one gallery method (plain: the pipeline as is)")
    named = ("num_inference_steps", "guidance_scale", "negative_prompt", "height", "width")
    sampling_settings(**{k: settings.get(k) for k in named})
    for coupling in couplings:  # size, count, coupling and pipeline, checked before any run
        check_request(pipe, prompts[0], coupling, num_images, **settings)
    if hasattr(pipe, "set_progress_bar_config"):  # ours runs over galleries: no per-step bars
        pipe.set_progress_bar_config(disable=True)
    jobs = [(p, s, c, m) for p in prompts for s in seeds for c in couplings for m in methods]
    for prompt, seed, coupling, method in tqdm(
        jobs, desc="galleries", unit="gallery", disable=not progress
    ):
        yield generate_gallery(
            pipe, prompt, coupling, num_images=num_images, seed=seed, method=method, **settings
        )
