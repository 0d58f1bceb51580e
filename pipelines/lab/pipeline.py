"""LabPipeline: a pixel-space diffusion pipeline whose denoiser is exact, driven by diffusers schedulers.

Same call shape as the Stable Diffusion pipelines (``prompt``, ``num_images_per_prompt``,
``latents``, ``num_inference_steps``, ``guidance_scale``, ``negative_prompt``, ``generator``,
``output_type``, ``callback_on_step_end``), and the attributes ``couplednoise.latents_for`` reads:
latents are [B, 3, size, size] (``unet.config.in_channels`` = 3, ``vae_scale_factor`` = 1). Any of
the schedulers in ``SCHEDULERS`` (or one built from their configs) can be set as ``pipe.scheduler``:
the denoiser reads the noise level of each timestep from the scheduler itself.

The lab has no text embedding: its condition is a prior over the world's scenes, uniform on the
scenes matching the prompt. ``prompt_weights`` [B, N] replaces it per image by any weights over all
N scenes (the closed-form analogue of editing ``prompt_embeds``), and a step callback may return new
``prompt_weights`` for the next step, as diffusers' callbacks return new ``prompt_embeds``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm

from couplednoise.pipelines.call_checks import check_step_callback, negative_prompts
from couplednoise.pipelines.lab.denoiser import local_posterior_mean, model_output, posterior_mean
from couplednoise.pipelines.lab.prompts import parse_prompt
from couplednoise.pipelines.lab.world import SIZES, World

# DDPM's pixel-space schedule (linear betas 1e-4 .. 0.02); "trailing" starts at pure noise.
_DDPM_BETAS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "timestep_spacing": "trailing",
}
SCHEDULERS = {
    "ddim": lambda: DDIMScheduler(**_DDPM_BETAS, clip_sample=False, set_alpha_to_one=True),
    "euler": lambda: EulerDiscreteScheduler(**_DDPM_BETAS),
    "dpm": lambda: DPMSolverMultistepScheduler(**_DDPM_BETAS),
    "flow": lambda: FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0),
}
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class LabPipelineOutput:
    """``images``: list of PIL images, np.ndarray [N, H, W, 3], Tensor [N, 3, H, W] in [0, 1],
    or the final latents in model space [-1, 1] (output_type "latent")."""

    images: Any


def is_flow_matching(scheduler) -> bool:
    """Whether ``scheduler`` integrates a flow-matching (rectified flow) ODE."""
    return "FlowMatch" in type(scheduler).__name__


def noise_level(scheduler, timestep: float) -> tuple[float, float, str]:
    """(alpha, sigma, parameterisation) of x_t = alpha x0 + sigma eps at ``timestep``.

    Flow matching: sigma = t / T, alpha = 1 - sigma, velocity output. DDPM-type schedulers
    (DDIM, Euler, DPM-Solver): the VE sigma sqrt((1 - a) / a) of ``alphas_cumprod``, linearly
    interpolated at fractional t as EulerDiscreteScheduler does, mapped back to VP (alpha, sigma);
    the parameterisation is the scheduler's ``prediction_type``.
    """
    if is_flow_matching(scheduler):
        sigma = float(timestep) / scheduler.config.num_train_timesteps
        return 1.0 - sigma, sigma, "flow"
    cumprod = scheduler.alphas_cumprod.double()
    ve_sigmas = ((1 - cumprod) / cumprod).sqrt().numpy()
    ve = float(np.interp(float(timestep), np.arange(len(ve_sigmas)), ve_sigmas))
    alpha = 1.0 / (1.0 + ve**2) ** 0.5
    return alpha, ve * alpha, scheduler.config.prediction_type


class LabUNetStub:
    """Stands in for ``pipe.unet`` where code sizes latents by attribute: ``config.in_channels``
    (3, pixel space), ``config.sample_size``, ``dtype``, ``device``; it has no weights."""

    def __init__(self, sample_size: int, device: torch.device, dtype: torch.dtype):
        self.config = SimpleNamespace(in_channels=3, sample_size=sample_size)
        self.device = device
        self.dtype = dtype

    def parameters(self):
        return iter(())


class LabPipeline:
    """The closed-form lab model: E[x0 | x_t] under the scenes matching the prompt, exactly.

    ``locality`` = w > 0 swaps in the closed-form local denoiser (``local_posterior_mean``): a
    posterior over the scenes per pixel from its w x w window (w odd), a model of a convolutional
    network's locality rather than the exact posterior; 0 (default) is the exact denoiser.
    """

    vae_scale_factor = 1
    _callback_tensor_inputs = ("latents", "prompt_weights")  # as diffusers pipelines name them

    def __init__(
        self,
        world: World,
        scheduler=None,
        *,
        smoothing: float = 0.02,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        chunk_size: int = 1024,
        locality: int = 0,
        name_or_path: str = "lab",
    ):
        if smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {smoothing}")
        if locality < 0 or (locality > 0 and locality % 2 == 0):
            raise ValueError(
                f"locality must be 0 (exact denoiser) or an odd window in pixels, got {locality}"
            )
        self.world = world
        self.scheduler = scheduler if scheduler is not None else SCHEDULERS["ddim"]()
        self.smoothing = float(smoothing)
        self.chunk_size = chunk_size
        self.locality = int(locality)
        self.name_or_path = name_or_path
        self.unet = LabUNetStub(world.size, torch.device(device or "cpu"), dtype)
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_normalize=True)
        self._progress_bar_config: dict[str, Any] = {}
        self._banks: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._posterior_hooks: OrderedDict[int, Any] = OrderedDict()  # weak-referenceable

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def to(self, device=None, dtype=None) -> LabPipeline:
        """Move the scene banks' computation to ``device`` / ``dtype`` (returns self)."""
        self.unet.device = torch.device(device) if device is not None else self.device
        self.unet.dtype = dtype or self.dtype
        self._banks.clear()
        return self

    def set_progress_bar_config(self, **kwargs) -> None:
        """Options for the tqdm bar over denoising steps (e.g. ``disable=True``), as in diffusers."""
        self._progress_bar_config = dict(kwargs)

    def scenes_for(self, prompt: str) -> torch.Tensor:
        """Indices [M] of the world's scenes matching ``prompt`` (ValueError for unknown words)."""
        return self.world.matching(parse_prompt(prompt))

    def prompt_weights_for(self, prompt: str) -> torch.Tensor:
        """The prompt's own condition as weights [N] over the world's scenes (uniform on its
        matching scenes, 0 elsewhere; float32 on the pipeline's device)."""
        weights = torch.zeros(len(self.world), dtype=torch.float32, device=self.device)
        index = self.scenes_for(prompt).to(self.device)
        weights[index] = 1.0 / len(index)
        return weights

    def register_posterior_hook(self, hook) -> RemovableHandle:
        """Call ``hook(posterior)`` on every posterior mean [b, D] the denoiser computes (one per
        branch: conditional, and unconditional when guided). Returns a handle with ``.remove()``,
        as torch's module hooks do; used to count denoiser evaluations."""
        handle = RemovableHandle(self._posterior_hooks)
        self._posterior_hooks[handle.id] = hook
        return handle

    def _bank(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(scenes [M, D] in model space on device, their squared norms [M]) for ``prompt``."""
        key = tuple(sorted(parse_prompt(prompt).items()))
        if key not in self._banks:
            index = self.world.matching(dict(key))
            scenes = self.world.images[index].flatten(1).to(self.device, self.dtype) * 2 - 1
            self._banks[key] = (scenes, scenes.pow(2).sum(1))
        return self._banks[key]

    def predict_x0(
        self,
        x: torch.Tensor,
        alpha: float,
        sigma: float,
        prompts: Sequence[str],
        negative_prompts: Sequence[str],
        guidance_scale: float,
        prompt_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Guided E[x0 | x_t] for x [B, 3, H, W], B a multiple of len(prompts), prompt-major.

        guidance_scale g mixes u + g (c - u) of the prompt's (c) and the negative prompt's
        posterior means (u; the whole world for ""); g = 1 is the exact prompt posterior.
        ``prompt_weights`` [B, N] (rows >= 0, positive sums): row b's conditional posterior is
        taken under these weights over all the world's scenes instead of the prompt's scenes.
        Differentiable in x.
        """
        rows = x.shape[0] // len(prompts)
        flat = x.flatten(1).to(self.dtype)
        out = torch.empty_like(flat)
        groups: dict[tuple[str, str], list[int]] = {}
        for g, pair in enumerate(zip(prompts, negative_prompts)):
            groups.setdefault(pair, []).extend(range(g * rows, (g + 1) * rows))
        weighted = None
        if prompt_weights is not None:  # one batched call over the whole world for every row
            log_prior = prompt_weights.to(self.device, self.dtype).log()
            weighted = self._posterior(flat, alpha, sigma, "", log_prior=log_prior)
        for (prompt, negative), index in groups.items():  # one batched call per distinct prompt
            part = flat[index]
            cond = (
                self._posterior(part, alpha, sigma, prompt) if weighted is None else weighted[index]
            )
            if guidance_scale != 1.0:
                uncond = self._posterior(part, alpha, sigma, negative)
                cond = uncond + guidance_scale * (cond - uncond)
            out[index] = cond
        return out.reshape(x.shape).to(x.dtype)

    def _posterior(
        self,
        x: torch.Tensor,
        alpha: float,
        sigma: float,
        prompt: str,
        log_prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mean = self._posterior_mean(x, alpha, sigma, prompt, log_prior)
        for hook in list(self._posterior_hooks.values()):
            hook(mean)
        return mean

    def _posterior_mean(
        self,
        x: torch.Tensor,
        alpha: float,
        sigma: float,
        prompt: str,
        log_prior: torch.Tensor | None,
    ) -> torch.Tensor:
        scenes, norms = self._bank(prompt)
        if self.locality:
            shape = (-1, *self.world.images.shape[1:])
            return local_posterior_mean(
                x.view(shape),
                scenes.view(shape),
                alpha,
                sigma,
                window=self.locality,
                smoothing=self.smoothing,
                # Its chunks hold [B, chunk, C, H, W] residuals: a quarter of the exact chunk.
                chunk_size=max(1, self.chunk_size // 4),
            ).flatten(1)
        return posterior_mean(
            x,
            scenes,
            alpha,
            sigma,
            smoothing=self.smoothing,
            scene_norms=norms,
            log_prior=log_prior,
            chunk_size=self.chunk_size,
        )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = "",
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
        num_inference_steps: int = 20,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        guidance_scale: float = 1.0,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        return_dict: bool = True,
        prompt_weights: torch.Tensor | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ):
        """Sample images for ``prompt``; returns LabPipelineOutput (``.images``), or a tuple.

        ``prompt_weights`` [B, N]: the condition of each image as weights over the world's N
        scenes (see ``predict_x0``); None is each prompt's own scene set. After step i,
        ``callback_on_step_end(pipe, i, t, {name: value for the names in
        callback_on_step_end_tensor_inputs})`` may return new "latents" and "prompt_weights"
        (None restores the prompts' own condition), as diffusers' step callbacks do.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = self._check_call(
            prompts,
            negative_prompt,
            num_images_per_prompt,
            num_inference_steps,
            output_type,
            height,
            width,
        )
        batch = len(prompts) * num_images_per_prompt
        check_step_callback(
            callback_on_step_end, callback_on_step_end_tensor_inputs, self._callback_tensor_inputs
        )
        prompt_weights = self._check_prompt_weights(prompt_weights, batch)
        shape = (batch, 3, self.world.size, self.world.size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(
                f"latents have shape {tuple(latents.shape)}, expected {shape} "
                f"({len(prompts)} prompt(s) x {num_images_per_prompt} images, 3 x "
                f"{self.world.size} x {self.world.size} pixels)"
            )
        latents = latents.to(self.device, self.dtype)
        latents = latents * getattr(self.scheduler, "init_noise_sigma", 1.0)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        step_generator = generator if isinstance(generator, torch.Generator) else None
        timesteps = self.scheduler.timesteps
        for i, t in enumerate(tqdm(timesteps, **self._progress_bar_config)):
            x = self._scale_model_input(latents, t)
            alpha, sigma, parameterisation = noise_level(self.scheduler, float(t))
            x0 = self.predict_x0(
                x, alpha, sigma, prompts, negatives, guidance_scale, prompt_weights=prompt_weights
            )
            output = model_output(x0, x, alpha, sigma, parameterisation)
            latents = self.scheduler.step(output, t, latents, generator=step_generator).prev_sample
            if callback_on_step_end is not None:
                state = {"latents": latents, "prompt_weights": prompt_weights}
                outputs = callback_on_step_end(
                    self, i, t, {k: state[k] for k in callback_on_step_end_tensor_inputs}
                )
                latents = outputs.pop("latents", latents)
                if "prompt_weights" in outputs:
                    prompt_weights = self._check_prompt_weights(
                        outputs.pop("prompt_weights"), batch
                    )
        images = (
            latents
            if output_type == "latent"
            else self.image_processor.postprocess(latents.float().cpu(), output_type=output_type)
        )
        return LabPipelineOutput(images=images) if return_dict else (images,)

    def _scale_model_input(self, latents: torch.Tensor, t) -> torch.Tensor:
        # Flow-matching schedulers have no scale_model_input: their input is x_t as is.
        scale = getattr(self.scheduler, "scale_model_input", None)
        return latents if scale is None else scale(latents, t)

    def check_request(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = 20,
    ) -> tuple[list[str], list[str]]:
        """Validate a request as ``__call__`` does, before any work: (prompts, negative prompts)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = self._check_call(
            prompts, negative_prompt, num_images_per_prompt, num_inference_steps, "pt", None, None
        )
        return prompts, negatives

    def _check_prompt_weights(self, weights, batch: int) -> torch.Tensor | None:
        """None, or the weights [batch, N] as float on the pipeline's device, rows normalised."""
        if weights is None:
            return None
        if self.locality:
            raise ValueError(
                "prompt_weights need the exact denoiser (locality=0); the local denoiser has "
                "one posterior per pixel window, not one prior over scenes"
            )
        shape = (batch, len(self.world))
        if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != shape:
            got = list(weights.shape) if isinstance(weights, torch.Tensor) else type(weights)
            raise ValueError(
                f"prompt_weights must be a tensor {list(shape)} (images x scenes), got {got}"
            )
        weights = weights.to(self.device, self.dtype)
        total = weights.sum(1, keepdim=True)
        if not torch.isfinite(weights).all() or (weights < 0).any() or (total <= 0).any():
            raise ValueError("prompt_weights must be finite and >= 0 with a positive sum per row")
        return weights / total

    def _check_call(
        self, prompts, negative_prompt, num_images, steps, output_type, height, width
    ) -> list[str]:
        """Validate a call before any work; returns the negative prompt per prompt."""
        if not prompts:
            raise ValueError("prompt must be a string or a non-empty list of strings")
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images_per_prompt must be a positive int, got {num_images!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {steps!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        for side, name in ((height, "height"), (width, "width")):
            if side is not None and side != self.world.size:
                hint = (
                    f"load 'lab:size={side}' for that size"
                    if side in SIZES
                    else f"lab worlds come in {' and '.join(map(str, SIZES))} pixels only"
                )
                raise ValueError(
                    f"{name}={side}: this lab world renders {self.world.size} x "
                    f"{self.world.size} scenes; {hint}"
                )
        negatives = negative_prompts(negative_prompt, len(prompts))
        for text in (*prompts, *negatives):
            if len(self.world.matching(parse_prompt(text))) == 0:
                raise ValueError(f"no lab scene matches {text!r}")
        return negatives
