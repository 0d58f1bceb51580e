"""Coupled ``latents=`` for diffusers pipelines: the explicit ``pipe(latents=...)`` style.

A diffusers pipeline takes ``latents`` of shape [num_prompts * num_images_per_prompt, *shape],
prompt-major ([A, A, B, B] for 2 prompts x 2 images), and scales them by the scheduler's
``init_noise_sigma`` itself (flow matching uses them as they are). So we hand over unit-variance
noise: each prompt's gallery drawn jointly with the coupling, prompts independent. The shape is
the pipeline's own (``couplednoise.pipeline_shapes``: default size, resolution binning, max_area);
pipelines whose shape cannot be known before they run (image-conditioned, video, ...) are refused
with an error that points to ``generate`` / ``coupled``, which couple the pipeline's own draw.

FLUX-style pipelines (those with ``_pack_latents``) get [B, (h/2)(w/2), 4C] tokens: coupled
[B, C, h, w] noise packed with the pipeline's own ``_pack_latents``, a permutation of entries, so
marginals and the coupling stay exact.
"""

from __future__ import annotations

from typing import Any

import torch

from couplednoise.base import Coupling, GeneratorArg, check_count
from couplednoise.grouped import sample_groups
from couplednoise.pipeline_shapes import (
    default_size,
    latent_layout,
    pipeline_device_dtype,
    pipeline_name,
)
from couplednoise.seam import check_prompt_generators
from couplednoise.spec import get_coupling


def latent_grid(
    pipe: Any, height: int | None = None, width: int | None = None, **size_rules: Any
) -> tuple[int, int, int]:
    """(C, h, w): the latent image the noise is drawn on, for a ``height`` x ``width`` request.

    ``size_rules``: the pipeline arguments that change the size (``use_resolution_binning``,
    ``max_area``; the pipeline's defaults when not given).
    """
    return latent_layout(pipe, height, width, **size_rules).grid


def latent_shape(
    pipe: Any, height: int | None = None, width: int | None = None, **size_rules: Any
) -> tuple[int, ...]:
    """Per-sample shape of ``latents`` for ``pipe`` at a ``height`` x ``width`` request.

    [C, h, w] for standard pipelines, [(h/2)(w/2), 4C] for packed (FLUX-style) ones, after the
    pipeline's own size rules (binning, max_area).
    """
    return latent_layout(pipe, height, width, **size_rules).shape


def latents_for(
    pipe: Any,
    coupling: Coupling | str,
    *,
    num_images_per_prompt: int,
    num_prompts: int = 1,
    height: int | None = None,
    width: int | None = None,
    generator: GeneratorArg = None,
    use_resolution_binning: bool | None = None,
    max_area: int | None = None,
) -> torch.Tensor:
    """Coupled unit-variance latents [num_prompts * num_images_per_prompt, *latent_shape] for ``pipe``.

    Prompt-major: rows [p * K, (p + 1) * K) are prompt p's gallery of K = num_images_per_prompt,
    drawn jointly with ``coupling``; galleries of different prompts are independent. ``generator``
    is one torch.Generator (galleries drawn in order) or a list with one per prompt. Noise is drawn
    in float32 on the generator's device (CPU by default), then moved to the pipeline's device and
    dtype: a seed gives the same latents on every machine. Pass the result as ``pipe(latents=...)``
    together with the same height / width / use_resolution_binning / max_area (None: the
    pipeline's defaults, which are what the shape follows).
    """
    coupling = get_coupling(coupling)
    k = check_count(num_images_per_prompt, "num_images_per_prompt")
    num_prompts = check_count(num_prompts, "num_prompts")
    generator = check_prompt_generators(generator, num_prompts)
    layout = latent_layout(pipe, height, width, **_size_rules(use_resolution_binning, max_area))
    device, dtype = pipeline_device_dtype(pipe)
    noise = sample_groups(coupling, num_prompts, k, layout.grid, generator=generator)
    if layout.packed:  # a fixed permutation of entries: marginals and coupling stay exact
        noise = pipe._pack_latents(noise, num_prompts * k, *layout.grid)
    return noise.to(device=device, dtype=dtype)


def check_finite(latents: Any, name: str = "latents") -> torch.Tensor:
    """TypeError unless a tensor; ValueError if it holds NaN or infinite values."""
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(latents).__name__}")
    if latents.is_floating_point() or latents.is_complex():
        if not torch.isfinite(latents).all():
            bad = int((~torch.isfinite(latents)).sum())
            raise ValueError(
                f"{name} hold {bad} NaN or infinite value(s) of {latents.numel()}: a diffusion "
                "pipeline would return NaN images"
            )
    else:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {latents.dtype}")
    return latents


def check_latents(
    pipe: Any,
    latents: torch.Tensor,
    *,
    num_prompts: int,
    num_images_per_prompt: int,
    height: int | None = None,
    width: int | None = None,
    use_resolution_binning: bool | None = None,
    max_area: int | None = None,
) -> None:
    """ValueError unless ``latents`` is a finite [num_prompts * num_images_per_prompt, *shape].

    diffusers does not check this itself: a wrong batch fails deep inside the denoiser, and
    NaN latents give NaN images.
    """
    check_finite(latents)
    rules = _size_rules(use_resolution_binning, max_area)
    layout = latent_layout(pipe, height, width, **rules)
    expected = (num_prompts * num_images_per_prompt, *layout.shape)
    if tuple(latents.shape) != expected:
        requested = (height or default_size(pipe)[0], width or default_size(pipe)[1])
        size = f"{requested[0]}x{requested[1]} pixels"
        if layout.size != requested:
            size += f" (rendered at {layout.size[0]}x{layout.size[1]})"
        raise ValueError(
            f"latents have shape {tuple(latents.shape)} but {pipeline_name(pipe)} needs {expected}: "
            f"{num_prompts} prompt(s) x {num_images_per_prompt} image(s) per prompt, "
            f"latent shape {expected[1:]} for {size}"
        )


def _size_rules(use_resolution_binning: bool | None, max_area: int | None) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    if use_resolution_binning is not None:
        rules["use_resolution_binning"] = use_resolution_binning
    if max_area is not None:
        rules["max_area"] = max_area
    return rules
