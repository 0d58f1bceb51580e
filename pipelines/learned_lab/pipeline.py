"""LearnedLabPipeline: the learned lab as a diffusers pipeline (pixel space, 32 x 32 RGB).

    pipe = load_learned_lab()                                   # committed weights, DDIM
    out = pipe("a red sneaker on brick", num_images_per_prompt=4, generator=g)
    out.images                                                  # PIL images (output_type="pil")

The call shape of Stable Diffusion's pipelines (``prompt``, ``negative_prompt``,
``guidance_scale``, ``num_images_per_prompt``, ``latents``, ``generator``, ``output_type``,
``num_inference_steps``, ``eta``, ``prompt_embeds`` / ``negative_prompt_embeds``,
``callback_on_step_end``), and the attributes ``couplednoise.latents_for`` reads:
``unet`` is the real UNet2DConditionModel (``config.in_channels`` = 3, ``config.sample_size`` =
32) and ``vae_scale_factor`` = 1, so latents are [B, 3, 32, 32]. ``latents=`` are unit
variance and multiplied by ``scheduler.init_noise_sigma`` here, as diffusers does. Any diffusers
scheduler built from ``scheduler_config()`` samples it (the model predicts epsilon on DDPM's
linear schedule); swapping in a ``DDIMInverseScheduler`` runs DDIM inversion (``invert``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from couplednoise.pipelines.call_checks import check_step_callback, negative_prompts
from couplednoise.pipelines.learned_lab.model import PromptEncoder
from couplednoise.pipelines.learned_lab.prompts import prompt_codes
from couplednoise.pipelines.learned_lab.train import scheduler_config
from couplednoise.pipelines.learned_lab.world import SIZE

_SAMPLING = {"timestep_spacing": "trailing"}  # the first step starts from pure noise (t = 999)
SCHEDULERS = {
    "ddim": lambda: DDIMScheduler(
        **scheduler_config(), **_SAMPLING, clip_sample=False, set_alpha_to_one=True
    ),
    "ddpm": lambda: DDPMScheduler(**scheduler_config(), **_SAMPLING, clip_sample=False),
    "euler": lambda: EulerDiscreteScheduler(**scheduler_config(), **_SAMPLING),
    "euler_a": lambda: EulerAncestralDiscreteScheduler(**scheduler_config(), **_SAMPLING),
    "dpm": lambda: DPMSolverMultistepScheduler(**scheduler_config(), **_SAMPLING),
}
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
DEFAULT_GUIDANCE = 5.0  # the quality bar (>= 90% aligned) holds here: docs/learned_lab.md
DEFAULT_STEPS = 25


@dataclass
class LearnedLabPipelineOutput(BaseOutput):
    """``images``: list of PIL images, np.ndarray [N, 32, 32, 3] or Tensor [N, 3, 32, 32] in
    [0, 1], or the final latents in model space [-1, 1] (output_type "latent")."""

    images: Any


class LearnedLabPipeline(DiffusionPipeline):
    """Text-to-image for the learned lab: prompt encoder -> UNet -> any diffusers scheduler."""

    model_cpu_offload_seq = "prompt_encoder->unet"
    # Tensors a step callback may read and replace; under guidance "prompt_embeds" is stacked
    # [negative; prompt] as in diffusers' Stable Diffusion pipelines.
    _callback_tensor_inputs = ("latents", "prompt_embeds")

    def __init__(self, unet: UNet2DConditionModel, prompt_encoder: PromptEncoder, scheduler):
        super().__init__()
        self.register_modules(unet=unet, prompt_encoder=prompt_encoder, scheduler=scheduler)
        self.vae_scale_factor = 1
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_normalize=True)
        self._guidance_scale = DEFAULT_GUIDANCE

    @property
    def guidance_scale(self) -> float:
        """The running (or last) call's guidance scale, as diffusers' pipelines expose it."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    def encode_prompt(self, prompts: list[str], num_images_per_prompt: int) -> torch.Tensor:
        """Prompt tokens [P * n, 4, D], prompt-major, on the UNet's device and dtype."""
        codes = prompt_codes(prompts).to(self.prompt_encoder.device)
        tokens = self.prompt_encoder(codes).to(self.unet.dtype)
        return tokens.repeat_interleave(num_images_per_prompt, dim=0)

    def predict_noise(
        self, x: torch.Tensor, t, tokens: torch.Tensor, negative: torch.Tensor | None, scale: float
    ) -> torch.Tensor:
        """The guided model output for x [B, 3, 32, 32]: u + scale (c - u), or c without ``negative``."""
        if negative is None:
            return self._unet(x, t, tokens)
        both = self._unet(torch.cat([x, x]), t, torch.cat([negative, tokens]))
        uncond, cond = both.chunk(2)
        return uncond + scale * (cond - uncond)

    def _unet(self, x: torch.Tensor, t, tokens: torch.Tensor) -> torch.Tensor:
        return self.unet(
            x.to(self.unet.dtype), t, encoder_hidden_states=tokens, class_labels=tokens.flatten(1)
        ).sample

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = "",
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        negative_prompt: str | list[str] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        height: int | None = None,
        width: int | None = None,
        return_dict: bool = True,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        """Sample images for ``prompt``; returns LearnedLabPipelineOutput (``.images``) or a tuple.

        guidance_scale > 1 runs classifier-free guidance against ``negative_prompt`` ("" = every
        attribute open, the unconditional model); <= 1 evaluates the prompt alone.
        ``prompt_embeds`` [P, 4, D] (``encode_prompt``'s tokens) replace ``prompt`` (pass
        prompt=None), ``negative_prompt_embeds`` [P, 4, D] replace ``negative_prompt``; each row
        is repeated ``num_images_per_prompt`` times. ``callback_on_step_end(pipe, i, t,
        tensors)`` runs after step i with the ``callback_on_step_end_tensor_inputs`` it asks for
        (see ``_callback_tensor_inputs``) and may return replacements for the next step.
        """
        callback_inputs = check_step_callback(
            callback_on_step_end,
            callback_on_step_end_tensor_inputs or ["latents"],
            self._callback_tensor_inputs,
        )
        if prompt_embeds is not None:
            if prompt not in (None, "", []):
                raise ValueError("pass prompt or prompt_embeds, not both")
            prompts = None
            count = self._check_embeds(prompt_embeds, "prompt_embeds")
        else:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
            count = len(prompts)
        if negative_prompt_embeds is not None:
            if negative_prompt is not None:
                raise ValueError("pass negative_prompt or negative_prompt_embeds, not both")
            if self._check_embeds(negative_prompt_embeds, "negative_prompt_embeds") != count:
                raise ValueError(
                    f"negative_prompt_embeds has {negative_prompt_embeds.shape[0]} rows for "
                    f"{count} prompt(s)"
                )
        negatives = self._check_call(
            prompts, negative_prompt, num_images_per_prompt, num_inference_steps, output_type,
            height, width, guidance_scale, count,
        )  # fmt: skip
        self._guidance_scale = float(guidance_scale)
        batch = count * num_images_per_prompt
        shape = (batch, self.unet.config.in_channels, SIZE, SIZE)
        device, dtype = self._execution_device, self.unet.dtype
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(
                f"latents have shape {tuple(latents.shape)}, expected {shape} ({count} "
                f"prompt(s) x {num_images_per_prompt} images, 3 x {SIZE} x {SIZE} pixels)"
            )
        latents = latents.to(device, dtype) * self.scheduler.init_noise_sigma
        tokens, negative = self._condition(
            prompts, negatives, num_images_per_prompt, prompt_embeds, negative_prompt_embeds
        )
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        extra = self.prepare_extra_step_kwargs(generator, eta)
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            latents = self._denoise(latents, t, tokens, negative, guidance_scale, extra)
            if callback_on_step_end is not None:
                tensors = {"latents": latents}
                tensors["prompt_embeds"] = (
                    tokens if negative is None else torch.cat([negative, tokens])
                )
                asked = {name: tensors[name] for name in callback_inputs}
                new = callback_on_step_end(self, i, t, asked) or {}
                latents = new.get("latents", latents)
                if "prompt_embeds" in new:
                    negative, tokens = self._split_embeds(new["prompt_embeds"], tokens, negative)
        return self._output(latents, output_type, return_dict)

    def _condition(
        self,
        prompts: list[str] | None,
        negatives: list[str],
        n: int,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prompt tokens, negative tokens or None without guidance), each [P * n, 4, D]: encoded,
        or the given embeds [P, 4, D] repeated n times."""

        def tokens_of(texts, embeds):
            if embeds is None:
                return self.encode_prompt(texts, n)
            return embeds.to(self._execution_device, self.unet.dtype).repeat_interleave(n, dim=0)

        tokens = tokens_of(prompts, prompt_embeds)
        if not self.do_classifier_free_guidance:
            return tokens, None
        return tokens, tokens_of(negatives, negative_prompt_embeds)

    def _denoise(self, latents, t, tokens, negative, guidance_scale: float, extra: dict):
        """One scheduler step of the guided model from ``latents`` at timestep ``t``."""
        x = self.scheduler.scale_model_input(latents, t)
        prediction = self.predict_noise(x, t, tokens, negative, guidance_scale)
        return self.scheduler.step(prediction, t, latents, **extra).prev_sample

    def _output(self, latents: torch.Tensor, output_type: str, return_dict: bool):
        """The call's result from the final latents [B, 3, 32, 32] in model space [-1, 1]."""
        if output_type == "latent":
            images = latents
        else:
            images = self.image_processor.postprocess(latents.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        return LearnedLabPipelineOutput(images=images) if return_dict else (images,)

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict:
        """``eta`` / ``generator`` for the schedulers whose ``step`` takes them (as diffusers)."""
        import inspect

        params = set(inspect.signature(self.scheduler.step).parameters)
        extra = {}
        if "eta" in params:
            extra["eta"] = eta
        if "generator" in params:
            extra["generator"] = generator
        return extra

    def _check_embeds(self, embeds, name: str) -> int:
        """The number of prompts in ``embeds`` [P, 4, D] (ValueError for any other shape)."""
        expected = (len(self.prompt_encoder.tables), self.prompt_encoder.config.token_dim)
        if (
            not isinstance(embeds, torch.Tensor)
            or embeds.ndim != 3
            or tuple(embeds.shape[1:]) != expected
            or embeds.shape[0] < 1
        ):
            got = list(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(
                f"{name} must be a tensor [P, {expected[0]}, {expected[1]}], got {got}"
            )
        return int(embeds.shape[0])

    @staticmethod
    def _split_embeds(new, tokens, negative):
        """(negative, tokens) from a callback's ``prompt_embeds`` ([negative; prompt] if guided)."""
        rows = tokens.shape[0] * (1 if negative is None else 2)
        if new.shape != (rows, *tokens.shape[1:]):
            raise RuntimeError(
                f"callback returned prompt_embeds {list(new.shape)}, expected "
                f"{[rows, *tokens.shape[1:]]}"
            )
        new = new.to(tokens)
        return (None, new) if negative is None else tuple(new.chunk(2))

    def _check_call(
        self,
        prompts,
        negative_prompt,
        num_images,
        steps,
        output_type,
        height,
        width,
        scale,
        count,
    ) -> list[str]:
        """Validate a call of ``count`` prompts (``prompts`` None: given as embeds) before any
        work; the negative prompt of each prompt ("" where none is given)."""
        if prompts is not None and not prompts:
            raise ValueError("prompt must be a string or a non-empty list of strings")
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images_per_prompt must be a positive int, got {num_images!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {steps!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if not isinstance(scale, (int, float)) or scale != scale or scale < 0:
            raise ValueError(f"guidance_scale must be a number >= 0, got {scale!r}")
        for side, name in ((height, "height"), (width, "width")):
            if side is not None and side != SIZE:
                raise ValueError(f"{name}={side}: the learned lab generates {SIZE} x {SIZE} images")
        negatives = negative_prompts(negative_prompt, count)
        prompt_codes([*(prompts or []), *negatives])  # ValueError / TypeError naming a bad prompt
        return negatives
