"""Load a pipeline by name: a local diffusers folder, a hub id from the HF cache, or "lab".

    pipe = load_pipeline("/models/sd15")                        # a save_pretrained folder
    pipe = load_pipeline("stabilityai/stable-diffusion-xl-base-1.0", dtype="fp16")
    pipe = load_pipeline("lab:size=64")                         # the built-in closed-form lab
    detect_family(pipe)  # "sd15" | "sdxl" | "sd3" | "lab" | "other"

Weights are loaded from safetensors only and no remote code is run. Hub ids resolve in the user's
Hugging Face cache; with ``local_files_only`` (the default when HF_HUB_OFFLINE=1) nothing is
downloaded and a model missing from the cache is an error that says how to supply it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from couplednoise.pipelines.builtin import builtin_model, spec_name

FAMILY_BY_CLASS = {
    "StableDiffusionPipeline": "sd15",  # SD 1.x and 2.x share the class and the latent layout
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "LabPipeline": "lab",
    "LearnedLabPipeline": "learned-lab",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def parse_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """A torch dtype from "fp16" / "bf16" / "fp32" (or a dtype); None: fp16 on CUDA, else fp32."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype.lower() not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: fp32, fp16, bf16")
    return DTYPES[dtype.lower()]


def is_lab(model: str) -> bool:
    """Whether ``model`` names the built-in closed-form lab model ("lab" or "lab:...")."""
    return spec_name(model) == "lab"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def family_from_index(index: dict[str, Any]) -> str:
    """The family from a model_index.json dict: its ``_class_name``, else its components."""
    family = FAMILY_BY_CLASS.get(index.get("_class_name", ""))
    if family is not None:
        return family
    present = {name for name, value in index.items() if isinstance(value, list) and value[0]}
    if {"transformer", "text_encoder_3"} <= present:
        return "sd3"
    if {"unet", "text_encoder_2"} <= present:
        return "sdxl"
    if {"unet", "text_encoder", "vae"} <= present:
        return "sd15"
    return "other"


def detect_family(pipe: Any) -> str:
    """ "sd15" | "sdxl" | "sd3" | "lab" | "other" for a loaded pipeline."""
    family = FAMILY_BY_CLASS.get(type(pipe).__name__)
    if family is not None:
        return family
    config = getattr(pipe, "config", None)
    return family_from_index(dict(config)) if config is not None else "other"


def read_model_index(folder: Path) -> dict[str, Any]:
    """model_index.json of a diffusers folder, or a ValueError saying what the folder lacks."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ValueError(
            f"{folder} is not a diffusers pipeline folder: no model_index.json. Save one with "
            "pipe.save_pretrained(folder, safe_serialization=True), or pass a hub id"
        )
    return check_model_index(read_json(index_path), index_path)


def read_json(path: Path) -> Any:
    """A JSON file's data; ValueError naming the file for unreadable, non-UTF-8 or bad JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None


def check_model_index(index: Any, where: Path | str) -> dict[str, Any]:
    """``index`` if it is a model_index.json mapping whose components are [library, class]."""
    if not isinstance(index, dict):
        raise ValueError(f"{where} must hold a JSON object, got {type(index).__name__}")
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list):
            continue  # settings such as requires_safety_checker
        if len(value) != 2 or not all(v is None or isinstance(v, str) for v in value):
            raise ValueError(
                f"{where}: component {name!r} must be [library, class] (or [null, null]), "
                f"got {value!r}"
            )
    return index


def check_safetensors(folder: Path, index: dict[str, Any]) -> None:
    """ValueError if a component's weights exist only in pickle formats (.bin, .ckpt, ...)."""
    for name, value in index.items():
        component = folder / name
        if not (isinstance(value, list) and component.is_dir()):
            continue
        files = [p.name for p in component.iterdir() if p.is_file()]
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        if pickles and not any(f.endswith(".safetensors") for f in files):
            raise ValueError(
                f"{component} has weights only as {', '.join(sorted(pickles))}: couplednoise loads "
                "safetensors only (pickle files can run code). Convert with "
                "pipe.save_pretrained(folder, safe_serialization=True)"
            )


