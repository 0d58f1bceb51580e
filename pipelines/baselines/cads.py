"""Condition-annealed sampling (CADS; Sadat et al., ICLR 2024) through diffusers' step callbacks.

    output = sample_with_cads(pipe, "a red car", latents, CADSSettings(), num_images_per_prompt=4,
                              generator=torch.Generator().manual_seed(0))

At the step of diffusion time t in [0, 1] (timestep / num_train_timesteps; 1 = pure noise; for
flow matching t is sigma) the conditional branch sees, in place of its condition y,

    y_hat = sqrt(gamma(t)) y + s sqrt(1 - gamma(t)) n,   n ~ N(0, I) fresh at every step,
    gamma(t) = 1 (t <= tau1), (tau2 - t) / (tau2 - tau1) (between), 0 (t >= tau2),
    y_final = psi rescale(y_hat) + (1 - psi) y_hat,  rescale: y_hat standardised, then given y's
    mean and standard deviation (per image, over all its entries).

Stable Diffusion (SD1.5 / SDXL / SD3): y is the prompt's token embeddings and, for SDXL / SD3, the
pooled embedding; the negative / unconditional branch is left clean. The learned lab: y is its
prompt encoder's attribute tokens [B, 4, D] (which also feed its class embedding). The pipeline's own step
callback (``callback_on_step_end``, which may return new ``prompt_embeds`` etc. for the next step)
sets each step's condition; step 0 runs before any callback, so its condition is passed in as
``prompt_embeds=`` (the prompt is encoded once here, with the pipeline's ``encode_prompt``). CADS
runs no extra network evaluation.

The closed-form lab has no text embedding; its condition is a prior over the world's scenes,
uniform on the prompt's scenes. Its analogue (``noise_prompt_weights``): the same formula on the
standardised prior weights of each image (zero mean, unit variance over the scenes, the scale CLIP
token states have), mapped back to the weights' mean and spread, clipped at 0 and renormalised:
early steps see a random prior over much of the world, late steps the prompt's own scenes.

noise_scale s = 0 is plain sampling exactly (for psi = 1 that is the formula; for psi < 1 the
formula would still scale y by psi + (1 - psi) sqrt(gamma), which is no noise, so it is skipped).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from couplednoise.pipelines.baselines.cno import check_gallery_latents, count_prompts
from couplednoise.pipelines.baselines.settings import CADSSettings
from couplednoise.pipelines.call_checks import negative_prompts
from couplednoise.pipelines.lab.pipeline import LabPipeline
from couplednoise.pipelines.loading import detect_family

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None
# Options the pipelines would use to encode the prompt: taken from the call, given to encode_prompt.
ENCODE_OPTIONS = {
    "learned-lab": (),
    "sd15": ("clip_skip",),
    "sdxl": ("prompt_2", "negative_prompt_2", "clip_skip"),
    "sd3": (
        "prompt_2",
        "prompt_3",
        "negative_prompt_2",
        "negative_prompt_3",
        "clip_skip",
        "max_sequence_length",
    ),
}
# Call arguments CADS sets itself (the condition, and the timesteps it plans step 0 for).
RESERVED_ARGUMENTS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
    "prompt_weights",
    "timesteps",
    "sigmas",
)


def cads_gamma(t: float, tau1: float, tau2: float) -> float:
    """CADS's annealing schedule gamma(t): 1 for t <= tau1, 0 for t >= tau2, linear between."""
    if t <= tau1:
        return 1.0
    if t >= tau2:
        return 0.0
    return (tau2 - t) / (tau2 - tau1)


