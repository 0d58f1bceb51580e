"""The seam: a pipeline's own initial noise draw, served from a coupling.

    with couplednoise.coupled(pipe, "repulsive", num_prompts=2, generator=g) as seam:
        images = pipe(["a cat", "a dog"], num_images_per_prompt=4).images
    seam.noise   # [8, *shape] float32: what the pipeline received (before packing / scaling)

diffusers pipelines draw their initial noise with ``randn_tensor``, which every pipeline module
binds by name (``from ...utils.torch_utils import randn_tensor``). The seam replaces that binding,
in the modules of the pipeline's classes (found through ``type(pipe).__mro__``, by attribute; no
diffusers import), with a dispatcher: installed once per module, for good. The dispatcher passes
every draw through to diffusers' function unchanged unless a seam is active in the current
context (a ``ContextVar``: each thread and each asyncio task has its own) and the draw is the
pipeline's initial one: the first that the seam's own pipeline object makes in ``prepare_latents``
(or in ``__call__``, for pipelines that have no ``prepare_latents``). That draw is served coupled:
[P * K, *shape], one coupled group of K per prompt (prompt-major, as diffusers orders its batch;
a video is one sample), drawn in float32 on the generator's device and cast to exactly the device
and dtype asked for. The pipeline then packs (FLUX, LTX), scales (init_noise_sigma) or noises an
image with it (img2img, inpainting: the coupled tensor is the noise added to the image latents).

Every other draw is the pipeline's own: schedulers bind ``randn_tensor`` in their own modules,
which are never touched (ancestral / SDE steps), VAE sampling lives in the model modules, and
later draws of the pipeline (a second prepare_latents, decode noise) pass through.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from couplednoise.base import Coupling, GeneratorArg, check_count
from couplednoise.grouped import sample_groups
from couplednoise.pipeline_shapes import UnsupportedPipelineError, function_source, pipeline_name
from couplednoise.spec import get_coupling

# The seams active in this context, innermost last. A ContextVar: threads start empty.
_ACTIVE: contextvars.ContextVar[tuple[NoiseSeam, ...]] = contextvars.ContextVar(
    "couplednoise_seams", default=()
)
_INSTALL_LOCK = threading.Lock()
_DISPATCH_MARK = "__couplednoise_dispatch__"
# Functions whose first draw is a pipeline's initial noise: prepare_latents, DeepFloyd IF's
# prepare_intermediate_images (pixel space), the helper diffusers' FreeNoise draws it in.
INITIAL_DRAW_FUNCTIONS = (
    "prepare_latents",
    "prepare_intermediate_images",
    "_prepare_latents_free_noise",
)


@dataclass(eq=False)
class NoiseSeam:
    """One active seam: serves ``pipe``'s initial draw from ``coupling``.

    ``num_per_prompt`` None: K = batch // num_prompts, read from the draw. After the draw,
    ``noise`` is the coupled float32 batch [P * K, *shape] on the generator's device, ``shape``
    the shape the pipeline asked for and ``drawn_in`` the qualified name of the function that drew.
    """

    pipe: Any
    coupling: Coupling
    num_prompts: int
    num_per_prompt: int | None
    generator: GeneratorArg
    draw_functions: tuple[str, ...]
    noise: torch.Tensor | None = None
    shape: tuple[int, ...] | None = None
    drawn_in: str | None = None

    def claims(self, frame) -> bool:
        """Whether a draw made from ``frame`` is this seam's pipeline's initial draw."""
        if self.noise is not None or frame.f_code.co_name not in self.draw_functions:
            return False
        return frame.f_locals.get("self") is self.pipe

    def serve(self, frame, shape, device, dtype, layout) -> torch.Tensor:
        """The coupled draw for ``shape``, on ``device`` in ``dtype`` (diffusers' defaults)."""
        shape = tuple(int(s) for s in shape)
        if layout not in (None, torch.strided):
            raise UnsupportedPipelineError(
                f"{pipeline_name(self.pipe)} asked for noise in layout {layout}; only strided "
                "tensors can be coupled"
            )
        k = self._group_size(shape)
        self.noise = sample_groups(
            self.coupling, self.num_prompts, k, shape[1:], generator=self.generator
        )
        self.shape = shape
        self.drawn_in = f"{type(self.pipe).__name__}.{frame.f_code.co_name}"
        device = torch.device(device) if device is not None else torch.device("cpu")
        return self.noise.to(device=device, dtype=dtype or torch.float32)

    def _group_size(self, shape: tuple[int, ...]) -> int:
        batch, p = shape[0], self.num_prompts
        k = self.num_per_prompt
        expected = f"{p} prompt(s) x {k} per prompt = {p * k}" if k else f"a multiple of {p}"
        if (k is not None and batch != p * k) or batch % p:
            raise ValueError(
                f"{pipeline_name(self.pipe)} drew initial noise of shape {shape}, a batch of "
                f"{batch}, but the coupling was set up for {expected}: it cannot be split into "
                "one coupled group per prompt (does this pipeline make one output per prompt "
                "whatever num_images_per_prompt says? then repeat each prompt K times)"
            )
        return batch // p


def _dispatcher(original):
    """A drop-in for diffusers' ``randn_tensor`` that serves the active seams' initial draws."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def randn_tensor(shape, *args, **kwargs):
        seams = _ACTIVE.get()
        if seams:
            frame = sys._getframe(1)  # the function that drew: prepare_latents / __call__
            for seam in reversed(seams):
                if seam.claims(frame):
                    bound = signature.bind(shape, *args, **kwargs).arguments
                    return seam.serve(
                        frame, shape, bound.get("device"), bound.get("dtype"), bound.get("layout")
                    )
        return original(shape, *args, **kwargs)

    setattr(randn_tensor, _DISPATCH_MARK, True)
    return randn_tensor


def pipeline_modules(pipe: Any) -> list[Any]:
    """The modules of ``pipe``'s classes (its MRO) that bind a ``randn_tensor`` function."""
    modules = []
    for cls in type(pipe).__mro__:
        module = sys.modules.get(cls.__module__)
        if callable(getattr(module, "randn_tensor", None)) and module not in modules:
            modules.append(module)
    return modules


def install_dispatch(pipe: Any) -> list[Any]:
    """Put the dispatcher in place of ``randn_tensor`` in ``pipe``'s modules (once per module)."""
    modules = pipeline_modules(pipe)
    if not modules:
        raise UnsupportedPipelineError(
            f"{pipeline_name(pipe)} does not draw its noise with diffusers' randn_tensor (no "
            "module of its class binds it), so its initial draw cannot be coupled; if it takes "
            "latents=, pass coupled latents yourself: couplednoise.latents_for(pipe, ...), or "
            "couplednoise.sample_groups(coupling, num_prompts, K, latent_shape)"
        )
    with _INSTALL_LOCK:
        for module in modules:
            if not getattr(module.randn_tensor, _DISPATCH_MARK, False):
                module.randn_tensor = _dispatcher(module.randn_tensor)
    return modules


def initial_draw_functions(pipe: Any) -> tuple[str, ...]:
    """Names of the functions whose first draw is the initial noise of ``pipe``.

    Those of INITIAL_DRAW_FUNCTIONS the pipeline has, else ``__call__`` (DDPM, LDM, DiT, the lab
    pipeline draw there). UnsupportedPipelineError, before anything runs, when their source shows
    no randn_tensor call (LTX's latent upsampler, windowed samplers): nothing to couple.
    """
    cls = type(pipe)
    names = tuple(n for n in INITIAL_DRAW_FUNCTIONS if callable(getattr(cls, n, None)))
    names = names or ("__call__",)
    sources = [function_source(cls, name) for name in names]
    if None in sources:  # no source to read: rely on the check after the call
        return names
    if not any("randn_tensor(" in source for source in sources):
        raise UnsupportedPipelineError(
            f"{pipeline_name(pipe)}.{names[0]} draws no noise with randn_tensor (it upsamples, "
            "inverts, or draws elsewhere), so there is no initial draw to couple; if it takes "
            "latents=, pass your own: couplednoise.sample_groups(coupling, num_prompts, K, shape)"
        )
    return names


@contextlib.contextmanager
def coupled(
    pipe: Any,
    coupling: Coupling | str,
    *,
    num_prompts: int = 1,
    num_per_prompt: int | None = None,
    generator: GeneratorArg = None,
) -> Iterator[NoiseSeam]:
    """Inside the block, ``pipe``'s initial noise draw comes from ``coupling``.

    One coupled group per prompt: the pipeline's batch of B = P * K is split prompt-major into
    P = ``num_prompts`` groups of K (``num_per_prompt``, or B // P when None). ``generator``: one
    torch.Generator (groups drawn in order) or one per prompt, as ``latents_for`` takes; the
    pipeline's own ``generator=`` argument keeps driving its other draws. Only the first initial
    draw of this pipeline object in this thread / task is coupled. Leaving the block without an
    error when no draw was coupled (given ``latents=``, a refiner hand-off) raises
    UnsupportedPipelineError: the result was not coupled.
    """
    coupling = get_coupling(coupling)
    num_prompts = check_count(num_prompts, "num_prompts")
    if num_per_prompt is not None:
        num_per_prompt = check_count(num_per_prompt, "num_per_prompt")
    generator = check_prompt_generators(generator, num_prompts)
    install_dispatch(pipe)
    seam = NoiseSeam(
        pipe, coupling, num_prompts, num_per_prompt, generator, initial_draw_functions(pipe)
    )
    token = _ACTIVE.set((*_ACTIVE.get(), seam))
    try:
        yield seam
    finally:
        _ACTIVE.reset(token)
    if seam.noise is None:
        raise UnsupportedPipelineError(
            f"{pipeline_name(pipe)} drew no initial noise inside the coupled block (functions "
            f"{', '.join(seam.draw_functions)} of this pipeline object, this thread), so nothing "
            "was coupled: were latents= given, or a refiner continuing from denoising_start? "
            "Couple the call that draws the noise"
        )


def check_prompt_generators(generator: Any, num_prompts: int) -> GeneratorArg:
    """``generator`` as None, one torch.Generator or a list of one per prompt; else a clear error."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)) and all(
        isinstance(g, torch.Generator) for g in generator
    ):
        if len(generator) != num_prompts:
            raise ValueError(
                f"got {len(generator)} generators for {num_prompts} prompt(s): pass one "
                "torch.Generator, or a list with one per prompt (each prompt's gallery is drawn "
                "jointly from its own generator)"
            )
        return list(generator)
    raise TypeError(
        "generator must be a torch.Generator or a list of them (one per prompt), got "
        f"{type(generator).__name__} {generator!r:.40}; e.g. torch.Generator('cpu').manual_seed(0)"
    )
