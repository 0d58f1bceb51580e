"""SDEdit (img2img) and blended inpainting for the learned lab, as diffusers does them.

    img2img, inpaint = editing_pipelines(pipe)                # same UNet and prompt encoder
    out = img2img("a red bag", image=reference, strength=0.6, generator=g, output_type="pt")
    out = inpaint("", image=reference, mask_image=repaint, generator=g)   # white = repaint

Both reuse ``LearnedLabPipeline``'s prompt encoding and guided ``predict_noise`` (they are
subclasses on the same modules). Img2img is diffusers' ``StableDiffusionImg2ImgPipeline`` recipe
(SDEdit, Meng et al. 2022): the scheduler's timesteps are truncated to the last
``int(steps * strength)`` ones, the reference is noised to the first of them with
``scheduler.add_noise`` and denoised from there. Inpainting is diffusers' path for a base
(non-inpainting) UNet, the "blended" inpainting of RePaint / Blended Diffusion without
resampling: sampling starts from pure noise (strength 1) or the noised reference, and after
every step the known region (mask 0) is replaced by the reference noised to the next timestep
with the same noise draw; after the last step it is the clean reference itself, so the output
equals the reference exactly outside the mask.

Images are float [N, 3, 32, 32] in [0, 1] (N = 1 or the number of prompts) or PIL images;
masks [32, 32], [1, 32, 32] or [N, 1, 32, 32] in [0, 1] (binarised at 0.5, as diffusers' mask
processor does) or a PIL image, white = repaint.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from couplednoise.pipelines.learned_lab.pipeline import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    LearnedLabPipeline,
)
from couplednoise.pipelines.learned_lab.world import SIZE

MASK_THRESHOLD = 0.5


def image_tensor(image, batch: int) -> torch.Tensor:
    """A reference as float [batch, 3, 32, 32] in [0, 1] (one image is repeated); errors name
    what is wrong with the input."""
    if isinstance(image, Image.Image):
        image = [image]
    if isinstance(image, list) and image and all(isinstance(i, Image.Image) for i in image):
        image = torch.stack(
            [torch.from_numpy(np.asarray(i.convert("RGB"), dtype=np.float32) / 255) for i in image]
        ).permute(0, 3, 1, 2)
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"image must be a PIL image, a list of them or a tensor, got {type(image).__name__}"
        )
    image = image.detach().float().cpu()
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or tuple(image.shape[1:]) != (3, SIZE, SIZE):
        raise ValueError(
            f"image must be [N, 3, {SIZE}, {SIZE}] (the learned lab's size), got "
            f"{tuple(image.shape)}; resize the reference to {SIZE} x {SIZE} first"
        )
    if not bool(torch.isfinite(image).all()) or image.min() < 0 or image.max() > 1:
        raise ValueError("image values must be finite and lie in [0, 1]")
    return _batched(image, batch, "image")


def mask_tensor(mask, batch: int) -> torch.Tensor:
    """A repaint mask as float {0, 1} [batch, 1, 32, 32] (1 = repaint, binarised at 0.5)."""
    if isinstance(mask, Image.Image):
        mask = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask_image must be a PIL image or a tensor, got {type(mask).__name__}")
    mask = mask.detach().float().cpu()
    mask = {2: mask[None, None], 3: mask[:, None]}.get(mask.dim(), mask)
    if mask.dim() != 4 or tuple(mask.shape[1:]) != (1, SIZE, SIZE):
        raise ValueError(
            f"mask_image must be [{SIZE}, {SIZE}], [N, {SIZE}, {SIZE}] or [N, 1, {SIZE}, {SIZE}] "
            f"(white = repaint), got {tuple(mask.shape)}"
        )
    if not bool(torch.isfinite(mask).all()) or mask.min() < 0 or mask.max() > 1:
        raise ValueError("mask_image values must be finite and lie in [0, 1]")
    return _batched((mask >= MASK_THRESHOLD).float(), batch, "mask_image")


def _batched(x: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, -1, -1, -1).clone()
    raise ValueError(f"{name} has {x.shape[0]} entries: give 1 or one per prompt ({batch})")


def check_strength(strength, num_inference_steps: int) -> None:
    """strength in (0, 1], and large enough to leave at least one of the steps."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TypeError(f"strength must be a number in (0, 1], got {strength!r}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if int(num_inference_steps * strength) < 1:
        raise ValueError(
            f"strength {strength} x {num_inference_steps} steps leaves no denoising step; use "
            f"strength >= {1 / num_inference_steps:.3g} or more steps"
        )