def noise_condition(
    y: torch.Tensor, gamma: float, noise: torch.Tensor | None, settings: CADSSettings
) -> torch.Tensor:
    """CADS's y_final for a condition y [n, ...] (rows = images) and noise n like y.

    Returns y itself where the formula is the identity (gamma = 1) and for noise_scale 0.
    Computed in float32, cast back to y's dtype.
    """
    if gamma >= 1.0 or settings.noise_scale == 0:
        return y
    if noise is None or noise.shape != y.shape:
        raise ValueError(f"noise must have the condition's shape {list(y.shape)}")
    y32 = y.float()
    noisy = math.sqrt(gamma) * y32 + settings.noise_scale * math.sqrt(1.0 - gamma) * noise.to(y32)
    if settings.psi > 0:
        dims = tuple(range(1, y.ndim))
        standardised = (noisy - noisy.mean(dims, keepdim=True)) / noisy.std(dims, keepdim=True)
        rescaled = standardised * y32.std(dims, keepdim=True) + y32.mean(dims, keepdim=True)
        noisy = settings.psi * rescaled + (1.0 - settings.psi) * noisy
    return noisy.to(y.dtype)


def noise_prompt_weights(
    weights: torch.Tensor, gamma: float, noise: torch.Tensor | None, settings: CADSSettings
) -> torch.Tensor | None:
    """The lab's CADS condition: weights [n, N] over the world's scenes -> noised weights [n, N].

    None where the condition is the prompt's own (gamma = 1 or noise_scale 0). Rows whose weights
    are all equal (a prompt that names nothing) carry no condition and stay as they are.
    """
    if gamma >= 1.0 or settings.noise_scale == 0:
        return None
    mean = weights.mean(1, keepdim=True)
    spread = weights.std(1, keepdim=True)
    constant = spread == 0
    unit = torch.where(constant, torch.ones_like(spread), spread)
    noisy = noise_condition((weights - mean) / unit, gamma, noise, settings)
    noisy = torch.where(constant, weights, (noisy * unit + mean).clamp_min(0.0))
    return noisy / noisy.sum(1, keepdim=True)


def draw_noise(
    shape: Sequence[int], k: int, num_prompts: int, generator: GeneratorArg
) -> torch.Tensor:
    """float32 N(0, I) [num_prompts * k, *shape] on the generator's device (CPU by default); a
    generator list gives prompt p's rows from generator p."""
    if isinstance(generator, (list, tuple)):
        return torch.cat(
            [torch.randn((k, *shape), generator=g, device=g.device) for g in generator]
        )
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn((num_prompts * k, *shape), generator=generator, device=device)


class CADSCallback:
    """``callback_on_step_end``: after step i, give step i + 1 its annealed condition.

    ``clean``: callback tensor name -> the conditional branch's clean condition [B, ...];
    ``transform(y, gamma, noise, settings)`` noises one of them (None: the pipeline's own);
    ``guided``: the pipeline's tensors stack [negative; positive] (classifier-free guidance).
    """

    def __init__(
        self,
        clean: dict[str, torch.Tensor],
        settings: CADSSettings,
        *,
        transform: Callable,
        guided: bool,
        gallery_size: int,
        generator: GeneratorArg,
        scheduler: Any,
        first_timestep: float,
    ):
        self.clean = clean
        self.settings = settings
        self.transform = transform
        self.guided = guided
        self.gallery_size = gallery_size
        self.generator = generator
        self.scheduler_config = scheduler.config
        self.first_timestep = float(first_timestep)

    @property
    def tensor_inputs(self) -> list[str]:
        return list(self.clean)

    def condition(self, timestep: float | torch.Tensor) -> dict[str, torch.Tensor | None]:
        """The conditional branch's condition (by callback name) for the step at ``timestep``."""
        t = float(timestep) / float(self.scheduler_config.num_train_timesteps)
        gamma = cads_gamma(t, self.settings.tau1, self.settings.tau2)
        out = {}
        for name, y in self.clean.items():
            noise = None
            if gamma < 1.0 and self.settings.noise_scale > 0:
                prompts = y.shape[0] // self.gallery_size
                noise = draw_noise(y.shape[1:], self.gallery_size, prompts, self.generator)
                noise = noise.to(y.device)
            out[name] = self.transform(y, gamma, noise, self.settings)
        return out

    def __call__(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict:
        timesteps = pipe.scheduler.timesteps
        if step == 0 and float(timesteps[0]) != self.first_timestep:
            raise RuntimeError(
                f"the pipeline's first timestep {float(timesteps[0])} is not the "
                f"{self.first_timestep} CADS prepared step 0 for"
            )
        if step + 1 >= len(timesteps):
            return {}
        new = self.condition(timesteps[step + 1])
        if not self.guided:
            return new
        out = {}
        for name, cond in new.items():
            stacked = tensors[name]
            rows = cond.shape[0]
            if stacked.shape[0] != 2 * rows:
                raise RuntimeError(
                    f"{name} has batch {stacked.shape[0]}, expected 2 x {rows} under guidance"
                )
            out[name] = torch.cat([stacked[:rows], cond.to(stacked)])
        return out


@dataclass(frozen=True)
class _Layout:
    """How a family's prompt condition is encoded, named in callbacks and passed to the call."""

    arguments: dict[str, str]  # callback tensor name -> the call's argument for its positive half
    encode: Callable  # (pipe, prompt, negative, k, guided, device, options) -> (positive, negative)


def _encode_sd15(pipe, prompt, negative, k, guided, device, options):
    embeds, negative_embeds = pipe.encode_prompt(prompt, device, k, guided, negative, **options)
    return {"prompt_embeds": embeds}, {"negative_prompt_embeds": negative_embeds}


def _encode_pooled(pipe, prompt, negative, k, guided, device, options, pooled_name):
    embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
        prompt=prompt,
        device=device,
        num_images_per_prompt=k,
        do_classifier_free_guidance=guided,
        negative_prompt=negative,
        **options,
    )
    return {"prompt_embeds": embeds, pooled_name: pooled}, {
        "negative_prompt_embeds": negative_embeds,
        "negative_pooled_prompt_embeds": negative_pooled,
    }


