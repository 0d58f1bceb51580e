"""Independent vs coupled galleries from one seed, scored side by side (the web demo's work, no UI).

    models = Models(["lab", "/models/sd15"])            # lab always offered; loaded lazily, cached
    request = Request(model="lab", prompt="a circle", coupling="repulsive", num_images=8, seed=0)
    result = compare(models.get(request.model, request.size), request)
    write_run_zip(result, "run.zip")        # images, galleries.json, metrics.csv, config.json
    load_request("unzipped_run")            # the same Request back: rerun it to reproduce

Both galleries are drawn from the same seed, so they differ only by the coupling. The table has
the eval module's diversity metrics for both, CLIP alignment when a CLIP backbone is given, and on
the lab model the ground-truth readout (alignment, distinct scenes, attribute coverage).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from couplednoise import (
    Coupling,
    default_size,
    get_coupling,
    latent_shape,
    parse_spec,
    size_multiple,
)
from couplednoise.eval.backbones.loading import Backbones
from couplednoise.eval.metrics.registry import METRICS, gallery_metrics
from couplednoise.eval.runs.images import save_image, save_png
from couplednoise.pipelines.generation import Gallery, generate_gallery
from couplednoise.pipelines.lab import LabPipeline, parse_lab_spec
from couplednoise.pipelines.lab.readout import gallery_readout
from couplednoise.pipelines.lab.world import SIZES as LAB_SIZES
from couplednoise.pipelines.loading import is_lab, load_pipeline

LAB = "lab"
LAB_DEFAULTS = {"steps": 20, "guidance": 1.0}
SD_DEFAULTS = {"steps": 30, "guidance": 7.5}
LAB_SIZE_RANGE = (LAB_SIZES[0], LAB_SIZES[-1], LAB_SIZES[1] - LAB_SIZES[0], LAB_SIZES[0])
NO_CLIP = "not computed: no CLIP backbone loaded (none offline; start app.py with --clip)"
Progress = Callable[[float, str], None]


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
        if request.size is not None and request.size > self.max_size:
            raise ValueError(f"image size is capped at {self.max_size} pixels, got {request.size}")


@dataclasses.dataclass(frozen=True, eq=False)
class Request:
    """One comparison: the coupled gallery beside the independent one from the same seed.

    ``coupling`` is a spec with scalar parameters ("repulsive:strength=0.5",
    "subspace:share=0.8"); a subspace coupling without ``band=`` takes ``mask`` ({0, 1} [H, W],
    1 = shared region, any resolution), a gaussian one takes ``correlation`` (K x K).
    ``size`` is the square image side in pixels (None: the model's default).
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
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                object.__setattr__(self, name, int(value))
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        if self.size is not None:
            object.__setattr__(self, "size", int(self.size))
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be between 0 and 2^63 - 1, got {self.seed}")
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ValueError("prompt and negative prompt must be text")
        object.__setattr__(self, "guidance", float(self.guidance))
        if self.mask is not None:
            object.__setattr__(self, "mask", (np.asarray(self.mask) > 0).astype(np.uint8))

    def build_coupling(self) -> Coupling:
        """The coupling this request names, with its mask / correlation matrix (ValueError if bad)."""
        name, params = parse_spec(self.coupling)
        if name == "subspace" and "band" not in params:
            if self.mask is None or not self.mask.any():
                raise ValueError(
                    "subspace coupling with a drawn region: paint the shared region on the canvas "
                    "(or pick a frequency band instead)"
                )
            if self.mask.all():
                raise ValueError(
                    "the painted region covers the whole image: leave part of it unpainted "
                    "(that part stays independent)"
                )
            return get_coupling(self.coupling, mask=torch.from_numpy(self.mask).float())
        if name == "gaussian":
            if self.correlation is None:
                raise ValueError("gaussian coupling needs a correlation matrix")
            matrix = torch.tensor(self.correlation, dtype=torch.float64)
            if matrix.shape != (self.num_images, self.num_images):
                raise ValueError(
                    f"the correlation matrix is {matrix.shape[0]} x {matrix.shape[-1]} but the "
                    f"gallery has {self.num_images} images: give a {self.num_images} x "
                    f"{self.num_images} matrix"
                )
            return get_coupling(self.coupling, correlation_matrix=matrix)
        return get_coupling(self.coupling)

    def config(self) -> dict[str, Any]:
        """JSON-able fields (the mask is saved beside config.json as mask.png)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["mask"] = "mask.png" if self.mask is not None else None
        return fields


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


def size_range(pipe: Any, limits: Limits) -> tuple[int, int, int, int]:
    """(smallest, largest, step, default) square side in pixels the model can render here.

    Lab: its world sizes. Other models: half to 1.5 times their default size, in multiples of
    the latent grid (vae_scale_factor x patch size), capped at ``limits.max_size``.
    """
    if isinstance(pipe, LabPipeline):
        return (*LAB_SIZE_RANGE[:3], pipe.world.size)
    step = size_multiple(pipe)
    default = min(default_size(pipe))
    low = max(step, default // 2 // step * step)
    high = max(low, min(limits.max_size, default * 3 // 2) // step * step)
    return low, high, step, min(max(default, low), high)


def model_defaults(pipe: Any) -> dict[str, float]:
    """Steps and guidance that suit the model: the lab's exact posterior wants guidance 1."""
    return dict(LAB_DEFAULTS if isinstance(pipe, LabPipeline) else SD_DEFAULTS)


def best_device() -> tuple[torch.device, torch.dtype | None]:
    """CUDA, else Apple MPS (fp16), else CPU; None = the loader's default dtype for the device."""
    if torch.cuda.is_available():
        return torch.device("cuda"), None
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps"), torch.float16
    return torch.device("cpu"), None


class Models:
    """The models a demo offers: the lab always, plus the ones its operator named.

    Loaded on first use (one at a time) and cached on the best device; ``get`` refuses any model
    that was not offered, so a browser can never make the server load a path or hub id.
    """

    def __init__(self, names: Sequence[str] = (), *, device=None, dtype=None):
        self.names = list(dict.fromkeys([LAB, *names]))
        auto_device, auto_dtype = best_device()
        self.device = torch.device(device) if device is not None else auto_device
        self.dtype = dtype if device is not None else auto_dtype
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def check(self, model: str) -> None:
        if model not in self.names:
            raise ValueError(f"model {model!r} is not offered here; choose one of {self.names}")

    def get(self, model: str, size: int | None = None) -> Any:
        """The loaded pipeline for ``model`` (at ``size`` for the lab), loading it on first use."""
        self.check(model)
        spec = pipeline_spec(model, size)
        with self._lock:
            if spec not in self._cache:
                dtype = torch.float32 if is_lab(spec) else self.dtype
                pipe = load_pipeline(spec, device=self.device, dtype=dtype, local_files_only=True)
                if hasattr(pipe, "set_progress_bar_config"):
                    pipe.set_progress_bar_config(leave=False)
                self._cache[spec] = pipe
            return self._cache[spec]


def warm_up(models: Models) -> None:
    """Load the lab model and run the metric code once, so that the first request is quick."""
    pipe = models.get(LAB)
    size = pipe.world.size
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    metric_rows(images, images.flip(0), prompt="", pipe=pipe)


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
    backbones = backbones or Backbones()
    a = gallery_metrics(independent, backbones=backbones, prompt=prompt)
    b = gallery_metrics(coupled, backbones=backbones, prompt=prompt)
    rows = [MetricRow(name, a[name], b[name], METRICS[name]) for name in a]
    if "clip_score" not in a:
        rows.append(MetricRow("clip_score", None, None, NO_CLIP))
    if isinstance(pipe, LabPipeline):
        ra = gallery_readout(independent, prompt, pipe.world)
        rb = gallery_readout(coupled, prompt, pipe.world)
        scenes = ra.scene_coverage
        rows += [
            MetricRow(
                "lab_alignment",
                ra.alignment,
                rb.alignment,
                "ground truth: fraction of images whose scene matches the prompt",
            ),
            MetricRow(
                "lab_scenes",
                scenes.distinct,
                rb.scene_coverage.distinct,
                f"ground truth: distinct on-prompt scenes (best possible {scenes.limit}, "
                f"independent draws expect {scenes.expected_independent:.2f})",
            ),
            MetricRow(
                "lab_attribute_coverage",
                ra.mean_attribute_coverage,
                rb.mean_attribute_coverage,
                "ground truth: distinct values of each attribute the prompt leaves open, "
                "as a fraction of the best possible (mean over attributes)",
            ),
        ]
    return rows


def table(rows: Sequence[MetricRow]) -> list[list[str]]:
    """Rows as display text: metric, independent, coupled, meaning ("n/a" where unavailable)."""

    def text(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    return [[r.name, text(r.independent), text(r.coupled), r.meaning] for r in rows]


TABLE_HEADERS = ["metric", "independent", "coupled", "meaning"]


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
    (with its mask / matrix), and the coupled noise for this model's latent shape.
    """
    report = progress or (lambda fraction, text: None)
    limits = limits or Limits()
    limits.check(request)
    coupling = request.build_coupling()
    size = request.size
    if size is not None and not isinstance(pipe, LabPipeline):
        low, high, step, _ = size_range(pipe, limits)
        if not low <= size <= high or size % step:
            raise ValueError(
                f"image size {size} is outside this model's range: {low} to {high} pixels in "
                f"steps of {step}"
            )
    shape = latent_shape(pipe, size, size)
    coupling.sample(request.num_images, shape, generator=torch.Generator().manual_seed(0))
    options = {
        "num_images": request.num_images,
        "seed": request.seed,
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance,
        "negative_prompt": request.negative_prompt or None,
        "height": size,
        "width": size,
    }
    seconds = {}
    galleries = []
    for fraction, label, which in (
        (0.0, "independent", "independent"),
        (0.45, "coupled", coupling),
    ):
        report(fraction, f"{label} gallery")
        start = time.perf_counter()
        galleries.append(generate_gallery(pipe, request.prompt, which, **options))
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
    entries = []
    for gid, gallery in (("independent", result.independent), ("coupled", result.coupled)):
        (folder / "images" / gid).mkdir(parents=True, exist_ok=True)
        files = []
        for k, image in enumerate(gallery.images):
            files.append(f"images/{gid}/{k}.png")
            save_png(image, folder / files[-1])
        entries.append(
            {
                "id": gid,
                "prompt": gallery.prompt,
                "coupling": gallery.coupling,
                "seed": gallery.seed,
                "files": files,
            }
        )
    (folder / "galleries.json").write_text(json.dumps(entries, indent=2))
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE_HEADERS)
        writer.writerows(
            [
                r.name,
                "" if r.independent is None else r.independent,
                "" if r.coupled is None else r.coupled,
                r.meaning,
            ]
            for r in result.rows
        )
    if result.request.mask is not None:
        save_image(Image.fromarray(result.request.mask * 255), folder / "mask.png")
    config = {
        "request": result.request.config(),
        "coupling": result.coupled.coupling,
        "metadata": result.coupled.metadata,
        "seconds": result.seconds,
        "reproduce": "from couplednoise.eval.demo.engine import rerun; rerun('THIS_FOLDER')",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    return folder


def write_run_zip(result: Comparison, path: str | Path) -> Path:
    """The run folder of ``result`` as one zip at ``path`` (written whole, then moved in place)."""
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
    return compare(models.get(request.model, request.size), request, **kwargs)
