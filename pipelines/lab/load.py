"""Build the lab pipeline from a spec string: "lab" or "lab:size=64,scheduler=euler,locality=7"."""

from __future__ import annotations

import math

import torch

from couplednoise.pipelines.lab.pipeline import SCHEDULERS, LabPipeline
from couplednoise.pipelines.lab.world import SIZES, build_world

MAX_VARIANTS = 16  # renders per attribute combination (16 x 1,440 scenes at 64 px: ~0.7 GB)

DEFAULTS = {
    "size": 32,
    "scheduler": "ddim",
    "smoothing": 0.02,
    "variants": 2,
    "seed": 0,
    "locality": 0,  # 0: the exact denoiser; w (odd): the closed-form local denoiser, w x w window
}


def parse_lab_spec(spec: str) -> dict:
    """ "lab:key=value,..." -> the lab options (``DEFAULTS`` filled in); ValueError if invalid."""
    name, _, rest = spec.strip().partition(":")
    if name.strip().lower() != "lab":
        raise ValueError(f"a lab spec starts with 'lab' (e.g. 'lab:size=64'), got {spec!r}")
    options = dict(DEFAULTS)
    given: set[str] = set()
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if key in given:
            raise ValueError(f"lab option {key!r} is given twice in {spec!r}")
        given.add(key)
        if not eq or key not in DEFAULTS:
            raise ValueError(
                f"lab option {item!r} in {spec!r} is not key=value with key one of "
                f"{', '.join(DEFAULTS)}"
            )
        try:
            options[key] = type(DEFAULTS[key])(value.strip())
        except ValueError as error:
            raise ValueError(
                f"lab option {key}={value!r} is not a {type(DEFAULTS[key]).__name__}"
            ) from error
    if options["size"] not in SIZES:
        raise ValueError(f"lab size must be one of {SIZES} pixels, got {options['size']}")
    if not math.isfinite(options["smoothing"]) or not 0 <= options["smoothing"] <= 1:
        raise ValueError(f"lab smoothing must be a number in [0, 1], got {options['smoothing']}")
    if not 1 <= options["variants"] <= MAX_VARIANTS:
        raise ValueError(f"lab variants must be in [1, {MAX_VARIANTS}], got {options['variants']}")
    if not 0 <= options["seed"] < 2**63:
        raise ValueError(f"lab seed must be in [0, 2**63), got {options['seed']}")
    if options["scheduler"] not in SCHEDULERS:
        raise ValueError(
            f"unknown lab scheduler {options['scheduler']!r}; valid: {', '.join(SCHEDULERS)}"
        )
    locality = options["locality"]
    if locality < 0 or (locality > 0 and locality % 2 == 0) or locality > options["size"] * 2:
        raise ValueError(
            f"lab locality={locality} must be 0 (exact denoiser) or an odd window size in "
            f"pixels up to {options['size'] * 2} (e.g. 'lab:locality=7')"
        )
    return options


def load_lab_pipeline(
    spec: str = "lab", *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> LabPipeline:
    """The built-in lab pipeline described by ``spec`` (no weights: the denoiser is exact)."""
    options = parse_lab_spec(spec)
    world = build_world(options["size"], options["variants"], options["seed"])
    return LabPipeline(
        world,
        SCHEDULERS[options["scheduler"]](),
        smoothing=options["smoothing"],
        locality=options["locality"],
        device=device,
        dtype=dtype or torch.float32,
        name_or_path=spec,
    )
