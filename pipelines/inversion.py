"""Invert a reference image to the initial noise a pipeline would turn back into it.

- SD1.5 / SDXL: DDIM inversion (Song et al. 2021, eq. 13 run upwards) with diffusers'
  ``DDIMInverseScheduler``, driven by the pipeline's own denoising loop (conditioning, SDXL time
  ids) at guidance 1. Classifier-free guidance during inversion breaks the reconstruction.
- SD3: the flow ODE dx/ds = v(x, s), v = eps - x0, integrated with Euler from sigma 0 to 1 on the
  pipeline scheduler's own sigma grid (timestep = 1000 * sigma), at guidance 1.

Both return unit-scale noise for ``latents=``: the DDIM latent at the top noise level (pipelines
multiply it by ``scheduler.init_noise_sigma``) and the flow state at sigma = 1. Inverted latents are
NOT exactly N(0, I): they carry the image's structure (and its low frequencies' statistics).
Reconstruction is exact only in the limit of many steps and with the matching deterministic sampler
(``matching_sampler``); with few steps it is approximate.
"""

from __future__ import annotations

import itertools

import torch
from tqdm.auto import tqdm

from couplednoise.pipelines.loading import detect_family, dtype_keyword

INVERTIBLE_FAMILIES = ("sd15", "sdxl", "sd3", "lab", "learned-lab")
PIXEL_SPACE_FAMILIES = ("lab", "learned-lab")  # no VAE: the model's range is [-1, 1]


def encode_image(pipe, image: torch.Tensor) -> torch.Tensor:
    """VAE latents [N, C, H/f, W/f] (float32) of images [N, 3, H, W] in [0, 1].

    Uses the posterior mean and the VAE's ``(z - shift_factor) * scaling_factor`` normalisation
    (shift 0 for SD1.5 / SDXL), i.e. exactly the latents the pipeline's decoder expects.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [N, 3, H, W] in [0, 1], got shape {tuple(image.shape)}")
    if detect_family(pipe) in PIXEL_SPACE_FAMILIES:
        return image.float().to(pipe.device) * 2 - 1
    vae = pipe.vae
    dtype = vae.dtype
    # SDXL's fp16 VAE overflows; its config asks for float32 (as the SDXL img2img pipeline does).
    upcast = dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        with torch.no_grad():
            x = image.to(vae.device, vae.dtype) * 2 - 1
            latents = vae.encode(x).latent_dist.mean.float()
    finally:
        if upcast:
            vae.to(dtype)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


def ddim_schedulers(pipe):
    """(DDIMScheduler, DDIMInverseScheduler) from the pipeline's scheduler config, matched.

    Both classes default to ``clip_sample=True``, which is wrong for latents; spacings other than
    "leading" / "trailing" (which the inverse scheduler supports) become "leading".
    """
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    config = dict(pipe.scheduler.config)
    spacing = config.get("timestep_spacing", "leading")
    overrides = {
        "clip_sample": False,
        "timestep_spacing": spacing if spacing in ("leading", "trailing") else "leading",
    }
    return (
        DDIMScheduler.from_config(config, **overrides),
        DDIMInverseScheduler.from_config(config, **overrides),
    )


def derive_pipeline(pipeline_class, pipe, **components):
    """``pipeline_class`` on ``pipe``'s modules (no copies), with ``components`` replaced.

    ``from_pipe`` casts to float32 unless told the dtype, which would cast the shared modules;
    told the dtype it still re-casts them (a no-op) and logs a warning per module, muted here.
    """
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        derived = pipeline_class.from_pipe(pipe, **dtype_keyword(pipe.dtype), **components)
    finally:
        logging.set_verbosity(level)
    derived.set_progress_bar_config(disable=True)
    return derived


def matching_sampler(pipe):
    """The pipeline whose deterministic sampler ``invert`` reverses: DDIM for SD1.5 / SDXL and
    the lab (same timestep spacing as the inversion), the flow-matching Euler sampler for SD3."""
    family = _check_family(pipe)
    if family == "lab":
        return _lab_with_scheduler(pipe, ddim_schedulers(pipe)[0])
    if family == "sd3":
        return derive_pipeline(
            type(pipe), pipe, scheduler=type(pipe.scheduler).from_config(pipe.scheduler.config)
        )
    return derive_pipeline(type(pipe), pipe, scheduler=ddim_schedulers(pipe)[0])


def invert(
    pipe,
    image: torch.Tensor,
    *,
    prompt: str = "",
    num_inference_steps: int = 50,
    progress: bool = True,
) -> torch.Tensor:
    """Initial noise [N, C, H/f, W/f] (float32, on the pipeline's device) for images [N, 3, H, W]
    in [0, 1], at guidance 1, conditioned on ``prompt`` (a description of the image, or "")."""
    family = _check_family(pipe)
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    latents = encode_image(pipe, image)
    if family == "lab":
        return lab_invert(
            pipe, latents, prompt=prompt, num_inference_steps=num_inference_steps, progress=progress
        )
    if family == "sd3":
        return flow_invert(
            pipe, latents, prompt=prompt, num_inference_steps=num_inference_steps, progress=progress
        )
    return ddim_invert(
        pipe, latents, prompt=prompt, num_inference_steps=num_inference_steps, progress=progress
    )


def ddim_invert(
    pipe,
    latents: torch.Tensor,
    *,
    prompt: str = "",
    num_inference_steps: int = 50,
    progress: bool = True,
) -> torch.Tensor:
    """DDIM-invert clean latents [N, 4, h, w] (SD1.5 / SDXL) to the top noise level.

    The pipeline's own loop runs with ``DDIMInverseScheduler`` (ascending timesteps), guidance 1.
    """
    inverse = derive_pipeline(type(pipe), pipe, scheduler=ddim_schedulers(pipe)[1])
    inverse.set_progress_bar_config(disable=not progress, desc="DDIM inversion")
    n, _, h, w = latents.shape
    f = pipe.vae_scale_factor
    out = inverse(
        prompt=[prompt] * n,
        latents=latents.to(pipe.device, pipe.dtype),
        num_inference_steps=num_inference_steps,
        guidance_scale=1.0,
        height=h * f,
        width=w * f,
        output_type="latent",
    )
    return out.images.float()


@torch.no_grad()
def flow_invert(
    pipe,
    latents: torch.Tensor,
    *,
    prompt: str = "",
    num_inference_steps: int = 28,
    progress: bool = True,
) -> torch.Tensor:
    """Integrate SD3's flow ODE from clean latents [N, 16, h, w] (sigma 0) to sigma 1."""
    prompt_embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=[prompt] * latents.shape[0],
        prompt_2=None,
        prompt_3=None,
        device=pipe.device,
        do_classifier_free_guidance=False,
    )
    train_steps = pipe.scheduler.config.num_train_timesteps

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return pipe.transformer(
            hidden_states=x.to(pipe.transformer.dtype),
            timestep=(sigma * train_steps).expand(x.shape[0]).to(pipe.device),
            encoder_hidden_states=prompt_embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]

    sigmas = flow_sigmas(pipe, num_inference_steps, tuple(latents.shape[-2:]))
    return euler_invert(velocity, latents.to(pipe.device), sigmas, progress=progress)