def _encode_learned_lab(pipe, prompt, negative, k, guided, device, options):
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    negatives = negative_prompts(negative, len(prompts))
    return {"prompt_embeds": pipe.encode_prompt(prompts, k)}, {
        "negative_prompt_embeds": pipe.encode_prompt(negatives, k)
    }


LAYOUTS = {
    "learned-lab": _Layout({"prompt_embeds": "prompt_embeds"}, _encode_learned_lab),
    "sd15": _Layout({"prompt_embeds": "prompt_embeds"}, _encode_sd15),
    "sdxl": _Layout(
        {"prompt_embeds": "prompt_embeds", "add_text_embeds": "pooled_prompt_embeds"},
        lambda *a: _encode_pooled(*a, pooled_name="add_text_embeds"),
    ),
    "sd3": _Layout(
        {"prompt_embeds": "prompt_embeds", "pooled_prompt_embeds": "pooled_prompt_embeds"},
        # SD3's encode_prompt has no defaults for prompt_2 / prompt_3 (None: the prompt itself)
        lambda pipe, prompt, negative, k, guided, device, options: _encode_pooled(
            pipe,
            prompt,
            negative,
            k,
            guided,
            device,
            {"prompt_2": None, "prompt_3": None, **options},
            pooled_name="pooled_prompt_embeds",
        ),
    ),
}


def _call_default(pipe: Any, name: str) -> Any:
    parameter = inspect.signature(pipe.__call__).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise TypeError(f"{type(pipe).__name__}.__call__ has no default {name}; pass it")
    return parameter.default


def _is_guided(pipe: Any, guidance: float) -> bool:
    """Whether the pipeline runs classifier-free guidance at this scale (as its property does)."""
    unet = getattr(pipe, "unet", None)
    time_cond = getattr(getattr(unet, "config", None), "time_cond_proj_dim", None)
    return guidance > 1 and time_cond is None


def _check_generator(generator: GeneratorArg, num_prompts: int) -> GeneratorArg:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)) and all(
        isinstance(g, torch.Generator) for g in generator
    ):
        if len(generator) != num_prompts:
            raise ValueError(
                f"got {len(generator)} generators for {num_prompts} prompt(s): pass one, or one "
                "per prompt"
            )
        return list(generator)
    raise TypeError(
        f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}"
    )


