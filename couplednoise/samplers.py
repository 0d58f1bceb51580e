"""Coupled initial noise for samplers outside diffusers: k-diffusion and EDM-style loops.

k-diffusion's samplers start from x = noise * sigmas[0]; EDM's loop from latents * t_steps[0]:

    import k_diffusion as K
    sigmas = K.sampling.get_sigmas_karras(20, 0.002, 80.0)
    x = couplednoise.initial_noise("repulsive", (4, 64, 64), num_per_prompt=4, sigma=sigmas[0])
    samples = K.sampling.sample_dpmpp_2m(model, x, sigmas)      # [4, 4, 64, 64]

Only the initial noise is coupled. Ancestral / SDE samplers (``sample_euler_ancestral``,
``sample_dpmpp_sde``, EDM's S_churn) add their own independent step noise (k-diffusion's default
``noise_sampler`` is ``torch.randn_like``), which dilutes the designed dependence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from couplednoise.base import Coupling, GeneratorArg, check_count
from couplednoise.grouped import sample_groups
from couplednoise.spec import get_coupling


def initial_noise(
    coupling: Coupling | str,
    shape: Sequence[int],
    *,
    num_per_prompt: int,
    num_prompts: int = 1,
    sigma: float | torch.Tensor = 1.0,
    generator: GeneratorArg = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``sigma`` x coupled noise [num_prompts * num_per_prompt, *shape]: a sampler's initial state.

    Prompt-major groups of ``num_per_prompt``, each drawn jointly with ``coupling``, groups
    independent; ``generator`` is one torch.Generator or one per prompt. Drawn in float32 on the
    generator's device, scaled by ``sigma`` (a float or a scalar tensor such as k-diffusion's
    ``sigmas[0]``) there, then moved to ``device`` and cast to ``dtype`` (float32 by default;
    EDM's loop runs in float64).
    """
    coupling = get_coupling(coupling)
    k = check_count(num_per_prompt, "num_per_prompt")
    num_prompts = check_count(num_prompts, "num_prompts")
    sigma = _check_sigma(sigma)
    noise = sample_groups(coupling, num_prompts, k, shape, generator=generator)
    return (noise * sigma).to(device=device or noise.device, dtype=dtype or torch.float32)


def _check_sigma(sigma: float | torch.Tensor) -> float:
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() != 1:
            raise ValueError(f"sigma must be a scalar, got a tensor of shape {tuple(sigma.shape)}")
        sigma = sigma.item()
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a float or a scalar tensor, got {type(sigma).__name__}")
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    return float(sigma)
