"""What produced a result: package versions and the pipeline's identity (for config.json / rows)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

# Packages whose versions decide images or scores. Optional ones that are absent are left out.
PACKAGES = (
    "couplednoise",
    "torch",
    "numpy",
    "diffusers",
    "transformers",
    "accelerate",
    "open_clip_torch",
    "lpips",
    "torchmetrics",
)


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """{package: version} of the installed ``packages`` (absent ones omitted)."""
    found = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def model_name(pipe: Any) -> str:
    """The name or path a pipeline was loaded from (its class name when unknown)."""
    config = getattr(pipe, "config", None)
    name = getattr(pipe, "name_or_path", None) or (config or {}).get("_name_or_path")
    return str(name or type(pipe).__name__)


def pipeline_record(pipe: Any) -> dict[str, Any]:
    """Model, family, pipeline class, scheduler and its config: the pipeline half of provenance."""
    from couplednoise.pipelines.loading import detect_family

    scheduler = getattr(pipe, "scheduler", None)
    return {
        "model": model_name(pipe),
        "family": detect_family(pipe),
        "pipeline": type(pipe).__name__,
        "scheduler": type(scheduler).__name__ if scheduler is not None else None,
        "scheduler_config": dict(scheduler.config) if scheduler is not None else {},
    }