def sample_with_cads(
    pipe: Any,
    prompt: str | Sequence[str],
    latents: torch.Tensor,
    settings: CADSSettings | None = None,
    *,
    num_images_per_prompt: int,
    generator: GeneratorArg = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    negative_prompt: str | Sequence[str] | None = None,
    **pipe_kwargs: Any,
):
    """Run ``pipe`` from ``latents`` [num_prompts * K, ...] with CADS; returns the pipeline output.

    ``generator`` (one, or one per prompt) draws the condition noise, in float32 on its device, and
    also goes to the pipeline (one per image) for stochastic schedulers. Supported: SD1.5, SDXL,
    SD3, the lab and the learned lab. ``pipe_kwargs`` are further pipeline arguments (output_type, height, ...).
    """
    settings = CADSSettings() if settings is None else settings
    if not isinstance(settings, CADSSettings):
        raise TypeError(f"settings must be CADSSettings, got {type(settings).__name__}")
    num_prompts = count_prompts(prompt)
    check_gallery_latents(latents, num_prompts, num_images_per_prompt)
    generator = _check_generator(generator, num_prompts)
    taken = sorted(k for k in pipe_kwargs if k in RESERVED_ARGUMENTS or k.startswith("callback"))
    if taken:
        raise ValueError(f"CADS sets {', '.join(taken)} itself; do not pass them")
    family = "lab" if isinstance(pipe, LabPipeline) else detect_family(pipe)
    if family != "lab" and family not in LAYOUTS:
        raise TypeError(
            "CADS supports SD1.5, SDXL, SD3 and the lab and learned-lab pipelines, not "
            f"{type(pipe).__name__}"
        )
    steps = (
        num_inference_steps
        if num_inference_steps is not None
        else _call_default(pipe, "num_inference_steps")
    )
    guidance = float(
        guidance_scale if guidance_scale is not None else _call_default(pipe, "guidance_scale")
    )
    scheduler = copy.deepcopy(pipe.scheduler)  # the timesteps the call will take, to plan step 0
    if getattr(scheduler.config, "use_dynamic_shifting", False):
        raise ValueError(
            "CADS plans step 0 before the call: dynamic timestep shifting is not supported"
        )
    scheduler.set_timesteps(steps)
    first_timestep = float(scheduler.timesteps[0])
    k = num_images_per_prompt
    call = dict(num_inference_steps=steps, guidance_scale=guidance, latents=latents, **pipe_kwargs)
    if family == "lab":
        prompts, _ = pipe.check_request(prompt, negative_prompt, k, steps)
        clean = torch.stack([pipe.prompt_weights_for(p) for p in prompts for _ in range(k)])
        callback = CADSCallback(
            {"prompt_weights": clean},
            settings,
            transform=noise_prompt_weights,
            guided=False,  # the lab's prompt_weights are the conditional branch alone
            gallery_size=k,
            generator=generator,
            scheduler=scheduler,
            first_timestep=first_timestep,
        )
        call.update(
            prompt=prompt,
            negative_prompt=negative_prompt,
            num_images_per_prompt=k,
            prompt_weights=callback.condition(first_timestep)["prompt_weights"],
        )
    else:
        layout = LAYOUTS[family]
        options = {name: call.pop(name) for name in ENCODE_OPTIONS[family] if name in call}
        guided = _is_guided(pipe, guidance)
        with torch.no_grad():  # as inside the pipeline (grad mode can change kernels' rounding)
            positive, negative = layout.encode(
                pipe, prompt, negative_prompt, k, guided, pipe._execution_device, options
            )
        callback = CADSCallback(
            positive,
            settings,
            transform=noise_condition,
            guided=guided,
            gallery_size=k,
            generator=generator,
            scheduler=scheduler,
            first_timestep=first_timestep,
        )
        first = callback.condition(first_timestep)
        call.update({layout.arguments[name]: value for name, value in first.items()})
        if guided:
            call.update(negative)
        if "max_sequence_length" in options:
            call["max_sequence_length"] = options["max_sequence_length"]
        call.update(prompt=None, num_images_per_prompt=1)
    if isinstance(generator, list):  # diffusers takes one generator, or one per image
        call["generator"] = [g for g in generator for _ in range(k)]
    elif generator is not None:
        call["generator"] = generator
    return pipe(
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=callback.tensor_inputs,
        **call,
    )