def resolve_model(
    model: str, *, local_files_only: bool, cache_dir: str | Path | None = None
) -> tuple[Path | str, dict[str, Any] | None]:
    """(local folder or hub id, its model_index if already readable); ValueError if not found."""
    path = Path(model).expanduser()
    if path.is_file():
        kind = "pickle" if path.suffix in PICKLE_SUFFIXES else "single-file"
        raise ValueError(
            f"{model} is a {kind} checkpoint file; couplednoise loads diffusers folders with "
            "safetensors weights (a folder with model_index.json, e.g. from save_pretrained) or "
            "hub ids"
        )
    if path.is_dir():
        index = read_model_index(path)
        check_safetensors(path, index)
        return path, index
    if not HUB_ID.match(model):
        raise ValueError(
            f"model {model!r}: no such local folder ({path.resolve()}), and not a hub id of the "
            "form 'org/name'. Pass a diffusers folder (with model_index.json), a hub id, or 'lab'"
        )
    if local_files_only:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model_index.json", cache_dir=cache_dir)
        if not isinstance(cached, str):
            from huggingface_hub.constants import HF_HUB_CACHE

            raise ValueError(
                f"model {model!r}: no such local folder, and not in the Hugging Face cache "
                f"({cache_dir or HF_HUB_CACHE}) and downloads are off (local_files_only / "
                f"HF_HUB_OFFLINE=1). Download it where there is internet with "
                f"`huggingface-cli download {model}` (same HF_HOME), or pass a local folder"
            )
        return model, check_model_index(read_json(Path(cached)), f"{model}/model_index.json")
    return model, None


def check_model(model: str, *, local_files_only: bool | None = None) -> None:
    """Everything about ``model`` that can be known without loading it: a built-in spec parses
    and its package is installed; a folder is a diffusers folder with safetensors weights; a hub
    id is in the cache when downloads are off. ValueError naming what is wrong."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if builtin_model(model) is not None:
        builtin_model(model).check(model)
        return
    if local_files_only is None:
        from huggingface_hub.constants import HF_HUB_OFFLINE

        local_files_only = bool(HF_HUB_OFFLINE)
    resolve_model(model, local_files_only=local_files_only)


def planned_latent_shape(
    model: str, height: int | None = None, width: int | None = None
) -> tuple[int, ...] | None:
    """The per-sample noise shape ``model`` will draw, from its spec or config files alone (no
    weights loaded), so couplings can be checked before anything loads; None if unknown."""
    builtin = builtin_model(model)
    if builtin is not None:
        return builtin.latent_shape(model, height, width) if builtin.latent_shape else None
    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    index = read_model_index(path)
    denoiser = next((n for n in ("unet", "transformer") if n in index), None)
    config_path = path / str(denoiser) / "config.json"
    vae_path = path / "vae" / "config.json"
    if denoiser is None or not config_path.is_file() or not vae_path.is_file():
        return None
    config, vae = read_json(config_path), read_json(vae_path)
    try:
        channels = int(vae.get("latent_channels") or config["in_channels"])
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        sample = config["sample_size"]
    except (KeyError, TypeError, ValueError):
        return None
    side = sample if isinstance(sample, int) else sample[0]
    h = (height or side * factor) // factor
    w = (width or side * factor) // factor
    return (channels, h, w)


def dtype_keyword(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``{"dtype": dtype}`` for diffusers' ``from_pretrained`` / ``from_pipe``, or
    ``{"torch_dtype": dtype}`` on releases before the rename (diffusers 0.42 still accepts the old
    name but warns on every call). No public flag marks the rename, so the helper that resolves
    the two names is looked up."""
    from diffusers.pipelines import pipeline_utils

    return {"dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype": dtype}


def load_pipeline(
    model: str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
) -> Any:
    """A ready pipeline (eval mode, on ``device`` in ``dtype``) for ``model``.

    ``model``: a built-in model spec ("lab", "lab:size=64"; ``builtin.BUILTIN_MODELS``), a local
    diffusers folder, or a hub id
    (resolved in the HF cache; downloaded only when ``local_files_only`` is False, which is the
    default unless HF_HUB_OFFLINE=1). ``dtype``: torch dtype or "fp16" / "bf16" / "fp32"; default
    fp16 on CUDA, fp32 on CPU. The family is ``detect_family(pipe)``.
    """
    device = torch.device(device) if device is not None else default_device()
    dtype = parse_dtype(dtype, device)
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    builtin = builtin_model(model)
    if builtin is not None:
        builtin.check(model)
        return builtin.load(model, device=device, dtype=dtype)
    if local_files_only is None:
        from huggingface_hub.constants import HF_HUB_OFFLINE

        local_files_only = bool(HF_HUB_OFFLINE)
    source, _ = resolve_model(model, local_files_only=local_files_only, cache_dir=cache_dir)
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(
            source,
            **dtype_keyword(dtype),
            use_safetensors=True,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
        )
    except OSError as error:
        raise ValueError(
            f"could not load {model!r} with safetensors weights"
            f"{' from the local cache' if local_files_only else ''}: {error}"
        ) from error
    pipe = pipe.to(device)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipe
