"""Coupled ``latents=`` for diffusers pipelines (SD1.5, SDXL, SD3, FLUX, any standard one).

A diffusers pipeline takes ``latents`` of shape [num_prompts * num_images_per_prompt, C, H/f, W/f],
prompt-major ([A, A, B, B] for 2 prompts x 2 images), and scales them by the scheduler's
``init_noise_sigma`` itself (SD3's flow matching uses them as they are). So we hand over
unit-variance noise: each prompt's gallery drawn jointly with the coupling, prompts independent.

Everything is read from the pipeline object by attribute (no diffusers import):
- channels: ``pipe.unet.config.in_channels`` or ``pipe.transformer.config.in_channels``; when the
  pipeline has a VAE with fewer ``latent_channels`` (inpainting UNets, FLUX's packed input), those.
- scale factor: ``pipe.vae_scale_factor``; default size: ``pipe.default_sample_size`` or the
  denoiser's ``config.sample_size``, times the scale factor, as the pipelines compute it.
- dtype / device: the denoiser's (the pipeline moves latents to its execution device itself).
FLUX-style pipelines (those with ``_pack_latents``) get [B, (h/2)(w/2), 4C] tokens: coupled
[B, C, h, w] noise packed with the pipeline's own ``_pack_latents``, a permutation of entries, so
marginals and the coupling stay exact.

Only the initial noise is coupled: ancestral / SDE schedulers add independent noise at each step.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from couplednoise.base import Coupling, check_count
from couplednoise.grouped import sample_groups
from couplednoise.spec import get_coupling

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def denoiser(pipe: Any) -> torch.nn.Module:
    """The pipeline's denoising network: ``pipe.unet`` or ``pipe.transformer``."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    raise TypeError(
        f"{type(pipe).__name__} has neither .unet nor .transformer; "
        "latents_for supports pipelines with one of them"
    )


def is_packed(pipe: Any) -> bool:
    """Whether the pipeline takes FLUX-style packed latent tokens [B, (h/2)(w/2), 4C]."""
    return callable(getattr(pipe, "_pack_latents", None))


def latent_channels(pipe: Any) -> int:
    """Channels of the noise the pipeline starts from (4 for SD1.5 / SDXL, 16 for SD3 / FLUX)."""
    channels = int(denoiser(pipe).config.in_channels)
    vae_config = getattr(getattr(pipe, "vae", None), "config", None)
    vae_channels = getattr(vae_config, "latent_channels", None)
    if vae_channels is not None and int(vae_channels) < channels:
        return int(vae_channels)  # denoiser input = latents + conditioning (inpaint) or packed
    if is_packed(pipe):
        return channels // 4
    return channels


def scale_factor(pipe: Any) -> int:
    """Pixels per latent pixel (``pipe.vae_scale_factor``; 8 for SD1.5 / SDXL / SD3)."""
    factor = getattr(pipe, "vae_scale_factor", None)
    if factor is None:
        raise TypeError(f"{type(pipe).__name__} has no vae_scale_factor; cannot size its latents")
    return int(factor)


def default_size(pipe: Any) -> tuple[int, int]:
    """(height, width) in pixels the pipeline uses when none is given."""
    size = getattr(pipe, "default_sample_size", None) or denoiser(pipe).config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    f = scale_factor(pipe)
    return int(h) * f, int(w) * f


def size_multiple(pipe: Any) -> int:
    """Height and width must be multiples of this (scale factor x patch size)."""
    patch = 2 if is_packed(pipe) else int(getattr(denoiser(pipe).config, "patch_size", None) or 1)
    return scale_factor(pipe) * patch


def latent_grid(
    pipe: Any, height: int | None = None, width: int | None = None
) -> tuple[int, int, int]:
    """(C, H/f, W/f): the latent image the noise is drawn on, for ``height`` x ``width`` pixels."""
    default_h, default_w = default_size(pipe)
    height = default_h if height is None else height
    width = default_w if width is None else width
    multiple = size_multiple(pipe)
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < multiple:
            raise ValueError(f"{name} must be an int >= {multiple}, got {value!r}")
        if value % multiple:
            raise ValueError(
                f"{name}={value} is not a multiple of {multiple} "
                f"(vae_scale_factor x patch size of {type(pipe).__name__})"
            )
    f = scale_factor(pipe)
    return latent_channels(pipe), height // f, width // f


