"""The guided Tweedie prediction x0(z) at a pipeline's first sampling step, differentiable in z.

    step = first_step(pipe, "a red car", latents, num_images_per_prompt=4, guidance_scale=6.0)
    x0 = step.predict(z)      # z [B, C, h, w] (unit-variance latents) -> x0 [B, C, h, w] float32

Diffusers pipelines (SD1.5, SDXL, SD3, any pipeline with a ``unet`` or ``transformer`` that takes
``latents=``): the pipeline itself is run up to its first denoiser call, which a forward pre-hook
records and cancels before the network runs. The record holds exactly what the pipeline feeds its
denoiser at step 0 (text conditioning, SDXL's time ids, SD3's pooled projections, the timestep),
so nothing of a pipeline's preparation is re-implemented here. ``predict`` then calls the denoiser
with grad enabled on the model input c_in z (c_in = init_noise_sigma / scaling, read from the
recorded input), combines the classifier-free-guidance halves as the pipeline does,
u + g (c - u), and inverts the parameterisation at the step's noise level (alpha, sigma) of
x = alpha x0 + sigma eps:

    epsilon: x0 = (x - sigma eps) / alpha      v_prediction: x0 = alpha x - sigma v
    flow matching (SD3, x = (1 - sigma) x0 + sigma eps, v = eps - x0): x0 = x - sigma v

The closed-form lab: its exact posterior mean E[x0 | x] (guided), differentiable by autograd.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from couplednoise.pipelines.lab.pipeline import LabPipeline, is_flow_matching, noise_level

# Call options that change the guided prediction in ways ``predict`` does not reproduce.
UNSUPPORTED_CALL_OPTIONS = ("guidance_rescale", "skip_guidance_layers", "timesteps", "sigmas")


@dataclass
class FirstStep:
    """``predict(z)``: guided x0 [B, C, h, w] float32 at the first step (autograd through it)."""

    predict: Callable[[torch.Tensor], torch.Tensor]
    timestep: float
    alpha: float
    sigma: float
    parameterisation: str
    guidance_scale: float
    device: torch.device


def tweedie_x0(
    output: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float, parameterisation: str
) -> torch.Tensor:
    """E[x0 | x] from a model output at x = alpha x0 + sigma eps (the inverse of lab's model_output)."""
    if parameterisation == "epsilon":
        return (x - sigma * output) / alpha
    if parameterisation == "v_prediction":
        return alpha * x - sigma * output
    if parameterisation == "flow":
        return x - sigma * output
    if parameterisation == "sample":
        return output
    raise ValueError(
        f"unknown parameterisation {parameterisation!r}; valid: epsilon, v_prediction, flow, sample"
    )


def denoising_network(pipe: Any) -> torch.nn.Module:
    """``pipe.unet`` or ``pipe.transformer`` (TypeError if it has neither)."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise TypeError(
        f"{type(pipe).__name__} has no differentiable denoiser (.unet or .transformer module) "
        "and is not the lab pipeline"
    )


def first_step(
    pipe: Any,
    prompt: str | Sequence[str],
    latents: torch.Tensor,
    *,
    num_images_per_prompt: int,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    negative_prompt: str | Sequence[str] | None = None,
    **pipe_kwargs: Any,
) -> FirstStep:
    """The first-step predictor for ``pipe`` called with these arguments (the sampling run's own).

    ``latents`` [num_prompts * num_images_per_prompt, C, h, w]: the unit-variance noise the run
    starts from. None of the keyword arguments means the pipeline's default.
    """
    unsupported = sorted(k for k in pipe_kwargs if k in UNSUPPORTED_CALL_OPTIONS)
    if unsupported:
        raise ValueError(
            f"{', '.join(unsupported)} not supported by the first-step prediction "
            "(it reproduces the plain classifier-free-guidance step)"
        )
    if isinstance(pipe, LabPipeline):
        if pipe_kwargs:
            raise ValueError(f"the lab pipeline takes no {', '.join(sorted(pipe_kwargs))}")
        return _lab_first_step(
            pipe,
            prompt,
            negative_prompt,
            num_images_per_prompt,
            num_inference_steps,
            guidance_scale,
        )
    call = {
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "negative_prompt": negative_prompt,
        **pipe_kwargs,
    }
    call = {k: v for k, v in call.items() if v is not None}
    return _diffusers_first_step(pipe, prompt, latents, num_images_per_prompt, call)


class _FirstDenoiserCall(Exception):
    """Raised by the recording hook to stop the pipeline before its first denoiser evaluation."""


def record_first_denoiser_call(
    pipe: Any, module: torch.nn.Module, **call: Any
) -> tuple[tuple, dict[str, Any]]:
    """(args, kwargs) of the pipeline's first ``module`` call; the call itself never runs."""
    record: dict[str, Any] = {}

    def hook(_module, args, kwargs):
        record["args"], record["kwargs"] = args, kwargs
        raise _FirstDenoiserCall

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        pipe(**call)
    except _FirstDenoiserCall:
        pass
    finally:
        handle.remove()
    if "args" not in record:
        raise RuntimeError(f"{type(pipe).__name__} returned without calling its denoiser")
    return record["args"], record["kwargs"]


def _model_input_scale(sample: torch.Tensor, latents: torch.Tensor, halves: int) -> float:
    """c_in with sample = [c_in z] * halves (CFG stacks two copies); ValueError if not so."""
    z = latents.to(sample.device, torch.float32)
    parts = sample.float().chunk(halves)
    scale = float((parts[0] * z).sum() / (z * z).sum())
    tolerance = 16 * torch.finfo(sample.dtype).eps * float(parts[0].abs().max())
    for part in parts:
        if float((part - scale * z).abs().max()) > tolerance:
            raise ValueError(
                "the pipeline's first denoiser input is not a fixed multiple of the given "
                "latents; cannot differentiate through its first step"
            )
    return scale


def _diffusers_first_step(pipe, prompt, latents, k: int, call: dict[str, Any]) -> FirstStep:
    module = denoising_network(pipe)
    args, kwargs = record_first_denoiser_call(
        pipe, module, prompt=prompt, num_images_per_prompt=k, latents=latents, **call
    )
    sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
    if not isinstance(sample, torch.Tensor):
        raise TypeError(f"cannot find the noisy input among {type(module).__name__}'s arguments")
    batch = latents.shape[0]
    if sample.shape[0] not in (batch, 2 * batch):
        raise ValueError(f"denoiser input batch {sample.shape[0]} is not {batch} or 2 x {batch}")
    guided = sample.shape[0] == 2 * batch
    guidance = float(pipe.guidance_scale) if guided else 1.0
    c_in = _model_input_scale(sample, latents, 2 if guided else 1)
    timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
    times = torch.as_tensor(timestep).flatten().double()
    if not bool((times == times[0]).all()):
        raise ValueError("the first denoiser call has different timesteps across the batch")
    t = float(times[0])
    alpha, sigma, parameterisation = noise_level(pipe.scheduler, t)
    if not is_flow_matching(pipe.scheduler):
        parameterisation = pipe.scheduler.config.prediction_type

    def call_denoiser(x: torch.Tensor) -> torch.Tensor:
        if args:
            out = module(x, *args[1:], **kwargs)
        else:
            key = "sample" if "sample" in kwargs else "hidden_states"
            out = module(*args, **{**kwargs, key: x})
        return out[0] if isinstance(out, tuple) else out.sample

    def predict(z: torch.Tensor) -> torch.Tensor:
        x = c_in * z.to(sample.device, torch.float32)
        model_input = x.to(sample.dtype)
        output = call_denoiser(torch.cat([model_input] * 2) if guided else model_input).float()
        if guided:
            uncond, cond = output.chunk(2)
            output = uncond + guidance * (cond - uncond)
        return tweedie_x0(output, x, alpha, sigma, parameterisation)

    return FirstStep(predict, t, alpha, sigma, parameterisation, guidance, sample.device)


def _lab_first_step(
    pipe: LabPipeline, prompt, negative_prompt, k: int, steps: int | None, guidance: float | None
) -> FirstStep:
    steps = 20 if steps is None else steps  # LabPipeline.__call__'s defaults
    guidance = 1.0 if guidance is None else float(guidance)
    prompts, negatives = pipe.check_request(prompt, negative_prompt, k, steps)
    scheduler = copy.deepcopy(pipe.scheduler)  # the pipeline's own scheduler stays untouched
    scheduler.set_timesteps(steps, device=pipe.device)
    t0 = scheduler.timesteps[0]
    alpha, sigma, parameterisation = noise_level(scheduler, float(t0))
    init = float(getattr(scheduler, "init_noise_sigma", 1.0))
    scale = getattr(scheduler, "scale_model_input", None)

    def predict(z: torch.Tensor) -> torch.Tensor:
        x = z.to(pipe.device, pipe.dtype) * init
        x = x if scale is None else scale(x, t0)
        return pipe.predict_x0(x, alpha, sigma, prompts, negatives, guidance).float()

    return FirstStep(predict, float(t0), alpha, sigma, parameterisation, guidance, pipe.device)
