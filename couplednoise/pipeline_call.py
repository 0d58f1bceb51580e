"""``generate``: one coupled pipeline call, through the seam (``couplednoise.seam``).

    out = couplednoise.generate(pipe, ["a cat", "a dog"], "repulsive", num_images_per_prompt=4,
                                generator=[torch.Generator().manual_seed(s) for s in (0, 1)])

The pipeline runs with diffusers' usual arguments (prompt lists, negative prompts, a generator
per prompt, ``image=`` / ``strength=`` / ``mask_image=`` for image-conditioned pipelines,
``num_frames=`` for video) and its initial noise draw is served from the coupling: one coupled
group of K = ``num_images_per_prompt`` per prompt. K goes to the pipeline as its
``num_images_per_prompt`` or ``num_videos_per_prompt``; pipelines that make one output per prompt
whatever that says (AnimateDiff, CogVideoX, LDM, ...) get each prompt K times instead.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from couplednoise.base import Coupling, GeneratorArg, check_count
from couplednoise.pipeline_latents import check_finite, check_latents
from couplednoise.pipeline_shapes import (
    LatentLayout,
    UnsupportedPipelineError,
    call_parameters,
    function_source,
    latent_layout,
    pipeline_name,
)
from couplednoise.seam import (
    check_prompt_generators,
    coupled,
    initial_draw_functions,
    install_dispatch,
)
from couplednoise.spec import get_coupling

PER_PROMPT_ARGUMENTS = ("num_images_per_prompt", "num_videos_per_prompt")
# A pipeline that overrides its per-prompt count in __call__ ("num_videos_per_prompt = 1" in
# AnimateDiff, CogVideoX, Allegro, ...): read from its source, where diffusers states it.
_FIXED_PER_PROMPT = re.compile(r"^\s*num_(?:images|videos)_per_prompt\s*=\s*1\s*(?:#.*)?$", re.M)
_SIZE_RULES = ("use_resolution_binning", "max_area")


def count_prompts(prompt: str | Sequence[str] | None, pipe_kwargs: dict[str, Any]) -> int:
    """How many prompts a call has: 1 for a string, len for a list, else the embeddings' batch.

    Without a prompt: ``prompt_embeds``' batch, or ``image_embeds``' (Kandinsky 2.2's decoder).
    """
    if isinstance(prompt, str):
        return 1
    if prompt is None:
        for name in ("prompt_embeds", "image_embeds"):
            embeds = pipe_kwargs.get(name)
            if isinstance(embeds, (list, tuple)) and embeds:
                embeds = embeds[0]
            if isinstance(embeds, torch.Tensor) and embeds.dim() >= 1:
                return int(embeds.shape[0])
        raise ValueError(
            "give a prompt (str or list of str), prompt_embeds= or image_embeds=; for a pipeline "
            "without prompts (DDPM, DiT) couple its draw directly: `with couplednoise.coupled("
            "pipe, coupling): pipe(batch_size=K)`"
        )
    prompts = list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompt must be a string or a non-empty list of strings")
    return len(prompts)


def per_prompt_argument(pipe: Any) -> str | None:
    """The argument that makes K outputs per prompt, or None where the pipeline makes one."""
    params = call_parameters(pipe)
    name = next((n for n in PER_PROMPT_ARGUMENTS if n in params), None)
    if name is None or fixes_one_output_per_prompt(type(pipe)):
        return None
    return name


@functools.cache
def fixes_one_output_per_prompt(cls: type) -> bool:
    """Whether ``cls.__call__`` sets its per-prompt count to 1 (False when there is no source:
    the signature is trusted and the seam checks the draw's batch)."""
    source = function_source(cls, "__call__")
    return source is not None and _FIXED_PER_PROMPT.search(source) is not None


def _repeat_each(values: Sequence[Any], k: int) -> list[Any]:
    return [v for v in values for _ in range(k)]


def call_arguments(
    pipe: Any, prompt: Any, k: int, num_prompts: int, pipe_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Keyword arguments for ``pipe`` giving K outputs per prompt, prompt-major."""
    for name in PER_PROMPT_ARGUMENTS:
        if name in pipe_kwargs:
            raise ValueError(
                f"{name} is set by generate's num_images_per_prompt (videos included): "
                f"do not pass {name}= to generate"
            )
    kwargs = dict(pipe_kwargs)
    if prompt is not None:
        kwargs["prompt"] = prompt
    per_prompt = per_prompt_argument(pipe)
    if per_prompt is not None:
        kwargs[per_prompt] = k
        return kwargs
    if k == 1:
        return kwargs
    if prompt is None:
        raise UnsupportedPipelineError(
            f"{pipeline_name(pipe)} makes one output per prompt, so generate repeats each prompt "
            f"K={k} times: pass prompt strings, not embeddings"
        )
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    kwargs["prompt"] = _repeat_each(prompts, k)
    negative = kwargs.get("negative_prompt")
    if isinstance(negative, (list, tuple)):
        if len(negative) != num_prompts:
            raise ValueError(
                f"got {len(negative)} negative prompts for {num_prompts} prompt(s): give one per "
                "prompt, or one string for all"
            )
        kwargs["negative_prompt"] = _repeat_each(negative, k)
    return kwargs


def pipeline_generator(generator: GeneratorArg, num_images_per_prompt: int) -> GeneratorArg:
    """diffusers wants one generator, or one per image: repeat a per-prompt list K times."""
    if isinstance(generator, list):
        return _repeat_each(generator, num_images_per_prompt)
    return generator


def predicted_layout(pipe: Any, pipe_kwargs: dict[str, Any]) -> LatentLayout | None:
    """The latent layout for this call where it can be known before running, else None.

    ValueError for a size the pipeline cannot take (checked before any network runs).
    """
    rules = {name: pipe_kwargs[name] for name in _SIZE_RULES if name in pipe_kwargs}
    try:
        return latent_layout(pipe, pipe_kwargs.get("height"), pipe_kwargs.get("width"), **rules)
    except UnsupportedPipelineError:
        return None


def _refuse_calls_without_initial_draw(pipe: Any, pipe_kwargs: dict[str, Any]) -> None:
    if pipe_kwargs.get("denoising_start") is not None:
        raise UnsupportedPipelineError(
            f"{pipeline_name(pipe)} with denoising_start={pipe_kwargs['denoising_start']} "
            "continues from the latents it is given and draws no initial noise: couple the base "
            "call instead (generate(base, ..., denoising_end=..., output_type='latent')) and pass "
            "its latents to this pipeline as image="
        )
    for name in ("prior_pipe", "decoder_pipe"):
        if getattr(pipe, name, None) is not None:
            raise UnsupportedPipelineError(
                f"{pipeline_name(pipe)} runs a prior and a decoder (two initial draws): run "
                "pipe.prior_pipe yourself, then couple the decoder: generate(pipe.decoder_pipe, "
                "None, coupling, image_embeds=..., negative_image_embeds=...)"
            )


@dataclass(frozen=True)
class PlannedCall:
    """A checked generate request: the pipeline's keyword arguments and how its draw is coupled."""

    kwargs: dict[str, Any]
    coupling: Coupling | None
    num_prompts: int
    num_per_prompt: int
    generator: GeneratorArg


def plan_call(
    pipe: Any,
    prompt: str | Sequence[str] | None,
    coupling: Coupling | str | None,
    num_images_per_prompt: int = 4,
    generator: GeneratorArg = None,
    **pipe_kwargs: Any,
) -> PlannedCall:
    """Everything ``generate`` checks before any network runs, and the call it will make."""
    if "latents" in pipe_kwargs and coupling is not None:
        raise ValueError("pass either coupling= (latents are drawn from it) or latents=, not both")
    if "latents" not in pipe_kwargs and coupling is None:
        raise ValueError("coupling is None: give a coupling (e.g. 'independent') or latents=")
    num_prompts = count_prompts(prompt, pipe_kwargs)
    k = check_count(num_images_per_prompt, "num_images_per_prompt")
    generator = check_prompt_generators(generator, num_prompts)
    kwargs = call_arguments(pipe, prompt, k, num_prompts, pipe_kwargs)
    kwargs["generator"] = pipeline_generator(generator, k)
    layout = predicted_layout(pipe, pipe_kwargs)  # ValueError for a size it cannot take
    if coupling is None:
        latents = check_finite(pipe_kwargs["latents"])
        if layout is not None:
            rules = {n: pipe_kwargs[n] for n in _SIZE_RULES if n in pipe_kwargs}
            check_latents(
                pipe,
                latents,
                num_prompts=num_prompts,
                num_images_per_prompt=k,
                height=pipe_kwargs.get("height"),
                width=pipe_kwargs.get("width"),
                **rules,
            )
        return PlannedCall(kwargs, None, num_prompts, k, generator)
    coupling = get_coupling(coupling)
    _refuse_calls_without_initial_draw(pipe, pipe_kwargs)
    install_dispatch(pipe)  # refuses pipelines that draw without randn_tensor
    initial_draw_functions(pipe)  # refuses pipelines whose draw functions draw nothing
    if layout is not None:
        coupling._check(k, layout.grid)  # e.g. rho >= -1/(K-1), orthogonal K <= d, mask shape
    return PlannedCall(kwargs, coupling, num_prompts, k, generator)


def check_request(
    pipe: Any,
    prompt: str | Sequence[str] | None,
    coupling: Coupling | str | None,
    num_images_per_prompt: int = 4,
    generator: GeneratorArg = None,
    **pipe_kwargs: Any,
) -> None:
    """Raise what ``generate`` would raise for this request before running anything (cheap)."""
    plan_call(pipe, prompt, coupling, num_images_per_prompt, generator, **pipe_kwargs)


def generate(
    pipe: Any,
    prompt: str | Sequence[str] | None,
    coupling: Coupling | str | None,
    num_images_per_prompt: int = 4,
    generator: GeneratorArg = None,
    **pipe_kwargs: Any,
):
    """Run ``pipe`` on ``prompt`` with its initial noise drawn from ``coupling``; its output.

    ``coupling`` is a Coupling or a spec string ("repulsive", "equicorrelated:rho=0.3"). The
    pipeline's own initial draw is coupled (one group of K = num_images_per_prompt per prompt, at
    exactly the shape it asks for); for image-conditioned pipelines that is the noise added to the
    image latents. The request is validated before any network runs (``check_request``): prompt
    count, generator (one, or a list with one per prompt), whether the pipeline can be coupled,
    and where the latent shape can be known beforehand, the size and the coupling at that shape.
    ``generator`` also goes to the pipeline (stochastic schedulers, VAE sampling), expanded to one
    per image if a list. Pass ``coupling=None`` with your own ``latents=`` to have them checked
    (finite; batch and shape where they can be known).
    """
    plan = plan_call(pipe, prompt, coupling, num_images_per_prompt, generator, **pipe_kwargs)
    if plan.coupling is None:
        return pipe(**plan.kwargs)
    with coupled(
        pipe,
        plan.coupling,
        num_prompts=plan.num_prompts,
        num_per_prompt=plan.num_per_prompt,
        generator=plan.generator,
    ):
        return pipe(**plan.kwargs)
