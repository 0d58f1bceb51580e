"""Independent vs coupled galleries from one seed, scored the same way: the engine behind
`couplednoise demo` (many prompts and seeds, a table with paired intervals) and the web demo
(one request, ``comparison.py``).

    models = Models(["lab", "/models/sd15"])          # offered models, loaded lazily, cached
    with models.lease("lab") as pipe:                 # one generation at a time per pipeline
        galleries = draw_galleries(pipe, "a circle", [Independent(), Repulsive()],
                                   num_images=8, seed=0, settings={"num_inference_steps": 20})
    scores = score_gallery(galleries[1].images, "a circle", pipe)   # metrics + ground truth

Every gallery of one call is drawn from the same seed, so galleries differ only by the coupling.
Scores are the eval module's diversity metrics (plus CLIP ones when a CLIP backbone is given) and,
on the closed-form lab, the ground-truth readout (alignment, scene and attribute coverage, and the
fixed-object readout against a reference scene).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from couplednoise import Coupling, default_size, get_coupling, parse_spec, size_multiple
from couplednoise.eval.backbones.loading import Backbones
from couplednoise.eval.metrics.registry import gallery_metrics
from couplednoise.pipelines.builtin import model_defaults
from couplednoise.pipelines.generation import Gallery, generate_gallery
from couplednoise.pipelines.lab import LabPipeline, parse_lab_spec
from couplednoise.pipelines.lab.world import SIZES as LAB_SIZES
from couplednoise.pipelines.loading import check_model, is_lab, load_pipeline

LAB = "lab"
LAB_SIZE_RANGE = (LAB_SIZES[0], LAB_SIZES[-1], LAB_SIZES[1] - LAB_SIZES[0], LAB_SIZES[0])
REFERENCE_SEED_OFFSET = 10_000  # the fixed-object reference noise: a seed apart from the galleries'

__all__ = [
    "LAB",
    "LAB_SIZE_RANGE",
    "Models",
    "Reference",
    "best_device",
    "build_coupling",
    "draw_galleries",
    "fixed_object_reference",
    "model_defaults",
    "pipeline_spec",
    "score_gallery",
    "size_range",
]


def pipeline_spec(model: str, size: int | None) -> str:
    """The model to load for ``size``: a lab world is rendered at one size, so the lab model at
    another size is another pipeline ("lab:size=64"); any other model is loaded as named."""
    if not is_lab(model) or size is None:
        return model
    options = parse_lab_spec(model)
    if size not in LAB_SIZES:
        raise ValueError(
            f"the lab model renders {' or '.join(map(str, LAB_SIZES))} pixels, got {size}"
        )
    options["size"] = size
    return "lab:" + ",".join(f"{k}={v}" for k, v in options.items())


def size_range(pipe: Any, max_size: int) -> tuple[int, int, int, int]:
    """(smallest, largest, step, default) square side in pixels the model can render here.

    Lab: its world sizes. Other models: half to 1.5 times their default size, in multiples of
    the latent grid (vae_scale_factor x patch size), capped at ``max_size``.
    """
    if isinstance(pipe, LabPipeline):
        return (*LAB_SIZE_RANGE[:3], pipe.world.size)
    step = size_multiple(pipe)
    default = min(default_size(pipe))
    low = max(step, default // 2 // step * step)
    high = max(low, min(max_size, default * 3 // 2) // step * step)
    return low, high, step, min(max(default, low), high)


def best_device() -> tuple[torch.device, torch.dtype | None]:
    """CUDA, else Apple MPS (fp16), else CPU; None = the loader's default dtype for the device."""
    if torch.cuda.is_available():
        return torch.device("cuda"), None
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps"), torch.float16
    return torch.device("cpu"), None


class Models:
    """The models a demo offers: the lab always, plus the ones its operator named.

    Names are checked when the demo starts (config files only): one that cannot load is left out
    with its reason in ``skipped``, so the demo still starts with the rest. Models load on first
    use and are cached on the best device; ``get`` refuses any model that was not offered, so a
    browser can never make the server load a path or hub id. A cached pipeline holds mutable
    state (its scheduler's timesteps), so ``lease`` hands it to one generation at a time.
    """

    def __init__(self, names: Sequence[str] = (), *, device=None, dtype=None):
        self.names: list[str] = [LAB]
        self.skipped: dict[str, str] = {}
        for name in dict.fromkeys(names):
            if name in self.names:
                continue
            try:
                check_model(name, local_files_only=True)
            except ValueError as error:
                self.skipped[name] = str(error)
                continue
            self.names.append(name)
        auto_device, auto_dtype = best_device()
        self.device = torch.device(device) if device is not None else auto_device
        self.dtype = dtype if device is not None else auto_dtype
        self._cache: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def check(self, model: str) -> None:
        if model not in self.names:
            raise ValueError(f"model {model!r} is not offered here; choose one of {self.names}")

    def get(self, model: str, size: int | None = None) -> Any:
        """The loaded pipeline for ``model`` (at ``size`` for the lab), loading it on first use.
        Generate with it only inside ``lease``."""
        self.check(model)
        spec = pipeline_spec(model, size)
        with self._lock:
            if spec not in self._cache:
                dtype = torch.float32 if is_lab(spec) else self.dtype
                pipe = load_pipeline(spec, device=self.device, dtype=dtype, local_files_only=True)
                if hasattr(pipe, "set_progress_bar_config"):
                    pipe.set_progress_bar_config(leave=False)
                self._cache[spec] = pipe
                self._locks[spec] = threading.Lock()
            return self._cache[spec]

    @contextlib.contextmanager
    def lease(self, model: str, size: int | None = None) -> Iterator[Any]:
        """The pipeline, held by this caller alone until the block ends."""
        pipe = self.get(model, size)
        with self._locks[pipeline_spec(model, size)]:
            yield pipe


