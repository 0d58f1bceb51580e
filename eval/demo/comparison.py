"""The web demo's request: one prompt, the independent and the coupled gallery from one seed.

    request = Request(model="lab", prompt="a circle", coupling="repulsive", num_images=8, seed=0,
                      steps=20, guidance=1.0)
    with models.lease(request.model, request.size) as pipe:
        result = compare(pipe, request)        # galleries, metric rows, timings
    write_run_zip(result, "run.zip")           # images, galleries.json, metrics.csv, config.json
    load_request("unzipped_run")               # the same Request back: rerun it to reproduce

The table has the eval module's diversity metrics for both galleries, CLIP alignment when a CLIP
backbone is given, and on the lab model the ground-truth readout (alignment, distinct scenes,
attribute coverage). Everything is validated before the first network evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from couplednoise import Coupling, latent_shape, parse_spec
from couplednoise.eval.backbones.loading import Backbones
from couplednoise.eval.demo.engine import (
    LAB,
    Models,
    build_coupling,
    draw_galleries,
    score_gallery,
    size_range,
)
from couplednoise.eval.metrics.registry import METRICS
from couplednoise.eval.runs.atomic import write_text
from couplednoise.eval.runs.galleries import GalleryRecord, write_galleries
from couplednoise.eval.runs.images import save_image
from couplednoise.eval.runs.tables import csv_text
from couplednoise.pipelines.generation import Gallery
from couplednoise.pipelines.lab import LabPipeline

NO_CLIP = "not computed: no CLIP backbone loaded (none offline; start app.py with --clip)"
TABLE_HEADERS = ["metric", "independent", "coupled", "meaning"]
MAX_MASK_SIDE = 4096  # pixels a side of a painted mask (it is resized to the latent grid)
Progress = Callable[[float, str], None]
# Ground-truth rows of the lab: row name -> (score key, meaning)
LAB_ROWS = {
    "lab_alignment": (
        "alignment",
        "ground truth: fraction of images whose scene matches the prompt",
    ),
    "lab_scenes": (
        "scenes",
        "ground truth: distinct on-prompt scenes (best possible {limit}, "
        "independent draws expect {expected:.2f})",
    ),
    "lab_attribute_coverage": (
        "attr_cov",
        "ground truth: distinct values of each attribute the prompt leaves open, as a fraction "
        "of the best possible (mean over attributes)",
    ),
}


@dataclasses.dataclass(frozen=True)
class Limits:
    """Caps that protect the machine; every request is checked against them before any work."""

    max_images: int = 16
    max_steps: int = 50
    max_size: int = 1024

    def check(self, request: Request) -> None:
        """ValueError naming the cap a request exceeds."""
        if not 2 <= request.num_images <= self.max_images:
            raise ValueError(
                f"gallery size must be between 2 and {self.max_images} "
                f"(metrics compare pairs of images), got {request.num_images}"
            )
        if not 1 <= request.steps <= self.max_steps:
            raise ValueError(f"steps must be between 1 and {self.max_steps}, got {request.steps}")
        if request.size is not None and not 1 <= request.size <= self.max_size:
            raise ValueError(f"image size is capped at {self.max_size} pixels, got {request.size}")


def _whole(name: str, value: Any) -> int:
    """``value`` as an int; 1.0 is accepted, 1.5, True, NaN and text are ValueErrors."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, eq=False)
