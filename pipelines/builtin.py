"""Built-in models: pipelines the project ships or builds itself, named by a spec string.

    BUILTIN_MODELS["lab"]            # the closed-form lab ("lab", "lab:size=64,scheduler=flow")
    builtin_model("lab:size=64")     # -> the BuiltinModel entry, or None for a checkpoint / hub id
    check_model_spec("lab:size=48")  # ValueError before anything loads

Everywhere a model is named (``generate``, ``eval`` configs, ``demo``, the web demo,
``background``) a built-in spec loads through its entry here; every other name is a diffusers
folder or hub id (``loading.load_pipeline``). A new built-in model registers one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What suits a Stable Diffusion checkpoint when the user gives no steps / guidance.
CHECKPOINT_DEFAULTS = {"steps": 30, "guidance": 7.5}


@dataclass(frozen=True)
class BuiltinModel:
    """A model named by ``name`` or ``name:key=value,...``.

    ``check(spec)`` validates the spec without loading anything (ValueError naming the option);
    ``load(spec, device=, dtype=)`` returns a ready pipeline; ``defaults`` are the steps and
    guidance that suit it; ``requires`` is the pip extra it needs (None: always installed);
    ``latent_shape(spec, height, width)`` the per-sample noise shape, known before loading;
    ``prompts`` are example prompts in the model's own prompt language (the demo's defaults).
    """

    name: str
    description: str
    check: Callable[[str], Any]
    load: Callable[..., Any]
    defaults: dict[str, float]
    requires: str | None = None
    latent_shape: Callable[[str, int | None, int | None], tuple[int, ...]] | None = None
    prompts: tuple[str, ...] = ()


def _check_lab(spec: str):
    from couplednoise.pipelines.lab import parse_lab_spec

    return parse_lab_spec(spec)


def _lab_latent_shape(spec: str, height: int | None, width: int | None) -> tuple[int, ...]:
    size = _check_lab(spec)["size"]
    return (3, size, size)


def _load_lab(spec: str, *, device=None, dtype=None):
    from couplednoise.pipelines.lab import load_lab_pipeline

    return load_lab_pipeline(spec, device=device, dtype=dtype)


def _check_terrain(spec: str):
    from couplednoise.pipelines.terrain import check_terrain_spec

    return check_terrain_spec(spec)


def _load_terrain(spec: str, *, device=None, dtype=None):
    from couplednoise.pipelines.terrain import load_terrain_pipeline

    return load_terrain_pipeline(spec, device=device, dtype=dtype)


def _check_learned_lab(spec: str):
    from couplednoise.pipelines.learned_lab.load import parse_learned_lab_spec, weights_dir

    options = parse_learned_lab_spec(spec)
    try:
        weights_dir(options.get("weights") or None)
    except FileNotFoundError as error:  # a spec check raises ValueError, before anything loads
        raise ValueError(str(error)) from error
    return options


def _load_learned_lab(spec: str, *, device=None, dtype=None):
    from couplednoise.pipelines.learned_lab import load_learned_lab

    return load_learned_lab(spec, device=device, dtype=dtype)


def _learned_lab_latent_shape(spec: str, height: int | None, width: int | None) -> tuple[int, ...]:
    from couplednoise.pipelines.learned_lab.world import SIZE

    _check_learned_lab(spec)
    return (3, SIZE, SIZE)


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "lab": BuiltinModel(
        name="lab",
        description="closed-form lab: exact denoiser over a procedural scene world, ground truth",
        check=_check_lab,
        load=_load_lab,
        defaults={"steps": 20, "guidance": 1.0},
        latent_shape=_lab_latent_shape,
        prompts=(
            "a red circle",
            "a square on a blue background",
            "a large green triangle",
            "a diamond on the left",
        ),
    ),
    "terrain": BuiltinModel(
        name="terrain",
        description="trained consistency UNet (adaptive-terrain-diffusion): 128 x 128 "
        "heightfields, prompt = difficulty 1..100",
        check=_check_terrain,
        load=_load_terrain,
        defaults={"steps": 1, "guidance": 1.0},
        requires="terrain",
        prompts=("difficulty 20", "difficulty 50", "difficulty 90"),
    ),
    "learned-lab": BuiltinModel(
        name="learned-lab",
        description="learned lab: a small UNet the project trained on Fashion-MNIST composites",
        check=_check_learned_lab,
        load=_load_learned_lab,
        defaults={"steps": 25, "guidance": 5.0},
        latent_shape=_learned_lab_latent_shape,
        prompts=(
            "a red sneaker",
            "a bag on brick",
            "a blue thing on the left",
            "a white dress on grass",
        ),
    ),
}


def spec_name(spec: str) -> str:
    """The model name of a spec: "lab:size=64" -> "lab" (lower case, stripped)."""
    return spec.split(":", 1)[0].strip().lower()


def builtin_model(spec: str) -> BuiltinModel | None:
    """The built-in model ``spec`` names, or None (a checkpoint folder or hub id)."""
    if not isinstance(spec, str):
        return None
    return BUILTIN_MODELS.get(spec_name(spec))


def check_model_spec(spec: str) -> BuiltinModel | None:
    """Validate a built-in spec (no loading); returns its entry, None for other names."""
    model = builtin_model(spec)
    if model is not None:
        model.check(spec)
    return model


def installed_builtins() -> tuple[list[str], dict[str, str]]:
    """Built-in models that can run here (their extra installed, their weights present), and
    the reason each other one cannot."""
    ready, missing = [], {}
    for name, entry in BUILTIN_MODELS.items():
        try:
            entry.check(name)
        except ValueError as error:
            missing[name] = str(error)
        else:
            ready.append(name)
    return ready, missing


def example_prompts(spec: str) -> tuple[str, ...]:
    """Example prompts for a built-in model (empty for a checkpoint: any text works)."""
    entry = builtin_model(spec)
    return entry.prompts if entry is not None else ()


def model_defaults(model: str | Any) -> dict[str, float]:
    """Steps and guidance that suit ``model`` (a spec or a loaded pipeline)."""
    if not isinstance(model, str):
        model = getattr(model, "name_or_path", None) or ""
    entry = builtin_model(model)
    return dict(entry.defaults if entry is not None else CHECKPOINT_DEFAULTS)
