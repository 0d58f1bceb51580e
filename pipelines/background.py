"""Fixed-object background generation: keep a reference object, vary the background.

    task = background_task(pipe, "ref.png", "mask.png")          # resized to the model's grid
    noise = invert(pipe, task.image, num_inference_steps=50)      # pipelines/inversion.py
    gallery = subspace_gallery(pipe, task, noise, "a beach", share=0.9, num_images=8, seed=0)
    galleries = run_background(pipe, task, ["a beach"], shares=[0.5, 0.9, 1.0], ...)

Our method: the reference is inverted to its initial noise x_T and the gallery is drawn with
``Subspace(mask, share, shared=x_T)``: inside the object's latent cells each noise is
sqrt(share) x_T + sqrt(1 - share) E_i, outside it is independent. x_T is not exactly N(0, I)
(an inverted latent carries the image), so unlike the core coupling the marginals are only
approximately standard there. Sampling uses the deterministic sampler the inversion reverses
(``matching_sampler``), so share = 1 starts every image from the reference's own noise in the mask.

Baselines, with the same sampler, steps, guidance and seeds: inversion alone (the reconstruction
from x_T, one image whatever the seed), SDEdit (the family's Img2Img pipeline on the same modules at
given strengths) and inpainting with the base weights (the family's Inpaint pipeline, mask inverted
so the background is repainted, strength 1); the learned lab's are in
``pipelines/learned_lab/editing.py``. Paste-back (the reference's object pixels over each
image) is a separate, optional view: ``paste_back``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from couplednoise import Subspace, check_binary_mask, default_size, latent_grid, latents_for
from couplednoise.pipelines.images import from_pil, open_image
from couplednoise.pipelines.inversion import derive_pipeline, invert, matching_sampler
from couplednoise.pipelines.loading import detect_family

METHODS = ("subspace", "inversion", "sdedit", "inpaint")
# families with Img2Img / Inpaint pipelines (diffusers' for SD, pipelines/learned_lab/editing.py)
BASELINE_FAMILIES = ("sd15", "sdxl", "sd3", "learned-lab")
ASPECT_TOLERANCE = 0.02  # relative difference of height / width between image and mask
ALPHA_THRESHOLD = 128  # an RGBA pixel belongs to the object when its alpha is >= this

ImageSource = str | Path | Image.Image | torch.Tensor | np.ndarray


@dataclass(frozen=True, eq=False)
class BackgroundTask:
    """A reference and its object mask at the model's size.

    image: float [1, 3, H, W] in [0, 1]; mask: float {0, 1} [H, W], 1 = object (kept).
    dilation: pixels by which the coupling's shared region extends the object mask (metrics,
    paste-back and inpainting use the object mask itself).
    """

    image: torch.Tensor
    mask: torch.Tensor
    dilation: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.mask.shape)

    @property
    def shared_mask(self) -> torch.Tensor:
        """{0, 1} [H, W]: the object mask dilated by ``dilation`` pixels, the coupling's region."""
        return dilate_mask(self.mask, self.dilation)


@dataclass
class BackgroundGallery:
    """K images of one method (and its setting) for one background prompt and seed."""

    method: str
    prompt: str
    seed: int
    images: torch.Tensor  # [K, 3, H, W] float in [0, 1], CPU
    setting: dict[str, float] = field(default_factory=dict)  # {"share": 0.9}, {"strength": 0.6}

    @property
    def label(self) -> str:
        values = ",".join(f"{k}={v:g}" for k, v in self.setting.items())
        return f"{self.method}:{values}" if values else self.method


# --- inputs -------------------------------------------------------------------------------------


def load_image(source: ImageSource) -> torch.Tensor:
    """A reference image as float [1, 3, h, w] in [0, 1] (path, PIL, [3, h, w] / [1, 3, h, w])."""
    if isinstance(source, (str, Path)):
        source = open_image(source, "image")
    if isinstance(source, Image.Image):
        return from_pil(source.convert("RGB"))[None]
    image = torch.as_tensor(source).detach().float().cpu()
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(
            f"image tensor must be [3, H, W] or [1, 3, H, W], got {tuple(image.shape)}"
        )
    if image.min() < 0 or image.max() > 1:
        raise ValueError("image tensor values must lie in [0, 1]")
    return image


