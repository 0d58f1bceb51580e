"""Contrastive noise optimisation (CNO; Kim, Um & Ye, ICLR 2026) over a pipeline's initial latents.

    latents = couplednoise.latents_for(pipe, "repulsive", num_images_per_prompt=4, generator=g)
    result = cno_latents(pipe, "a red car", latents, num_images_per_prompt=4, guidance_scale=6.0)
    images = pipe("a red car", num_images_per_prompt=4, latents=result.latents, guidance_scale=6.0)

Any coupling's noise can be the initialisation. The loss (released code, github.com/Jecstar66/CNO,
latent_diffusion_cno.py ``iopt_diverse``): x0_i = the guided Tweedie prediction of image i at the
first sampling step (``first_step``), pooled to pool x pool locations and L2-normalised over
channels per location, v_i^p; r_i^p the same for the unoptimised noise (computed once, no grad);

    loss = mean_{i, p} -log [ e^{<r_i, v_i>/(gamma tau)} /
                              (e^{<r_i, v_i>/(gamma tau)} + sum_{j != i} e^{<v_i, v_j>/tau}) ]

over the K images of one prompt (the other images are the negatives). Adam (lr 0.01) takes
``iterations`` (3) steps on the noise, each one forward + backward through the guided denoiser;
the noise is not renormalised afterwards. Each iteration's graph is freed by its backward pass.

Where this differs from the released code (our choices, see docs/baselines.md):
- the noise level is the pipeline's own scheduler at its first timestep (the released SD1.5 code
  indexes alphas_cumprod one step off, alpha-bar of t - 1 for timestep t);
- -log softmax without the released 1e-8 in the denominator (equal up to ~1e-8);
- several galleries optimised at once sum their losses (each gallery's gradient is then exactly
  the one it gets alone, so Adam's updates match optimising it alone);
- optimisation in float32 whatever the pipeline's dtype (the released code ran under fp16
  autocast); SD3 and the lab are ours (the release has SD1.5 and SDXL).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from couplednoise.pipelines.baselines.first_step import denoising_network, first_step
from couplednoise.pipelines.baselines.settings import CNOSettings
from couplednoise.pipelines.lab.pipeline import LabPipeline


@dataclass
class CNOResult:
    """The optimised latents (input's shape, dtype and device) and the loss before each step."""

    latents: torch.Tensor
    losses: list[float] = field(default_factory=list)
    settings: CNOSettings = field(default_factory=CNOSettings)


def pooled_directions(x0: torch.Tensor, pool: int) -> torch.Tensor:
    """x0 [B, C, h, w] -> unit channel vectors per pooled location [B, C, pool * pool] (float32).

    Adaptive average pooling as the release (a latent grid smaller than pool x pool is repeated).
    """
    pooled = F.adaptive_avg_pool2d(x0.float(), (pool, pool)).flatten(2)
    return F.normalize(pooled, dim=1)


def cno_loss(
    x0: torch.Tensor,
    reference: torch.Tensor,
    *,
    gallery_size: int,
    tau: float = 0.1,
    gamma: float = 1.0,
    pool: int = 16,
) -> torch.Tensor:
    """CNO's InfoNCE, summed over galleries (each the mean over its images and locations).

    x0, reference [G * K, C, h, w]: predictions from the current and the unoptimised noise,
    prompt-major galleries of K = ``gallery_size``. Returns a scalar (grad flows through x0).
    """
    if x0.shape != reference.shape or x0.ndim != 4:
        raise ValueError(
            f"x0 and reference must both be [B, C, h, w], got {list(x0.shape)} and "
            f"{list(reference.shape)}"
        )
    if gallery_size < 2 or x0.shape[0] % gallery_size:
        raise ValueError(
            f"batch {x0.shape[0]} is not a multiple of gallery_size {gallery_size} >= 2"
        )
    k = gallery_size
    v = pooled_directions(x0, pool)
    r = pooled_directions(reference, pool)
    groups, channels, locations = x0.shape[0] // k, v.shape[1], v.shape[2]
    v = v.view(groups, k, channels, locations)
    r = r.view(groups, k, channels, locations)
    negatives = torch.einsum("gicp,gjcp->gpij", v, v) / tau  # [G, P, K, K]
    positives = (r * v).sum(2).transpose(1, 2) / (gamma * tau)  # [G, P, K]
    eye = torch.eye(k, dtype=torch.bool, device=v.device)
    logits = negatives.masked_fill(eye, 0.0) + torch.diag_embed(positives)
    loss = -torch.log_softmax(logits, dim=-1).diagonal(dim1=-2, dim2=-1)  # [G, P, K]
    return loss.mean(dim=(1, 2)).sum()


@contextlib.contextmanager
def differentiable_denoiser(module: torch.nn.Module | None, checkpointing: bool) -> Iterator[None]:
    """Freeze the denoiser's weights (no weight gradients are computed or stored) and optionally
    turn on diffusers' gradient checkpointing; both restored afterwards."""
    if module is None:
        if checkpointing:
            raise ValueError("gradient_checkpointing needs a network denoiser; the lab has none")
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    was_checkpointing = bool(getattr(module, "is_gradient_checkpointing", False))
    if checkpointing and not getattr(module, "_supports_gradient_checkpointing", False):
        raise ValueError(f"{type(module).__name__} does not support gradient checkpointing")
    try:
        for p in module.parameters():
            p.requires_grad_(False)
        if checkpointing and not was_checkpointing:
            module.enable_gradient_checkpointing()
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
        if checkpointing and not was_checkpointing:
            module.disable_gradient_checkpointing()


def count_prompts(prompt: str | Sequence[str]) -> int:
    """1 for a string, len for a non-empty list of strings (ValueError otherwise)."""
    if isinstance(prompt, str):
        return 1
    prompts = list(prompt) if isinstance(prompt, (list, tuple)) else []
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    return len(prompts)


def check_gallery_latents(
    latents: torch.Tensor, num_prompts: int, num_images_per_prompt: int, *, min_images: int = 1
) -> None:
    """ValueError unless latents is a float [num_prompts * K, C, h, w] tensor, K >= min_images."""
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
        raise TypeError(f"latents must be a floating-point tensor, got {type(latents).__name__}")
    k = num_images_per_prompt
    if isinstance(k, bool) or not isinstance(k, int) or k < min_images:
        raise ValueError(f"num_images_per_prompt must be an int >= {min_images}, got {k!r}")
    if latents.ndim != 4 or latents.shape[0] != num_prompts * k:
        raise ValueError(
            f"latents must be [{num_prompts * k}, C, h, w] ({num_prompts} prompt(s) x {k} "
            f"images, a spatial latent grid), got {list(latents.shape)}"
        )
    if not bool(torch.isfinite(latents).all()):
        raise ValueError("latents contain non-finite values")


def cno_latents(
    pipe: Any,
    prompt: str | Sequence[str],
    latents: torch.Tensor,
    settings: CNOSettings | None = None,
    *,
    num_images_per_prompt: int,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    negative_prompt: str | Sequence[str] | None = None,
    **pipe_kwargs: Any,
) -> CNOResult:
    """CNO-optimised initial latents for a run of ``pipe`` with these arguments.

    ``latents`` [num_prompts * K, C, h, w] from any coupling (K = num_images_per_prompt >= 2, the
    images of a prompt are each other's negatives). Pass the run's own steps, guidance, negative
    prompt and pipeline options: the first step is predicted exactly as the run will take it.
    ``settings.iterations = 0`` returns ``latents`` itself, with no network evaluation.
    Cost: 1 guided forward (the reference) + ``iterations`` guided forward + backward passes.
    """
    settings = CNOSettings() if settings is None else settings
    if not isinstance(settings, CNOSettings):
        raise TypeError(f"settings must be CNOSettings, got {type(settings).__name__}")
    check_gallery_latents(latents, count_prompts(prompt), num_images_per_prompt, min_images=2)
    network = None if isinstance(pipe, LabPipeline) else denoising_network(pipe)
    if settings.iterations == 0:
        return CNOResult(latents, [], settings)
    step = first_step(
        pipe,
        prompt,
        latents,
        num_images_per_prompt=num_images_per_prompt,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        negative_prompt=negative_prompt,
        **pipe_kwargs,
    )
    loss_options = dict(
        gallery_size=num_images_per_prompt,
        tau=settings.tau,
        gamma=settings.gamma,
        pool=settings.pool,
    )
    losses = []
    with differentiable_denoiser(network, settings.gradient_checkpointing):
        start = latents.detach().to(step.device, torch.float32)
        with torch.no_grad():
            reference = step.predict(start)
        z = start.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=settings.lr)
        for _ in range(settings.iterations):
            with torch.enable_grad():
                loss = cno_loss(step.predict(z), reference, **loss_options)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
    return CNOResult(z.detach().to(latents.device, latents.dtype), losses, settings)