class _EditingPipeline(LearnedLabPipeline):
    """Shared pieces: the checked call, the reference, the truncated timesteps and their noise."""

    def get_timesteps(self, num_inference_steps: int, strength: float, device):
        """The last ``int(steps * strength)`` timesteps (diffusers' img2img ``get_timesteps``)."""
        init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
        t_start = max(num_inference_steps - init_timestep, 0)
        timesteps = self.scheduler.timesteps[t_start * self.scheduler.order :]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * self.scheduler.order)
        return timesteps

    def _prepare(
        self, prompt, negative_prompt, num_images_per_prompt, num_inference_steps, output_type,
        guidance_scale, strength, height, width,
    ):  # fmt: skip
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = self._check_call(
            prompts, negative_prompt, num_images_per_prompt, num_inference_steps, output_type,
            height, width, guidance_scale, len(prompts),
        )  # fmt: skip
        check_strength(strength, num_inference_steps)
        self._guidance_scale = float(guidance_scale)
        return prompts, negatives

    def _reference(self, image, prompts: list[str], n: int) -> torch.Tensor:
        """The reference(s) as x0 [len(prompts) * n, 3, 32, 32] in model space [-1, 1]."""
        if image is None:
            raise ValueError("image is required: the reference to edit, [N, 3, 32, 32] in [0, 1]")
        reference = image_tensor(image, len(prompts)).repeat_interleave(n, 0)
        return (reference * 2 - 1).to(self._execution_device, self.unet.dtype)

    def _schedule(self, x0, num_inference_steps: int, strength: float, generator):
        """(the timesteps ``strength`` leaves, the noise [like x0] that starts them)."""
        device = self._execution_device
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.get_timesteps(num_inference_steps, strength, device)
        noise = randn_tensor(tuple(x0.shape), generator=generator, device=device, dtype=x0.dtype)
        return timesteps, noise


class LearnedLabImg2ImgPipeline(_EditingPipeline):
    """SDEdit on the learned lab: noise the reference to ``strength``, denoise with the prompt."""

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = "",
        image=None,
        strength: float = 0.8,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        height: int | None = None,
        width: int | None = None,
        return_dict: bool = True,
    ):
        """Images [len(prompt) * num_images_per_prompt] edited from ``image`` (one reference for
        all prompts, or one per prompt, repeated per ``num_images_per_prompt``)."""
        prompts, negatives = self._prepare(
            prompt, negative_prompt, num_images_per_prompt, num_inference_steps, output_type,
            guidance_scale, strength, height, width,
        )  # fmt: skip
        x0 = self._reference(image, prompts, num_images_per_prompt)
        timesteps, noise = self._schedule(x0, num_inference_steps, strength, generator)
        latents = self.scheduler.add_noise(x0, noise, timesteps[:1].repeat(x0.shape[0]))
        tokens, negative = self._condition(prompts, negatives, num_images_per_prompt)
        extra = self.prepare_extra_step_kwargs(generator, eta)
        for t in self.progress_bar(timesteps):
            latents = self._denoise(latents, t, tokens, negative, guidance_scale, extra)
        return self._output(latents, output_type, return_dict)


class LearnedLabInpaintPipeline(_EditingPipeline):
    """Blended inpainting with the base model: repaint where ``mask_image`` is white, keep the
    reference (noised to the current level at every step, clean at the end) elsewhere."""

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = "",
        image=None,
        mask_image=None,
        strength: float = 1.0,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        height: int | None = None,
        width: int | None = None,
        return_dict: bool = True,
    ):
        """Images [len(prompt) * num_images_per_prompt]; strength 1 starts the repainted region
        from pure noise (diffusers' ``is_strength_max``), less from the noised reference."""
        prompts, negatives = self._prepare(
            prompt, negative_prompt, num_images_per_prompt, num_inference_steps, output_type,
            guidance_scale, strength, height, width,
        )  # fmt: skip
        if image is None or mask_image is None:
            raise ValueError("image and mask_image are required (mask: white = repaint)")
        x0 = self._reference(image, prompts, num_images_per_prompt)
        mask = mask_tensor(mask_image, len(prompts)).repeat_interleave(num_images_per_prompt, 0)
        if not mask.flatten(1).any(1).all():
            raise ValueError("mask_image is all black: nothing to repaint (white = repaint)")
        batch = x0.shape[0]
        mask = mask.to(x0)
        timesteps, noise = self._schedule(x0, num_inference_steps, strength, generator)
        if strength == 1.0:
            latents = noise * self.scheduler.init_noise_sigma
        else:
            latents = self.scheduler.add_noise(x0, noise, timesteps[:1].repeat(batch))
        tokens, negative = self._condition(prompts, negatives, num_images_per_prompt)
        extra = self.prepare_extra_step_kwargs(generator, eta)
        for i, t in enumerate(self.progress_bar(timesteps)):
            latents = self._denoise(latents, t, tokens, negative, guidance_scale, extra)
            known = x0
            if i < len(timesteps) - 1:
                known = self.scheduler.add_noise(x0, noise, timesteps[i + 1 : i + 2].repeat(batch))
            latents = (1 - mask) * known + mask * latents
        return self._output(latents, output_type, return_dict)


def editing_pipelines(pipe) -> tuple[LearnedLabImg2ImgPipeline, LearnedLabInpaintPipeline]:
    """(img2img, inpaint) on ``pipe``'s UNet and prompt encoder (shared, not copied), each with
    its own copy of ``pipe``'s scheduler (same config), progress bars off."""
    out = []
    for cls in (LearnedLabImg2ImgPipeline, LearnedLabInpaintPipeline):
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        derived = cls(pipe.unet, pipe.prompt_encoder, scheduler)
        derived.register_to_config(_name_or_path=pipe.name_or_path)
        derived.set_progress_bar_config(disable=True)
        out.append(derived)
    return out[0], out[1]