def load_mask(source: ImageSource) -> torch.Tensor:
    """An object mask as float {0, 1} [h, w] (1 = object).

    Accepted: a binary PNG (mode "1", or grayscale / equal-channel RGB with only the values 0 and
    255), an image with an alpha channel (object where alpha >= 128), or a binary tensor / array
    [h, w]. Anything else (soft masks, colour images) is a ValueError saying how to fix it.
    """
    if isinstance(source, (str, Path)):
        source = open_image(source, "mask")
    if isinstance(source, Image.Image):
        return _mask_from_pil(source)
    try:
        return check_binary_mask(source)
    except ValueError as error:
        raise ValueError(f"mask tensor: {error}") from None


def _mask_from_pil(image: Image.Image) -> torch.Tensor:
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(image.getchannel("A"))
        return torch.from_numpy((alpha >= ALPHA_THRESHOLD).astype(np.float32))
    if image.mode == "1":
        return torch.from_numpy(np.asarray(image, dtype=np.float32))
    array = np.asarray(image)
    if array.ndim == 3:
        if not (array == array[..., :1]).all():
            raise ValueError(
                f"mask is a colour {image.mode} image; give a binary black/white PNG "
                "(white = object) or an RGBA image whose alpha marks the object"
            )
        array = array[..., 0]
    top = 65535 if array.dtype == np.uint16 else 255
    levels = np.unique(array)
    if not np.isin(levels, (0, top)).all():
        raise ValueError(
            f"mask is not binary: it has {len(levels)} gray levels (only 0 and {top} allowed); "
            "threshold it (e.g. PIL: mask.point(lambda v: 255 if v >= 128 else 0)) or give an "
            "RGBA image whose alpha marks the object"
        )
    return torch.from_numpy((array == top).astype(np.float32))