class Request:
    """One comparison: the coupled gallery beside the independent one from the same seed.

    ``coupling`` is a spec with scalar parameters ("repulsive:strength=0.5",
    "subspace:share=0.8"); a subspace coupling without ``band=`` takes ``mask`` ({0, 1} [H, W],
    1 = shared region, any resolution up to 4096 a side), a gaussian one takes ``correlation``
    (K x K). ``size`` is the square image side in pixels (None: the model's default).
    """

    model: str
    prompt: str
    coupling: str
    num_images: int
    seed: int
    steps: int
    guidance: float
    negative_prompt: str = ""
    size: int | None = None
    mask: np.ndarray | None = None
    correlation: list[list[float]] | None = None

    def __post_init__(self):
        for name in ("num_images", "seed", "steps"):
            object.__setattr__(self, name, _whole(name, getattr(self, name)))
        if self.size is not None:
            object.__setattr__(self, "size", _whole("size", self.size))
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be between 0 and 2^63 - 1, got {self.seed}")
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ValueError("prompt and negative prompt must be text")
        guidance = float(self.guidance)
        if not np.isfinite(guidance):
            raise ValueError(f"guidance must be a finite number, got {self.guidance!r}")
        object.__setattr__(self, "guidance", guidance)
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.ndim != 2 or max(mask.shape) > MAX_MASK_SIDE:
                raise ValueError(
                    f"the painted mask must be one image of at most {MAX_MASK_SIDE} pixels a "
                    f"side, got shape {mask.shape}"
                )
            object.__setattr__(self, "mask", (mask > 0).astype(np.uint8))

    def build_coupling(self) -> Coupling:
        """The coupling this request names, with its mask / correlation matrix (ValueError if bad)."""
        name, params = parse_spec(self.coupling)
        mask = None
        if name == "subspace" and "band" not in params:
            if self.mask is None or not self.mask.any():
                raise ValueError(
                    "subspace coupling with a drawn region: paint the shared region on the "
                    "canvas (or pick a frequency band instead)"
                )
            if self.mask.all():
                raise ValueError(
                    "the painted region covers the whole image: leave part of it unpainted "
                    "(that part stays independent)"
                )
            mask = torch.from_numpy(self.mask).float()
        correlation = None
        if self.correlation is not None:
            correlation = torch.tensor(self.correlation, dtype=torch.float64)
            if correlation.shape != (self.num_images, self.num_images):
                raise ValueError(
                    f"the correlation matrix is {correlation.shape[0]} x {correlation.shape[-1]} "
                    f"but the gallery has {self.num_images} images: give a {self.num_images} x "
                    f"{self.num_images} matrix"
                )
        return build_coupling(self.coupling, mask=mask, correlation=correlation)

    def config(self) -> dict[str, Any]:
        """JSON-able fields (the mask is saved beside config.json as mask.png)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["mask"] = "mask.png" if self.mask is not None else None
        return fields


@dataclasses.dataclass
class MetricRow:
    """One line of the table: a metric for both galleries (None = not available) and its meaning."""

    name: str
    independent: float | None
    coupled: float | None
    meaning: str


@dataclasses.dataclass
class Comparison:
    """The two galleries of a request, their metric rows and timings (seconds)."""

    request: Request
    independent: Gallery
    coupled: Gallery
    rows: list[MetricRow]
    seconds: dict[str, float]


def metric_rows(
    independent: torch.Tensor,
    coupled: torch.Tensor,
    *,
    prompt: str,
    backbones: Backbones | None = None,
    pipe: Any = None,
) -> list[MetricRow]:
    """Rows for two galleries [K, 3, H, W] in [0, 1]: the eval diversity metrics, CLIP score (or
    a row saying why not), and the lab's ground truth when ``pipe`` is the lab model."""
    a = score_gallery(independent, prompt, pipe, backbones=backbones)
    b = score_gallery(coupled, prompt, pipe, backbones=backbones)
    rows = [
        MetricRow(name, a[name], b[name], METRICS[name].description)
        for name in a
        if name in METRICS
    ]
    if "clip_score" not in a:
        rows.append(MetricRow("clip_score", None, None, NO_CLIP))
    if isinstance(pipe, LabPipeline):
        from couplednoise.pipelines.lab.readout import gallery_readout

        scenes = gallery_readout(independent, prompt, pipe.world).scene_coverage
        for name, (key, meaning) in LAB_ROWS.items():
            text = meaning.format(limit=scenes.limit, expected=scenes.expected_independent)
            rows.append(MetricRow(name, a[key], b[key], text))
    return rows


