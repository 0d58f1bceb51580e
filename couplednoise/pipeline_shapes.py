"""The latent shape a diffusers pipeline will draw, read from the pipeline object by attribute.

Used by ``latents_for`` / ``check_latents`` (the explicit ``pipe(latents=...)`` style) and by
``generate`` to check a request before any network runs. ``generate`` itself does not depend on it:
the seam (``couplednoise.seam``) hands the pipeline noise of exactly the shape it asks for.

Nothing here imports diffusers. What is read, per pipeline:
- channels: the denoiser's ``config.in_channels`` (``pipe.unet`` or ``pipe.transformer``), or the
  VAE's ``latent_channels`` when smaller (inpainting UNets, FLUX's packed input);
- the scale factor ``pipe.vae_scale_factor`` (Kandinsky 2.x: ``movq_scale_factor`` with the
  pipeline module's own ``downscale_height_and_width``);
- the default size: the ``height`` / ``width`` defaults of the pipeline's ``__call__`` signature
  (AuraFlow, Sana, Kandinsky: 1024 / 512), else ``default_sample_size`` or the denoiser's
  ``config.sample_size``, times the scale factor, as the pipelines compute it;
- the size rules a pipeline applies to the requested size: resolution binning (PixArt, Sana,
  HunyuanDiT; the bins are read from the pipeline's module and classified with its own image
  processor) and FLUX Kontext's ``max_area``.
Pipelines whose latent shape follows something else (an input image or video, frames, a rule not
modelled here) are refused with ``UnsupportedPipelineError``, naming the reason and the fix: never
a guessed shape.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

SEAM_FIX = (
    "use couplednoise.generate(pipe, prompt, coupling, ...) or "
    "`with couplednoise.coupled(pipe, coupling, num_prompts=...): pipe(...)`, which couple the "
    "pipeline's own noise draw at exactly the shape it asks for"
)

# Resolution binning: transformer.config.sample_size -> the name of the bin table the pipeline's
# __call__ picks (copied from each __call__; the tables themselves are read from its module).
_PIXART_SIGMA_BINS = {
    256: "ASPECT_RATIO_2048_BIN",
    128: "ASPECT_RATIO_1024_BIN",
    64: "ASPECT_RATIO_512_BIN",
    32: "ASPECT_RATIO_256_BIN",
}
_SANA_BINS = {
    128: "ASPECT_RATIO_4096_BIN",
    64: "ASPECT_RATIO_2048_BIN",
    32: "ASPECT_RATIO_1024_BIN",
    16: "ASPECT_RATIO_512_BIN",
}
ASPECT_RATIO_BINS: dict[str, dict[int, str]] = {
    "PixArtAlphaPipeline": {
        128: "ASPECT_RATIO_1024_BIN",
        64: "ASPECT_RATIO_512_BIN",
        32: "ASPECT_RATIO_256_BIN",
    },
    "PixArtSigmaPipeline": _PIXART_SIGMA_BINS,
    "PixArtSigmaPAGPipeline": _PIXART_SIGMA_BINS,
    "SanaPipeline": _SANA_BINS,
    "SanaPAGPipeline": _SANA_BINS,
    "SanaControlNetPipeline": _SANA_BINS,
    "SanaSprintPipeline": {32: "ASPECT_RATIO_1024_BIN"},
}
# HunyuanDiT: sizes floored to 16, then mapped to its standard shapes (module functions).
STANDARD_SHAPE_PIPELINES = {
    "HunyuanDiTPipeline",
    "HunyuanDiTPAGPipeline",
    "HunyuanDiTControlNetPipeline",
}
MAX_AREA_PIPELINES = {"FluxKontextPipeline"}


class UnsupportedPipelineError(TypeError, ValueError):
    """This pipeline (or this use of it) cannot be coupled the way that was asked.

    A TypeError (the wrong kind of pipeline for the call) and a ValueError (so command-line tools
    report it as a user error). The message names the pipeline, the reason and the fix.
    """


@dataclass(frozen=True)
class LatentLayout:
    """Where a pipeline's initial noise lives for one request.

    ``grid`` (C, h, w) is the latent image the noise is drawn on; ``packed`` pipelines (FLUX)
    take it as [(h/2)(w/2), 4C] tokens; ``size`` is the (height, width) in pixels the latents are
    rendered at (after binning / max_area, before any resize back).
    """

    grid: tuple[int, int, int]
    packed: bool
    size: tuple[int, int]

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-sample shape of ``latents=``: [C, h, w], or [(h/2)(w/2), 4C] when packed."""
        c, h, w = self.grid
        return ((h // 2) * (w // 2), 4 * c) if self.packed else (c, h, w)


def pipeline_name(pipe: Any) -> str:
    return type(pipe).__name__


def class_names(pipe: Any) -> list[str]:
    """Names of the pipeline's classes, most derived first (a subclass keeps its base's rules)."""
    return [cls.__name__ for cls in type(pipe).__mro__]


def pipeline_module(pipe: Any, owner_names: set[str] | dict) -> Any:
    """The module defining the first class of ``pipe``'s MRO named in ``owner_names``."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in owner_names:
            return sys.modules[cls.__module__]
    raise KeyError(owner_names)


def call_parameters(pipe: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``pipe.__call__`` (empty when it has no inspectable signature)."""
    return _class_call_parameters(type(pipe))


@functools.cache
def _class_call_parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    try:
        parameters = dict(inspect.signature(cls.__call__).parameters)
    except (TypeError, ValueError):
        return {}
    parameters.pop(next(iter(parameters), None), None)  # self
    return types.MappingProxyType(parameters)


@functools.cache
def function_source(cls: type, name: str) -> str | None:
    """The source of ``cls.name`` (cached per class: reading it takes milliseconds), or None."""
    try:
        return inspect.getsource(getattr(cls, name))
    except (AttributeError, OSError, TypeError):
        return None


def call_default(pipe: Any, name: str) -> Any:
    """The default of ``pipe.__call__``'s parameter ``name``, or None."""
    parameter = call_parameters(pipe).get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def _call_value(pipe: Any, call: Mapping[str, Any], name: str) -> Any:
    """The value ``name`` has in this call: given in ``call``, else the pipeline's default."""
    return call[name] if call.get(name) is not None else call_default(pipe, name)


def _config(module: Any) -> Any:
    return getattr(module, "config", None)


def denoiser(pipe: Any) -> Any:
    """The pipeline's denoising network: ``pipe.unet`` or ``pipe.transformer``."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    raise UnsupportedPipelineError(
        f"{pipeline_name(pipe)} has neither .unet nor .transformer, so its latents cannot be "
        f"sized from its denoiser; {SEAM_FIX}"
    )


def _denoiser_config(pipe: Any) -> Any:
    config = _config(denoiser(pipe))
    if getattr(config, "in_channels", None) is None:
        raise UnsupportedPipelineError(
            f"{pipeline_name(pipe)}: its denoiser has no config.in_channels, so its latent "
            f"channels are unknown; {SEAM_FIX}"
        )
    return config


def is_packed(pipe: Any) -> bool:
    """Whether the pipeline takes FLUX-style packed 2-D latent tokens [B, (h/2)(w/2), 4C]."""
    return callable(getattr(pipe, "_pack_latents", None)) and not _is_video(pipe)


def _is_video(pipe: Any) -> bool:
    patch = getattr(_config(getattr(pipe, "transformer", None)), "patch_size", None)
    return "num_frames" in call_parameters(pipe) or isinstance(patch, (tuple, list))


def latent_channels(pipe: Any) -> int:
    """Channels of the noise the pipeline starts from (4 for SD1.5 / SDXL, 16 for SD3 / FLUX)."""
    channels = int(_denoiser_config(pipe).in_channels)
    autoencoder = getattr(pipe, "vae", None) or getattr(pipe, "movq", None)
    vae_channels = getattr(_config(autoencoder), "latent_channels", None)
    if vae_channels is not None and int(vae_channels) < channels:
        return int(vae_channels)  # denoiser input = latents + conditioning (inpaint) or packed
    if is_packed(pipe):
        return channels // 4
    return channels


def _movq_downscale(pipe: Any):
    """Kandinsky 2.x's own ``downscale_height_and_width`` (its module), or None."""
    if getattr(pipe, "movq_scale_factor", None) is None:
        return None
    return getattr(sys.modules.get(type(pipe).__module__), "downscale_height_and_width", None)


def scale_factor(pipe: Any) -> int:
    """Pixels per latent pixel (``pipe.vae_scale_factor``; 8 for SD1.5 / SDXL / SD3)."""
    factor = getattr(pipe, "vae_scale_factor", None)
    if factor is None:
        factor = getattr(pipe, "movq_scale_factor", None) if _movq_downscale(pipe) else None
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise UnsupportedPipelineError(
            f"{pipeline_name(pipe)} has no integer vae_scale_factor (got {factor!r}), so its "
            f"latent size is unknown; {SEAM_FIX}"
        )
    return factor


def _as_pair(size: Any) -> tuple[int, int] | None:
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return int(size[0]), int(size[1])
    return None


def default_size(pipe: Any) -> tuple[int, int]:
    """(height, width) in pixels the pipeline is asked for when none is given (before binning)."""
    signature = (call_default(pipe, "height"), call_default(pipe, "width"))
    if all(isinstance(s, int) and not isinstance(s, bool) for s in signature):
        return signature
    f = scale_factor(pipe)
    size = _as_pair(getattr(pipe, "default_sample_size", None))
    if size is None:
        size = _as_pair(getattr(_denoiser_config(pipe), "sample_size", None))
    if size is None:
        raise UnsupportedPipelineError(
            f"{pipeline_name(pipe)} has no default size (no height/width defaults, "
            "default_sample_size or denoiser config.sample_size): pass height= and width="
        )
    return size[0] * f, size[1] * f


def size_multiple(pipe: Any) -> int:
    """Height and width must be multiples of this (scale factor x patch size)."""
    if _movq_downscale(pipe) is not None:
        return scale_factor(pipe)  # Kandinsky rounds up to scale_factor**2 itself
    patch = 2 if is_packed(pipe) else getattr(_denoiser_config(pipe), "patch_size", None) or 1
    return scale_factor(pipe) * int(patch)


def refusal(pipe: Any, call: Mapping[str, Any]) -> str | None:
    """Why latents_for cannot size ``pipe``'s latents for ``call`` (its keyword arguments), or None."""
    params = call_parameters(pipe)
    names = class_names(pipe)
    if any(getattr(pipe, name, None) is not None for name in ("prior_pipe", "decoder_pipe")):
        return "it runs a prior and a decoder (two stages, two initial draws)"
    if "strength" in params:
        return (
            "it is image-conditioned: its latents= are the already-noised image latents, so raw "
            "coupled noise would ignore the input image (couple the noise added to the image)"
        )
    if _is_video(pipe):
        return "it makes video, whose latent frames follow num_frames and the VAE's compression"
    if "height" not in params and ("image" in params or "video" in params):
        return "its latent size follows its input image, not a height and width"
    binning = "use_resolution_binning" in params and _call_value(
        pipe, call, "use_resolution_binning"
    )
    if binning and not (ASPECT_RATIO_BINS.keys() | STANDARD_SHAPE_PIPELINES).intersection(names):
        return (
            "it bins resolutions by a rule latents_for does not know (pass "
            "use_resolution_binning=False to latents_for and to the pipeline)"
        )
    if "max_area" in params and not MAX_AREA_PIPELINES.intersection(names):
        return "it rescales the requested size to a max_area by a rule latents_for does not know"
    return None


def _check_side(pipe: Any, name: str, value: Any, multiple: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < multiple:
        raise ValueError(f"{name} must be an int >= {multiple}, got {value!r}")
    if value % multiple:
        raise ValueError(
            f"{name}={value} is not a multiple of {multiple} "
            f"(vae_scale_factor x patch size of {pipeline_name(pipe)})"
        )
    return value


def _binned(pipe: Any, height: int, width: int, call: Mapping[str, Any]) -> tuple[int, int]:
    """The size after the pipeline's resolution binning / max_area rule (unchanged if none)."""
    names = class_names(pipe)
    binning = _call_value(pipe, call, "use_resolution_binning")
    owner = next((n for n in names if n in ASPECT_RATIO_BINS), None)
    if binning and owner is not None:
        sample_size = getattr(_denoiser_config(pipe), "sample_size", None)
        table = ASPECT_RATIO_BINS[owner].get(sample_size)
        if table is None:
            raise ValueError(
                f"{pipeline_name(pipe)} bins resolutions only for transformer sample_size in "
                f"{sorted(ASPECT_RATIO_BINS[owner])} (this one has {sample_size!r}; the pipeline "
                "itself fails): pass use_resolution_binning=False to latents_for and the pipeline"
            )
        bins = getattr(pipeline_module(pipe, ASPECT_RATIO_BINS), table)
        h, w = pipe.image_processor.classify_height_width_bin(height, width, ratios=bins)
        return int(h), int(w)
    if binning and STANDARD_SHAPE_PIPELINES.intersection(names):
        module = pipeline_module(pipe, STANDARD_SHAPE_PIPELINES)
        height, width = height // 16 * 16, width // 16 * 16
        if (height, width) not in module.SUPPORTED_SHAPE:
            width, height = module.map_to_standard_shapes(width, height)
        return int(height), int(width)
    if STANDARD_SHAPE_PIPELINES.intersection(names):
        return height // 16 * 16, width // 16 * 16
    if MAX_AREA_PIPELINES.intersection(names):  # FluxKontextPipeline.__call__, step 1
        max_area = _call_value(pipe, call, "max_area")
        if isinstance(max_area, bool) or not isinstance(max_area, int) or max_area < 1:
            raise ValueError(f"max_area must be a positive int, got {max_area!r}")
        aspect = width / height
        multiple = scale_factor(pipe) * 2
        width = round((max_area * aspect) ** 0.5) // multiple * multiple
        height = round((max_area / aspect) ** 0.5) // multiple * multiple
        return height, width
    return height, width


def latent_layout(
    pipe: Any, height: int | None = None, width: int | None = None, **call: Any
) -> LatentLayout:
    """The layout of ``pipe``'s latents for a call with ``height``, ``width`` and ``call``.

    ``call`` holds the other size-related arguments the pipeline will get
    (``use_resolution_binning``, ``max_area``). UnsupportedPipelineError where the shape cannot
    be known without running the pipeline; ValueError for a size the pipeline cannot take.
    """
    reason = refusal(pipe, call)
    if reason is not None:
        raise UnsupportedPipelineError(
            f"latents_for cannot size the latents of {pipeline_name(pipe)}: {reason}; {SEAM_FIX}"
        )
    default_h, default_w = default_size(pipe)
    names = class_names(pipe)
    ruled = ASPECT_RATIO_BINS.keys() | STANDARD_SHAPE_PIPELINES | MAX_AREA_PIPELINES
    # Sizes the pipeline rewrites itself (binning, max_area) need only be positive ints.
    multiple = 1 if ruled.intersection(names) else size_multiple(pipe)
    height = _check_side(pipe, "height", default_h if height is None else height, multiple)
    width = _check_side(pipe, "width", default_w if width is None else width, multiple)
    height, width = _binned(pipe, height, width, call)
    f = scale_factor(pipe)
    downscale = _movq_downscale(pipe)
    if downscale is not None:
        h, w = downscale(height, width, f)
        height, width = int(h) * f, int(w) * f
    else:
        _check_side(pipe, "height", height, size_multiple(pipe))
        _check_side(pipe, "width", width, size_multiple(pipe))
        h, w = height // f, width // f
    return LatentLayout((latent_channels(pipe), int(h), int(w)), is_packed(pipe), (height, width))


def pipeline_device_dtype(pipe: Any) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype the pipeline runs its denoiser."""
    module = denoiser(pipe)
    parameters = getattr(module, "parameters", None)
    parameter = next(parameters(), None) if callable(parameters) else None
    dtype = getattr(module, "dtype", None) or getattr(parameter, "dtype", None)
    # The denoiser's device (cheap), not diffusers' _execution_device, which walks every module
    # (4 ms on a tiny pipeline). Under CPU offload the pipeline moves latents to its execution
    # device itself (prepare_latents: latents.to(device)).
    device = (
        getattr(module, "device", None)
        or getattr(parameter, "device", None)
        or getattr(pipe, "device", None)
    )
    return torch.device(device or "cpu"), dtype or torch.float32