def euler_invert(velocity, x: torch.Tensor, sigmas: torch.Tensor, *, progress: bool = True):
    """Run a flow-matching Euler sampler backwards: sigmas [steps + 1] is the sampler's
    descending grid (ending at 0); x [N, ...] at sigma 0 goes to sigma ``sigmas[0]``.

    Written here because diffusers has no flow inverse scheduler: it is the sampler's Euler step
    on the same grid in the opposite direction, with v evaluated at the start of each step
    (x_{s'} = x_s + (s' - s) v(x_s, s), s < s').
    """
    x = x.float()
    ascending = sigmas.flip(0).tolist()
    steps = list(itertools.pairwise(ascending))
    for low, high in tqdm(steps, desc="flow inversion", disable=not progress):
        x = x + (high - low) * velocity(x, torch.tensor(low)).float()
    return x


def flow_sigmas(pipe, num_inference_steps: int, latent_size: tuple[int, int]) -> torch.Tensor:
    """The sampler's sigma grid [steps + 1] (descending, ending at 0), as the SD3 pipeline sets it
    (including resolution-dependent shifting when the scheduler uses it)."""
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    kwargs = {}
    if scheduler.config.get("use_dynamic_shifting", False):
        patch = pipe.transformer.config.patch_size
        kwargs["mu"] = calculate_shift(
            (latent_size[0] // patch) * (latent_size[1] // patch),
            scheduler.config.get("base_image_seq_len", 256),
            scheduler.config.get("max_image_seq_len", 4096),
            scheduler.config.get("base_shift", 0.5),
            scheduler.config.get("max_shift", 1.16),
        )
    scheduler.set_timesteps(num_inference_steps, device="cpu", **kwargs)
    return scheduler.sigmas.float()


@torch.no_grad()
def lab_invert(
    pipe,
    latents: torch.Tensor,
    *,
    prompt: str = "",
    num_inference_steps: int = 50,
    progress: bool = True,
) -> torch.Tensor:
    """DDIM-invert pixel-space latents [N, 3, s, s] with the lab's exact denoiser.

    The lab has its own loop (no diffusers pipeline to drive), so this is the same
    ``DDIMInverseScheduler`` recursion: at each ascending timestep t the denoiser is evaluated at
    t's noise level, as diffusers' inversion does.
    """
    from couplednoise.pipelines.lab.denoiser import model_output
    from couplednoise.pipelines.lab.pipeline import noise_level

    inverse = ddim_schedulers(pipe)[1]
    inverse.set_timesteps(num_inference_steps)
    prediction = inverse.config.prediction_type
    x = latents.float()
    prompts = [prompt]
    for t in tqdm(inverse.timesteps, desc="DDIM inversion", disable=not progress):
        alpha, sigma, _ = noise_level(inverse, float(t))
        x0 = pipe.predict_x0(x, alpha, sigma, prompts, [""], 1.0)
        x = inverse.step(model_output(x0, x, alpha, sigma, prediction), t, x).prev_sample
    return x


def _lab_with_scheduler(pipe, scheduler):
    """The lab pipeline on the same world and settings, with another scheduler."""
    lab = type(pipe)(
        pipe.world,
        scheduler,
        smoothing=pipe.smoothing,
        device=pipe.device,
        dtype=pipe.dtype,
        chunk_size=pipe.chunk_size,
        locality=pipe.locality,
        name_or_path=pipe.name_or_path,
    )
    lab.set_progress_bar_config(disable=True)
    return lab


def _check_family(pipe) -> str:
    family = detect_family(pipe)
    if family not in INVERTIBLE_FAMILIES:
        raise ValueError(
            f"inversion supports the families {INVERTIBLE_FAMILIES}; this pipeline is {family!r} "
            f"({type(pipe).__name__})"
        )
    if family == "lab" and "FlowMatch" in type(pipe.scheduler).__name__:
        raise ValueError(
            "lab inversion needs a DDPM-type scheduler: load 'lab' or 'lab:scheduler=ddim' "
            "(flow-matching lab schedulers are not invertible here)"
        )
    return family
