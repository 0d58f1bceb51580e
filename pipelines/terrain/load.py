"""Build the terrain pipeline from a spec string: "terrain" or "terrain:threads=1,floor=40".

Options: ``threads`` (onnxruntime intra-op threads; 0, the default, takes torch's thread count,
so ``torch.set_num_threads`` governs both), ``batch`` (samples per network call: 4 was the
fastest per sample on 2 CPU cores, 0.19 s at 1 thread against 0.26 s at 16 and 0.35 s at 32) and
``floor`` (the lowest re-noise level of multistep sampling; see ``schedule``).
"""

from __future__ import annotations

import warnings

import torch

from couplednoise.pipelines.terrain.denoiser import check_installed, load_denoiser
from couplednoise.pipelines.terrain.pipeline import TerrainPipeline
from couplednoise.pipelines.terrain.schedule import ConsistencySchedule

DEFAULTS = {"threads": 0, "batch": 4, "floor": 40.0}
LIMITS = {"threads": (0, 256), "batch": (1, 1024), "floor": (0.01, 80.0)}


def parse_terrain_spec(spec: str) -> dict:
    """ "terrain:key=value,..." -> the options (``DEFAULTS`` filled in); ValueError if invalid."""
    name, _, rest = spec.strip().partition(":")
    if name.strip().lower() != "terrain":
        raise ValueError(
            f"a terrain spec starts with 'terrain' (e.g. 'terrain:threads=2'), got {spec!r}"
        )
    options = dict(DEFAULTS)
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in DEFAULTS:
            raise ValueError(
                f"terrain option {item!r} in {spec!r} is not key=value with key one of "
                f"{', '.join(DEFAULTS)}"
            )
        kind = type(DEFAULTS[key])
        try:
            options[key] = kind(value.strip())
        except ValueError as error:
            raise ValueError(f"terrain option {key}={value!r} is not a {kind.__name__}") from error
        low, high = LIMITS[key]
        if not low <= options[key] <= high:
            raise ValueError(f"terrain option {key}={options[key]} is outside [{low}, {high}]")
    return options


def check_terrain_spec(spec: str) -> dict:
    """Validate ``spec`` and that the model's packages are installed, loading nothing."""
    options = parse_terrain_spec(spec)
    check_installed()
    return options


def load_terrain_pipeline(
    spec: str = "terrain",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> TerrainPipeline:
    """The terrain pipeline described by ``spec``, its weights from the installed wheel.

    The ONNX network computes in float32: another ``dtype`` (e.g. the fp16 default on CUDA) is
    ignored with a warning. ``device``: cpu (default) or cuda (onnxruntime-gpu's CUDA provider).
    """
    options = check_terrain_spec(spec)
    device = torch.device(device or "cpu")
    if dtype is not None and dtype != torch.float32:
        warnings.warn(
            f"the terrain ONNX network computes in float32; dtype {dtype} is ignored", stacklevel=2
        )
    denoiser = load_denoiser(
        threads=options["threads"] or torch.get_num_threads(),
        batch_size=options["batch"],
        device=str(device),
    )
    return TerrainPipeline(
        denoiser,
        ConsistencySchedule(floor=options["floor"]),
        device=device,
        name_or_path=spec,
    )
