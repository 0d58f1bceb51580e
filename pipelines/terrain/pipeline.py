"""TerrainPipeline: difficulty-conditioned 128 x 128 heightfields from a trained consistency model.

    pipe = load_terrain_pipeline("terrain")
    images = pipe("difficulty 50", num_images_per_prompt=4, output_type="pt").images
    gallery = generate_gallery(pipe, "difficulty 50", "repulsive", num_images=4, seed=0)

The call shape of the diffusers pipelines (``prompt``, ``num_images_per_prompt``, ``latents``,
``num_inference_steps``, ``generator``, ``output_type``) and the attributes
``couplednoise.latents_for`` reads (``unet.config.in_channels`` = 1, ``sample_size`` = 128,
``vae_scale_factor`` = 1), so coupled latents enter exactly as for diffusers: unit-variance noise
z [B, 1, 128, 128], which the pipeline scales to the network's input 80 z at sigma 80.

The prompt is the difficulty (``prompts.parse_difficulty``: "difficulty 50" or "50"). Images are
the heightfield h in [-1, 1] mapped to (h + 1) / 2 in [0, 1] and repeated over 3 channels, so
every image metric applies; output_type "latent" gives h itself [B, 1, 128, 128].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from tqdm.auto import tqdm

from couplednoise import get_coupling, sample_groups, standard_normal
from couplednoise.pipelines.terrain.denoiser import SIZE, TerrainDenoiser
from couplednoise.pipelines.terrain.prompts import difficulty_input, parse_difficulty
from couplednoise.pipelines.terrain.schedule import ConsistencySchedule

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class TerrainPipelineOutput:
    """``images``: list of RGB PIL images, np.ndarray [N, 128, 128, 3] or Tensor [N, 3, 128, 128]
    in [0, 1], or (output_type "latent") the heightfields [N, 1, 128, 128] in [-1, 1]."""

    images: Any


class TerrainUNetStub:
    """Stands in for ``pipe.unet`` where code sizes latents by attribute: ``config.in_channels``
    (1: a heightfield), ``config.sample_size`` (128), ``dtype``, ``device``; it has no weights."""

    def __init__(self, device: torch.device):
        self.config = SimpleNamespace(in_channels=1, sample_size=SIZE)
        self.device = device
        self.dtype = torch.float32

    def parameters(self):
        return iter(())


def to_images(heightfields: torch.Tensor) -> torch.Tensor:
    """Heightfields [B, 1, H, W] in [-1, 1] -> images [B, 3, H, W] in [0, 1] (grey, clamped)."""
    return ((heightfields.clamp(-1, 1) + 1) / 2).repeat(1, 3, 1, 1)


def _draw(shape: tuple[int, ...], generator: GeneratorArg) -> torch.Tensor:
    """N(0, 1) float32 [B, *shape[1:]] on the CPU: one generator draws all rows, a list of B
    generators one row each (as diffusers' randn_tensor)."""
    if isinstance(generator, (list, tuple)):
        return torch.cat([standard_normal((1, *shape[1:]), g).cpu() for g in generator])
    return standard_normal(shape, generator).cpu()


class TerrainPipeline:
    """adaptive-terrain-diffusion's consistency UNet with one-step and multistep sampling.

    ``scheduler`` is the ``ConsistencySchedule`` of noise levels (a 1-step call uses only
    sigma_max = 80). The network always computes in float32; ``dtype`` is float32.
    """

    vae_scale_factor = 1

    def __init__(
        self,
        denoiser: TerrainDenoiser,
        scheduler: ConsistencySchedule | None = None,
        *,
        device: torch.device | str | None = None,
        name_or_path: str = "terrain",
    ):
        self.denoiser = denoiser
        self.scheduler = scheduler if scheduler is not None else ConsistencySchedule()
        self.name_or_path = name_or_path
        self.unet = TerrainUNetStub(torch.device(device or "cpu"))
        self._progress_bar_config: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def set_progress_bar_config(self, **kwargs) -> None:
        """Options for the tqdm bar over sampling steps (e.g. ``disable=True``), as in diffusers."""
        self._progress_bar_config = dict(kwargs)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
        num_inference_steps: int = 1,
        generator: GeneratorArg = None,
        output_type: str = "pil",
        guidance_scale: float = 1.0,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        renoise_coupling: Any = None,
        return_dict: bool = True,
    ):
        """Sample heightfields for ``prompt`` (difficulties); returns TerrainPipelineOutput.

        ``latents``: unit-variance initial noise [len(prompt) * num_images_per_prompt, 1, 128,
        128], prompt-major; drawn from ``generator`` when None. With ``num_inference_steps`` > 1
        each later step re-noises with fresh noise from ``generator`` (one torch.Generator, or
        one per image), independent across images; ``renoise_coupling`` (a coupling or spec,
        e.g. "repulsive") instead draws each prompt's re-noise jointly from that coupling, so
        every image still gets exactly N(0, I) noise at every step.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        labels = self._check_call(
            prompts,
            num_images_per_prompt,
            num_inference_steps,
            output_type,
            guidance_scale,
            negative_prompt,
            height,
            width,
        )
        k = num_images_per_prompt
        batch = len(prompts) * k
        shape = (batch, 1, SIZE, SIZE)
        if generator is not None and not isinstance(generator, torch.Generator):
            generator = list(generator)
            if len(generator) != batch:
                raise ValueError(f"got {len(generator)} generators for {batch} images")
        renoise = get_coupling(renoise_coupling) if renoise_coupling is not None else None
        if latents is None:  # diffusers' draw, so couplednoise.generate's seam can couple it
            latents = randn_tensor(shape, generator=generator, device=torch.device("cpu"))
        elif tuple(latents.shape) != shape:
            raise ValueError(
                f"latents have shape {tuple(latents.shape)}, expected {shape} ({len(prompts)} "
                f"prompt(s) x {k} images, 1 x {SIZE} x {SIZE} heightfields)"
            )
        difficulty = np.repeat(np.asarray(labels, dtype=np.float32), k)
        sigmas = self.scheduler.sigmas(num_inference_steps)
        x = latents.detach().float().cpu().numpy() * np.float32(sigmas[0])
        for step, sigma in enumerate(tqdm(sigmas, **self._progress_bar_config)):
            if step > 0:
                noise = self._renoise(renoise, shape, len(prompts), k, generator)
                x = x + np.float32(self.scheduler.renoise_scale(sigma)) * noise.numpy()
            x = self.denoiser(x, sigma, difficulty)
        heightfields = torch.from_numpy(x).clamp_(-1, 1)
        images = self._postprocess(heightfields, output_type)
        return TerrainPipelineOutput(images=images) if return_dict else (images,)

    @staticmethod
    def _renoise(renoise, shape, num_prompts: int, k: int, generator) -> torch.Tensor:
        """Fresh unit noise [B, 1, 128, 128]: independent rows, or each prompt's K rows jointly
        from ``renoise`` (one generator, or the first generator of each prompt's K)."""
        if renoise is None:
            return _draw(shape, generator)
        per_prompt = generator[::k] if isinstance(generator, list) else generator
        return sample_groups(renoise, num_prompts, k, shape[1:], generator=per_prompt).cpu()

    @staticmethod
    def _postprocess(heightfields: torch.Tensor, output_type: str):
        if output_type == "latent":
            return heightfields
        images = to_images(heightfields)
        if output_type == "pt":
            return images
        array = images.permute(0, 2, 3, 1).numpy()
        if output_type == "np":
            return array
        return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]

    def _check_call(
        self,
        prompts,
        num_images,
        steps,
        output_type,
        guidance_scale,
        negative_prompt,
        height,
        width,
    ) -> list[float]:
        """Validate a call before any work; returns the network's difficulty input per prompt."""
        if not prompts:
            raise ValueError("prompt must be a string or a non-empty list of strings")
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images_per_prompt must be a positive int, got {num_images!r}")
        self.scheduler.sigmas(steps)  # validates num_inference_steps
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if guidance_scale != 1.0:
            raise ValueError(
                f"guidance_scale={guidance_scale}: the terrain model is conditioned directly on "
                "the difficulty and has no classifier-free guidance; use 1.0"
            )
        negatives = [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
        if negatives is not None and any(n for n in negatives):
            raise ValueError(
                f"negative_prompt={negative_prompt!r}: the terrain model has no negative "
                "conditioning (its only condition is the difficulty); leave it unset"
            )
        for side, name in ((height, "height"), (width, "width")):
            if side is not None and side != SIZE:
                raise ValueError(
                    f"{name}={side}: the terrain model generates {SIZE} x {SIZE} heightfields"
                )
        return [difficulty_input(parse_difficulty(p)) for p in prompts]