def resize_binary(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a {0, 1} mask [h, w] to ``size``: area average, then >= 0.5 (as the core does)."""
    if tuple(mask.shape) == tuple(size):
        return mask
    area = F.interpolate(mask[None, None], size=size, mode="area")[0, 0]
    return (area >= 0.5).to(torch.float32)


def dilate_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """{0, 1} mask [H, W] grown by ``pixels`` in every direction (a square structuring element)."""
    if pixels == 0:
        return mask
    return F.max_pool2d(mask[None, None], 2 * pixels + 1, stride=1, padding=pixels)[0, 0]


def make_task(
    image: ImageSource,
    mask: ImageSource,
    size: tuple[int, int],
    latent_size: tuple[int, int],
    *,
    dilate: int = 0,
) -> BackgroundTask:
    """Load, check and resize a reference and its mask to ``size`` (H, W) pixels; the coupling
    shares the mask dilated by ``dilate`` pixels (at ``size``).

    Errors (before any model runs): a mask whose aspect ratio differs from the image's, an empty
    mask, a mask covering everything, or one that leaves no object / no background cell on the
    ``latent_size`` grid the coupling works on (after dilation), a negative ``dilate``.
    """
    if isinstance(dilate, bool) or not isinstance(dilate, int) or dilate < 0:
        raise ValueError(f"dilate must be a whole number of pixels >= 0, got {dilate!r}")
    image_t, mask_t = load_image(image), load_mask(mask)
    (ih, iw), (mh, mw) = image_t.shape[-2:], mask_t.shape
    if abs((ih / iw) / (mh / mw) - 1) > ASPECT_TOLERANCE:
        raise ValueError(
            f"image ({iw}x{ih}) and mask ({mw}x{mh}) do not match: their aspect ratios differ; "
            "the mask must cover the same picture (any resolution, same shape)"
        )
    if not mask_t.any():
        raise ValueError("mask is empty: mark the object to keep (white / opaque pixels)")
    if mask_t.all():
        raise ValueError("mask covers the whole image: there is no background to generate")
    task_mask = resize_binary(mask_t, size)
    shared = resize_binary(dilate_mask(task_mask, dilate), latent_size)
    for name, cells in (
        ("object", resize_binary(task_mask, latent_size)),
        ("background", 1 - shared),
    ):
        if not cells.any():
            hint = " or dilate less" if dilate and name == "background" else ""
            raise ValueError(
                f"no {name} left on the {latent_size[0]}x{latent_size[1]} latent grid: every "
                f"latent cell is less than half {name}; enlarge the {name} region{hint}"
            )
    resized = F.interpolate(image_t, size=size, mode="bicubic", antialias=True).clamp(0, 1)
    return BackgroundTask(resized, task_mask, dilate)


def background_task(
    pipe,
    image: ImageSource,
    mask: ImageSource,
    *,
    height: int | None = None,
    width: int | None = None,
    dilate: int = 0,
) -> BackgroundTask:
    """``make_task`` at ``pipe``'s size (its default, or height x width, checked for the grid)."""
    default_h, default_w = default_size(pipe)
    height, width = height or default_h, width or default_w
    _, lh, lw = latent_grid(pipe, height, width)
    return make_task(image, mask, (height, width), (lh, lw), dilate=dilate)


# --- generation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """Settings every method shares: steps (also the inversion's), guidance, negative prompt."""

    num_inference_steps: int = 50
    guidance_scale: float | None = None  # None: the pipeline's default
    negative_prompt: str | None = None

    def kwargs(self, task: BackgroundTask) -> dict[str, Any]:
        out: dict[str, Any] = {"num_inference_steps": self.num_inference_steps}
        if self.guidance_scale is not None:
            out["guidance_scale"] = self.guidance_scale
        if self.negative_prompt is not None:
            out["negative_prompt"] = self.negative_prompt
        out["height"], out["width"] = task.size
        return out


def _images(output) -> torch.Tensor:
    return output.images.detach().float().cpu().clamp(0, 1)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def subspace_gallery(
    sampler,
    task: BackgroundTask,
    noise: torch.Tensor,
    prompt: str,
    *,
    share: float,
    num_images: int,
    seed: int,
    sampling: Sampling = Sampling(),
) -> BackgroundGallery:
    """Our method: K images from ``Subspace(task.shared_mask, share, shared=noise)`` noise, noise
    [1, *latent] the reference's inversion; ``sampler`` is ``matching_sampler(pipe)``."""
    coupling = Subspace(mask=task.shared_mask, share=share, shared=noise[0].float().cpu())
    height, width = task.size
    latents = latents_for(
        sampler,
        coupling,
        num_images_per_prompt=num_images,
        height=height,
        width=width,
        generator=_generator(seed),
    )
    output = sampler(
        prompt=prompt,
        latents=latents,
        num_images_per_prompt=num_images,
        generator=_generator(seed),
        output_type="pt",
        **sampling.kwargs(task),
    )
    return BackgroundGallery("subspace", prompt, seed, _images(output), {"share": float(share)})


def reconstruction_gallery(
    sampler,
    task: BackgroundTask,
    noise: torch.Tensor,
    prompt: str,
    *,
    num_images: int,
    seed: int,
    sampling: Sampling = Sampling(),
) -> BackgroundGallery:
    """Inversion alone: the image regenerated from the inverted noise with ``prompt``. The
    sampler is deterministic, so every seed gives this one image; it is repeated K times."""
    output = sampler(
        prompt=prompt,
        latents=noise.to(sampler.device, sampler.dtype),
        output_type="pt",
        **sampling.kwargs(task),
    )
    images = _images(output).expand(num_images, -1, -1, -1).clone()
    return BackgroundGallery("inversion", prompt, seed, images)


def sdedit_gallery(
    img2img,
    task: BackgroundTask,
    prompt: str,
    *,
    strength: float,
    num_images: int,
    seed: int,
    sampling: Sampling = Sampling(),
) -> BackgroundGallery:
    """SDEdit: the reference noised to ``strength`` and denoised with ``prompt`` (Img2Img)."""
    output = img2img(
        prompt=prompt,
        image=task.image,
        strength=strength,
        num_images_per_prompt=num_images,
        generator=_generator(seed),
        output_type="pt",
        **sampling.kwargs(task),
    )
    return BackgroundGallery("sdedit", prompt, seed, _images(output), {"strength": strength})


def inpaint_gallery(
    inpaint,
    task: BackgroundTask,
    prompt: str,
    *,
    num_images: int,
    seed: int,
    sampling: Sampling = Sampling(),
) -> BackgroundGallery:
    """Inpainting with the base weights: the background (mask inverted: white = repaint) is
    generated from scratch (strength 1) while the object region is blended from the reference."""
    repaint = (1 - task.mask)[None, None]
    output = inpaint(
        prompt=prompt,
        image=task.image,
        mask_image=repaint,
        strength=1.0,
        num_images_per_prompt=num_images,
        generator=_generator(seed),
        output_type="pt",
        **sampling.kwargs(task),
    )
    return BackgroundGallery("inpaint", prompt, seed, _images(output), {"strength": 1.0})


def paste_back(images: torch.Tensor, task: BackgroundTask) -> torch.Tensor:
    """The reference's object pixels over images [K, 3, H, W] (mask 1 = reference)."""
    mask = task.mask.to(images.dtype)
    return images * (1 - mask) + task.image.to(images.dtype) * mask


def baseline_pipelines(sampler) -> tuple[Any, Any]:
    """(Img2Img, Inpaint) pipelines of ``sampler``'s family on its modules and scheduler: the
    diffusers AutoPipelines for SD, the learned lab's own (SDEdit, blended inpainting)."""
    if detect_family(sampler) == "learned-lab":
        from couplednoise.pipelines.learned_lab.editing import editing_pipelines

        return editing_pipelines(sampler)
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    return (
        derive_pipeline(AutoPipelineForImage2Image, sampler),
        derive_pipeline(AutoPipelineForInpainting, sampler),
    )


def run_background(
    pipe,
    task: BackgroundTask,
    prompts: Sequence[str],
    *,
    shares: Sequence[float] = (0.9,),
    num_images: int = 8,
    seed: int = 0,
    sampling: Sampling = Sampling(),
    source_prompt: str = "",
    baselines: bool = True,
    sdedit_strengths: Sequence[float] = (0.5, 0.8),
    progress: bool = True,
) -> list[BackgroundGallery]:
    """Every method for every prompt, same seed and sampler: the subspace sweep over ``shares``,
    then (with ``baselines``) inversion alone, and for SD1.5 / SDXL / SD3 and the learned lab
    SDEdit at each strength and inpainting (the closed-form lab has no Img2Img / Inpaint
    pipeline: inversion alone is its baseline).

    The reference is inverted once (conditioned on ``source_prompt``, guidance 1, the same number
    of steps as sampling) and its noise shared by all subspace galleries (inside
    ``task.shared_mask``) and the reconstruction.
    """
    family = detect_family(pipe)
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    shares = [float(Subspace(mask=task.mask, share=s).share) for s in shares]  # validates
    for strength in sdedit_strengths:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"SDEdit strength must be in (0, 1], got {strength}")
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2 for a gallery, got {num_images}")
    sampler = matching_sampler(pipe)
    noise = invert(
        pipe,
        task.image,
        prompt=source_prompt,
        num_inference_steps=sampling.num_inference_steps,
        progress=progress,
    )
    jobs = [(p, "subspace", s) for p in prompts for s in shares]
    if baselines:
        jobs += [(p, "inversion", None) for p in prompts]
        if family in BASELINE_FAMILIES:
            jobs += [(p, "sdedit", s) for p in prompts for s in sdedit_strengths]
            jobs += [(p, "inpaint", None) for p in prompts]
    img2img = inpaint = None
    if any(method in ("sdedit", "inpaint") for _, method, _ in jobs):
        img2img, inpaint = baseline_pipelines(sampler)
    from tqdm.auto import tqdm

    galleries = []
    common = {"num_images": num_images, "seed": seed, "sampling": sampling}
    for prompt, method, value in tqdm(jobs, desc="background galleries", disable=not progress):
        if method == "subspace":
            gallery = subspace_gallery(sampler, task, noise, prompt, share=value, **common)
        elif method == "inversion":
            gallery = reconstruction_gallery(sampler, task, noise, prompt, **common)
        elif method == "sdedit":
            gallery = sdedit_gallery(img2img, task, prompt, strength=value, **common)
        else:
            gallery = inpaint_gallery(inpaint, task, prompt, **common)
        galleries.append(gallery)
    return galleries