def build_coupling(
    spec: str,
    *,
    mask: torch.Tensor | None = None,
    shared: torch.Tensor | None = None,
    correlation: torch.Tensor | None = None,
) -> Coupling:
    """The coupling for ``spec``; a subspace spec without ``band=`` takes ``mask`` (and
    ``shared``), a gaussian one takes ``correlation``. ValueError when those are missing."""
    name, params = parse_spec(spec)
    if name == "subspace" and "band" not in params:
        if mask is None:
            raise ValueError(f"{spec!r} shares a region: give a mask (or a band= parameter)")
        return get_coupling(spec, mask=mask, shared=shared)
    if name == "gaussian":
        if correlation is None:
            raise ValueError("gaussian coupling needs a correlation matrix")
        return get_coupling(spec, correlation_matrix=correlation)
    return get_coupling(spec)


def draw_galleries(
    pipe: Any,
    prompt: str,
    couplings: Sequence[Coupling],
    *,
    num_images: int,
    seed: int,
    settings: dict[str, Any],
) -> list[Gallery]:
    """One gallery per coupling, all from ``seed``: they differ only by the coupling.

    ``settings``: generate_gallery's keywords (num_inference_steps, guidance_scale, ...).
    """
    return [
        generate_gallery(pipe, prompt, coupling, num_images=num_images, seed=seed, **settings)
        for coupling in couplings
    ]


@dataclasses.dataclass(frozen=True, eq=False)
class Reference:
    """The fixed-object task's reference: the shared region ``mask`` {0, 1} [H, W], the reference
    noise ``shared`` [C, h, w] and, on the lab, the scene it generates (ground truth)."""

    mask: torch.Tensor
    shared: torch.Tensor
    scene: int | None


def fixed_object_reference(
    pipe: Any, prompt: str, seed: int, settings: dict[str, Any]
) -> Reference:
    """A reference noise z0 (seeded by ``seed``, drawn like any latent) that the subspace
    coupling shares inside the mask, so z0 is itself a member of the gallery's law and marginals
    stay exactly N(0, I). Lab: the mask is the object of the scene z0 generates. Checkpoint: a
    central box over the middle half of the image."""
    from couplednoise import latents_for

    generator = torch.Generator("cpu").manual_seed(REFERENCE_SEED_OFFSET + seed)
    z0 = latents_for(pipe, "independent", num_images_per_prompt=1, generator=generator)
    if isinstance(pipe, LabPipeline):
        from couplednoise.pipelines.lab.readout import nearest_scenes

        image = pipe(prompt, latents=z0, output_type="pt", **settings).images
        scene = int(nearest_scenes(image, pipe.world)[0][0])
        return Reference(pipe.world.object_mask(scene), z0[0].float().cpu(), scene)
    h, w = z0.shape[-2:]
    mask = torch.zeros(h, w)
    mask[h // 4 : h - h // 4, w // 4 : w - w // 4] = 1
    return Reference(mask, z0[0].float().cpu(), None)


def score_gallery(
    images: torch.Tensor,
    prompt: str,
    pipe: Any,
    *,
    backbones: Backbones | None = None,
    reference: Reference | None = None,
) -> dict[str, float]:
    """Every metric the backbones allow (``gallery_metrics``) and, on the lab, the ground truth:
    alignment, scenes, scene_cov, attr_cov and, with a reference scene, object_kept,
    kept_new_background and backgrounds."""
    scores = gallery_metrics(images, backbones=backbones or Backbones(), prompt=prompt)
    if isinstance(pipe, LabPipeline):
        from couplednoise.pipelines.lab.readout import fixed_object_readout, gallery_readout

        readout = gallery_readout(images, prompt, pipe.world).summary()
        scores.update({k: readout[k] for k in ("alignment", "scenes", "scene_cov", "attr_cov")})
        if reference is not None and reference.scene is not None:
            fixed = fixed_object_readout(images, pipe.world, reference.scene)
            scores["object_kept"] = fixed.object_kept
            scores["kept_new_background"] = fixed.kept_on_new_background
            scores["backgrounds"] = float(fixed.distinct_backgrounds)
    return scores