def latent_shape(pipe: Any, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
    """Per-sample shape of ``latents`` for ``pipe`` at ``height`` x ``width`` pixels.

    [C, H/f, W/f] for standard pipelines, [(H/2f)(W/2f), 4C] for packed (FLUX-style) ones.
    """
    c, h, w = latent_grid(pipe, height, width)
    return ((h // 2) * (w // 2), 4 * c) if is_packed(pipe) else (c, h, w)


def pipeline_device_dtype(pipe: Any) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype the pipeline runs its denoiser."""
    module = denoiser(pipe)
    parameters = getattr(module, "parameters", None)
    parameter = next(parameters(), None) if callable(parameters) else None
    dtype = getattr(module, "dtype", None) or getattr(parameter, "dtype", None)
    # The denoiser's device (cheap), not diffusers' _execution_device, which walks every module
    # (4 ms on a tiny pipeline). Under CPU offload the pipeline moves latents to its execution
    # device itself (prepare_latents: latents.to(device)).
    device = (
        getattr(module, "device", None)
        or getattr(parameter, "device", None)
        or getattr(pipe, "device", None)
    )
    return torch.device(device or "cpu"), dtype or torch.float32


def _check_generator(generator: GeneratorArg, num_prompts: int) -> GeneratorArg:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)) and all(
        isinstance(g, torch.Generator) for g in generator
    ):
        if len(generator) != num_prompts:
            raise ValueError(
                f"got {len(generator)} generators for {num_prompts} prompt(s): pass one "
                "torch.Generator, or a list with one per prompt (each prompt's gallery is drawn "
                "jointly from its own generator)"
            )
        return list(generator)
    raise TypeError(
        f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}"
    )


def latents_for(
    pipe: Any,
    coupling: Coupling | str,
    *,
    num_images_per_prompt: int,
    num_prompts: int = 1,
    height: int | None = None,
    width: int | None = None,
    generator: GeneratorArg = None,
) -> torch.Tensor:
    """Coupled unit-variance latents [num_prompts * num_images_per_prompt, *latent_shape] for ``pipe``.

    Prompt-major: rows [p * K, (p + 1) * K) are prompt p's gallery of K = num_images_per_prompt,
    drawn jointly with ``coupling``; galleries of different prompts are independent. ``generator``
    is one torch.Generator (galleries drawn in order) or a list with one per prompt. Noise is drawn
    in float32 on the generator's device (CPU by default), then moved to the pipeline's device and
    dtype: a seed gives the same latents on every machine. Pass the result as ``pipe(latents=...)``.
    """
    coupling = get_coupling(coupling)
    k = check_count(num_images_per_prompt, "num_images_per_prompt")
    num_prompts = check_count(num_prompts, "num_prompts")
    generator = _check_generator(generator, num_prompts)
    grid = latent_grid(pipe, height, width)
    device, dtype = pipeline_device_dtype(pipe)
    noise = sample_groups(coupling, num_prompts, k, grid, generator=generator)
    if is_packed(pipe):  # a fixed permutation of entries: marginals and coupling stay exact
        noise = pipe._pack_latents(noise, num_prompts * k, *grid)
    return noise.to(device=device, dtype=dtype)


def check_latents(
    pipe: Any,
    latents: torch.Tensor,
    *,
    num_prompts: int,
    num_images_per_prompt: int,
    height: int | None = None,
    width: int | None = None,
) -> None:
    """ValueError unless ``latents`` is [num_prompts * num_images_per_prompt, *latent_shape].

    diffusers does not check this itself: a wrong batch fails deep inside the denoiser.
    """
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    expected = (num_prompts * num_images_per_prompt, *latent_shape(pipe, height, width))
    if tuple(latents.shape) != expected:
        raise ValueError(
            f"latents have shape {tuple(latents.shape)} but {type(pipe).__name__} needs {expected}: "
            f"{num_prompts} prompt(s) x {num_images_per_prompt} image(s) per prompt, "
            f"latent shape {expected[1:]} for {height or default_size(pipe)[0]}x"
            f"{width or default_size(pipe)[1]} pixels"
        )


def count_prompts(prompt: str | Sequence[str] | None, pipe_kwargs: dict[str, Any]) -> int:
    """How many prompts a call has: 1 for a string, len for a list, else prompt_embeds' batch."""
    if isinstance(prompt, str):
        return 1
    if prompt is None:
        embeds = pipe_kwargs.get("prompt_embeds")
        if embeds is None:
            raise ValueError("give a prompt (str or list of str) or prompt_embeds=")
        return int(embeds.shape[0])
    prompts = list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompt must be a string or a non-empty list of strings")
    return len(prompts)


def _pipeline_generator(generator: GeneratorArg, num_images_per_prompt: int) -> GeneratorArg:
    """diffusers wants one generator, or one per image: repeat a per-prompt list K times."""
    if isinstance(generator, list):
        return [g for g in generator for _ in range(num_images_per_prompt)]
    return generator


def generate(
    pipe: Any,
    prompt: str | Sequence[str] | None,
    coupling: Coupling | str | None,
    num_images_per_prompt: int = 4,
    generator: GeneratorArg = None,
    **pipe_kwargs: Any,
):
    """Run ``pipe`` on ``prompt`` with coupled initial noise; returns the pipeline's output.

    ``coupling`` is a Coupling or a spec string ("repulsive", "equicorrelated:rho=0.3"). The request
    is validated before any network runs: prompt count, generator list (one per prompt), height /
    width. Pass ``coupling=None`` with your own ``latents=`` to have their batch and shape checked
    against prompts x images (a clear ValueError instead of a deep RuntimeError). ``generator`` also
    goes to the pipeline (stochastic schedulers, VAE sampling), expanded to one per image if a list.
    """
    if "latents" in pipe_kwargs and coupling is not None:
        raise ValueError("pass either coupling= (latents are drawn from it) or latents=, not both")
    if "latents" not in pipe_kwargs and coupling is None:
        raise ValueError("coupling is None: give a coupling (e.g. 'independent') or latents=")
    if "latents" not in inspect.signature(pipe.__call__).parameters:
        raise TypeError(
            f"{type(pipe).__name__}.__call__ takes no latents=; cannot couple its noise"
        )
    num_prompts = count_prompts(prompt, pipe_kwargs)
    k = check_count(num_images_per_prompt, "num_images_per_prompt")
    generator = _check_generator(generator, num_prompts)
    height, width = pipe_kwargs.get("height"), pipe_kwargs.get("width")
    if coupling is None:
        check_latents(
            pipe,
            pipe_kwargs["latents"],
            num_prompts=num_prompts,
            num_images_per_prompt=k,
            height=height,
            width=width,
        )
    else:
        pipe_kwargs["latents"] = latents_for(
            pipe,
            coupling,
            num_images_per_prompt=k,
            num_prompts=num_prompts,
            height=height,
            width=width,
            generator=generator,
        )
    return pipe(
        prompt=prompt,
        num_images_per_prompt=k,
        generator=_pipeline_generator(generator, k),
        **pipe_kwargs,
    )