def table(rows: Sequence[MetricRow]) -> list[list[str]]:
    """Rows as display text: metric, independent, coupled, meaning ("n/a" where unavailable)."""

    def text(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    return [[r.name, text(r.independent), text(r.coupled), r.meaning] for r in rows]


def check_request(pipe: Any, request: Request, limits: Limits) -> Coupling:
    """Every check of ``request`` on ``pipe`` before any network runs; returns its coupling."""
    limits.check(request)
    coupling = request.build_coupling()
    size = request.size
    if size is not None and not isinstance(pipe, LabPipeline):
        low, high, step, _ = size_range(pipe, limits.max_size)
        if not low <= size <= high or size % step:
            raise ValueError(
                f"image size {size} is outside this model's range: {low} to {high} pixels in "
                f"steps of {step}"
            )
    coupling.check(request.num_images, latent_shape(pipe, size, size))
    return coupling


def compare(
    pipe: Any,
    request: Request,
    *,
    limits: Limits | None = None,
    backbones: Backbones | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Generate the independent and the coupled gallery of ``request`` with ``pipe`` and score them.

    Everything is validated before the first network evaluation: limits, size, the coupling
    (with its mask / matrix) at this model's latent shape. Call it inside ``Models.lease``.
    """
    from couplednoise import Independent

    report = progress or (lambda fraction, text: None)
    coupling = check_request(pipe, request, limits or Limits())
    settings = {
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance,
        "negative_prompt": request.negative_prompt or None,
        "height": request.size,
        "width": request.size,
    }
    settings = {k: v for k, v in settings.items() if v is not None}
    seconds = {}
    galleries = []
    for fraction, label, which in (
        (0.0, "independent", Independent()),
        (0.45, "coupled", coupling),
    ):
        report(fraction, f"{label} gallery")
        start = time.perf_counter()
        galleries += draw_galleries(
            pipe,
            request.prompt,
            [which],
            num_images=request.num_images,
            seed=request.seed,
            settings=settings,
        )
        seconds[label] = time.perf_counter() - start
    report(0.9, "metrics")
    start = time.perf_counter()
    rows = metric_rows(
        galleries[0].images,
        galleries[1].images,
        prompt=request.prompt,
        backbones=backbones,
        pipe=pipe,
    )
    seconds["metrics"] = time.perf_counter() - start
    report(1.0, "done")
    return Comparison(request, galleries[0], galleries[1], rows, seconds)


def write_run(result: Comparison, folder: str | Path) -> Path:
    """Write a comparison as a run folder (the ``couplednoise score`` layout) and return it:
    images/<independent|coupled>/<k>.png, galleries.json, metrics.csv, config.json, mask.png."""
    folder = Path(folder)
    records = [
        GalleryRecord(gid, g.prompt, g.images, {"coupling": g.coupling, "seed": g.seed})
        for gid, g in (("independent", result.independent), ("coupled", result.coupled))
    ]
    write_galleries(folder, records)
    write_text(
        folder / "metrics.csv",
        csv_text(
            [
                dict(
                    zip(
                        TABLE_HEADERS,
                        (
                            r.name,
                            "" if r.independent is None else r.independent,
                            "" if r.coupled is None else r.coupled,
                            r.meaning,
                        ),
                    )
                )
                for r in result.rows
            ],
            TABLE_HEADERS,
        ),
    )
    if result.request.mask is not None:
        save_image(Image.fromarray(result.request.mask * 255), folder / "mask.png")
    config = {
        "command": "web-demo",
        "request": result.request.config(),
        "coupling": result.coupled.coupling,
        "metadata": result.coupled.metadata,
        "seconds": result.seconds,
        "reproduce": "from couplednoise.eval.demo.comparison import rerun; rerun('THIS_FOLDER')",
    }
    write_text(folder / "config.json", json.dumps(config, indent=2, default=str))
    return folder


def write_run_zip(result: Comparison, path: str | Path) -> Path:
    """The run folder of ``result`` as one zip at ``path`` (written whole, then moved in place)."""
    import os

    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        write_run(result, Path(scratch) / "run")
        archive = shutil.make_archive(str(Path(scratch) / "run"), "zip", Path(scratch) / "run")
        os.replace(archive, path)
    return path


def load_request(folder: str | Path) -> Request:
    """The Request a run folder's config.json (and mask.png) describes."""
    folder = Path(folder)
    fields = json.loads((folder / "config.json").read_text())["request"]
    if fields.get("mask"):
        fields["mask"] = np.asarray(Image.open(folder / fields["mask"]).convert("L")) > 127
    return Request(**fields)


def rerun(folder: str | Path, models: Models | None = None, **kwargs: Any) -> Comparison:
    """Reproduce the comparison saved in a run folder (same model, seed and settings)."""
    request = load_request(folder)
    models = models or Models([request.model])
    with models.lease(request.model, request.size) as pipe:
        return compare(pipe, request, **kwargs)


def warm_up(models: Models) -> None:
    """Load the lab model and run the metric code once, so that the first request is quick."""
    with models.lease(LAB) as pipe:
        size = pipe.world.size
        images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        metric_rows(images, images.flip(0), prompt="", pipe=pipe)
