"""Loading metric backbones: LPIPS nets, open_clip CLIP, transformers CLIP (PickScore), DINOv2.

Every loader takes weights from a local path, the user's cache (torch hub, HF, open_clip) or a
hub id, puts the model on ``device`` / ``dtype`` in eval mode without gradients, and raises
``MissingWeightsError`` naming the weights and how to supply them when they cannot be found.
Random weights only with ``random_weights=True`` (tests, smoke runs), never as a fallback.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from couplednoise.eval.backbones.defaults import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_CLIP_PRETRAINED,
    DEFAULT_DINO,
    DEFAULT_PICKSCORE,
    DEFAULT_PICKSCORE_PROCESSOR,
)
from couplednoise.eval.backbones.embedders import HFClipEmbedder, HFImageEmbedder, OpenClipEmbedder

LPIPS_NETS = ("alex", "vgg", "squeeze")
# torchvision's checkpoint file for each LPIPS trunk (what lpips.LPIPS downloads into the hub cache)
LPIPS_TRUNK_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def downloads_off() -> bool:
    """Whether the user turned downloads off (HF_HUB_OFFLINE=1): then only local files count."""
    from huggingface_hub.constants import HF_HUB_OFFLINE

    return bool(HF_HUB_OFFLINE)


def cached_trunk(net: str) -> str | None:
    """The LPIPS trunk file of ``net`` in torchvision's hub cache, or None."""
    path = os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_TRUNK_FILES[net])
    return path if os.path.isfile(path) else None


class MissingWeightsError(OSError):
    """Pretrained weights that a backbone needs are not available locally and cannot be fetched."""


def place_module(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    module = module.to(device=device or "cpu", dtype=dtype or torch.float32)
    return module.eval().requires_grad_(False)


def load_lpips(
    net: str = "alex",
    *,
    trunk_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    random_weights: bool = False,
):
    """An ``lpips.LPIPS`` (v0.1, linear heads from the lpips wheel) for ``net`` in alex / vgg / squeeze.

    The ImageNet trunk comes from ``trunk_path`` (a torchvision state dict file, e.g.
    alexnet-owt-7be5be79.pth) or torchvision's cache / download (``torch.hub.get_dir()``).
    ``random_weights=True`` gives a randomly initialised trunk (the heads stay the real ones).
    """
    import lpips

    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    if random_weights and trunk_path is not None:
        raise ValueError("pass either trunk_path or random_weights=True, not both")
    load_trunk_now = trunk_path is None and not random_weights
    if load_trunk_now and cached_trunk(net) is None and downloads_off():
        raise MissingWeightsError(
            f"LPIPS-{net} needs torchvision's ImageNet {net} weights "
            f"({LPIPS_TRUNK_FILES[net]}), which are not in "
            f"{os.path.join(torch.hub.get_dir(), 'checkpoints')}, and downloads are off "
            "(HF_HUB_OFFLINE=1). Copy the file there, or pass trunk_path=/path/to/file.pth "
            "(--lpips-trunk for `couplednoise score`)."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained=` deprecation
        try:
            model = lpips.LPIPS(
                net=net, pretrained=True, pnet_rand=not load_trunk_now, verbose=False
            )
        except Exception as error:  # urllib / hub errors differ by torchvision version
            hub = os.path.join(torch.hub.get_dir(), "checkpoints")
            raise MissingWeightsError(
                f"LPIPS-{net} needs torchvision's ImageNet {net} weights, which are not in {hub} "
                f"and could not be downloaded ({error}). Copy the torchvision file there, or pass "
                f"trunk_path=/path/to/file.pth (--lpips-trunk for `couplednoise score`)."
            ) from error
    if trunk_path is not None:
        _load_trunk(model, trunk_path)
    return place_module(model, device, dtype)


def check_trunk_file(trunk_path: str | os.PathLike) -> None:
    """MissingWeightsError / ValueError unless ``trunk_path`` is a torch weights archive."""
    import zipfile

    if not os.path.isfile(trunk_path):
        raise MissingWeightsError(f"LPIPS trunk weights file not found: {trunk_path}")
    if not zipfile.is_zipfile(trunk_path):
        raise ValueError(
            f"LPIPS trunk {trunk_path} is not a torch weights file (a torchvision .pth archive, "
            "e.g. alexnet-owt-7be5be79.pth)"
        )


def _load_trunk(model, trunk_path: str | os.PathLike) -> None:
    """Copy a torchvision state dict (keys ``features.<i>.*``) into lpips' trunk slices."""
    check_trunk_file(trunk_path)
    try:
        state = torch.load(trunk_path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt archive, or pickled objects other than tensors
        raise ValueError(f"cannot read LPIPS trunk {trunk_path}: {error}") from error
    trunk = {}
    for name, _ in model.net.named_parameters():
        _, index, kind = name.split(".")
        key = f"features.{index}.{kind}"
        if key not in state:
            raise ValueError(
                f"{trunk_path} is not a torchvision {model.pnet_type} state dict (missing {key})"
            )
        trunk[name] = state[key]
    model.net.load_state_dict(trunk)


def load_clip(
    model: str = DEFAULT_CLIP_MODEL,
    pretrained: str | None = DEFAULT_CLIP_PRETRAINED,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    random_weights: bool = False,
    cache_dir: str | None = None,
) -> OpenClipEmbedder:
    """An open_clip model: built-in name + pretrained tag or checkpoint file, ``hf-hub:org/repo``
    or ``local-dir:/path`` (folder with open_clip_config.json and weights).

    Default: OpenAI CLIP ViT-L/14 (the usual CLIP-score model). Weights come from ``cache_dir``
    or open_clip's / HF's cache and are downloaded when a connection exists.
    """
    import open_clip

    schema = model.split(":", 1)[0] if ":" in model else None
    if schema is None and model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; see open_clip.list_models()")
    pretrained = None if random_weights else pretrained
    if schema is None and pretrained and not os.path.isfile(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(model)
        if pretrained not in tags:
            raise ValueError(
                f"{pretrained!r} is neither a pretrained tag of {model} ({tags}) nor a file"
            )
    if schema is None and not pretrained and not random_weights:
        raise ValueError("pretrained is required (a tag or a file); random_weights=True for tests")
    if schema is not None and random_weights:
        raise ValueError(
            "random_weights=True needs a built-in model name, not a hf-hub:/local-dir:"
        )
    try:
        clip = open_clip.create_model(
            model,
            pretrained=pretrained,
            cache_dir=cache_dir,
            load_weights=not random_weights,
            require_pretrained=not random_weights,
        )
        tokenizer = open_clip.get_tokenizer(model, cache_dir=cache_dir)
    except (RuntimeError, OSError, FileNotFoundError) as error:
        raise MissingWeightsError(
            f"open_clip weights for {model} / {pretrained} could not be loaded ({error}). "
            "Download them on a connected machine into the HF cache (HF_HOME) or cache_dir, or pass "
            "a checkpoint file as pretrained / a local-dir:/path model."
        ) from error
    return OpenClipEmbedder(
        model=place_module(clip, device, dtype), tokenizer=tokenizer, name=f"{model}:{pretrained}"
    )


def _hf_missing(what: str, name: str, error: Exception) -> MissingWeightsError:
    return MissingWeightsError(
        f"{what} {name!r} is neither a local directory nor in the Hugging Face cache and could "
        f"not be downloaded ({error}). Run `hf download {name}` on a connected machine (the cache "
        f"is HF_HOME), or pass a local directory. HF_HUB_OFFLINE=1 skips the network retries."
    )


def _from_local_or_hub(load, name: str, what: str):
    """``load(name, local_files_only=...)``: local folder / HF cache first, then the hub."""
    try:
        return load(name, local_files_only=True)
    except OSError:
        pass
    try:
        return load(name)
    except OSError as error:
        raise _hf_missing(what, name, error) from error


def _hf_model(model_class, name: str, random_weights: bool, what: str):
    from transformers import AutoConfig

    if random_weights:
        config = _from_local_or_hub(AutoConfig.from_pretrained, name, f"{what} config")
        return model_class.from_config(config)
    return _from_local_or_hub(model_class.from_pretrained, name, what)


def _hf_processor(processor_class, name: str, what: str):
    return _from_local_or_hub(processor_class.from_pretrained, name, what)


def load_hf_clip(
    name_or_path: str,
    *,
    processor: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    random_weights: bool = False,
) -> HFClipEmbedder:
    """A transformers ``CLIPModel`` + processor (``processor`` defaults to the model's own)."""
    from transformers import AutoProcessor, CLIPModel

    model = _hf_model(CLIPModel, name_or_path, random_weights, "CLIP model")
    proc = _hf_processor(AutoProcessor, processor or name_or_path, "CLIP processor")
    return HFClipEmbedder(
        model=place_module(model, device, dtype), processor=proc, name=name_or_path
    )


def load_pickscore(
    name_or_path: str = DEFAULT_PICKSCORE,
    *,
    processor: str = DEFAULT_PICKSCORE_PROCESSOR,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    random_weights: bool = False,
) -> HFClipEmbedder:
    """PickScore v1 (a CLIP-H fine-tuned on Pick-a-Pic preferences) with the CLIP-H processor."""
    return load_hf_clip(
        name_or_path,
        processor=processor,
        device=device,
        dtype=dtype,
        random_weights=random_weights,
    )


def load_dino(
    name_or_path: str = DEFAULT_DINO,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    random_weights: bool = False,
) -> HFImageEmbedder:
    """A DINOv2 model through transformers (``AutoModel`` + ``AutoImageProcessor``)."""
    from transformers import AutoImageProcessor, AutoModel

    model = _hf_model(AutoModel, name_or_path, random_weights, "DINOv2 model")
    proc = _hf_processor(AutoImageProcessor, name_or_path, "DINOv2 image processor")
    return HFImageEmbedder(
        model=place_module(model, device, dtype), processor=proc, name=name_or_path
    )


@dataclass(eq=False)
class Backbones:
    """The backbones a gallery is scored with, loaded once and reused for every gallery.

    ``lpips`` maps a net name ("alex", "vgg") to an ``lpips.LPIPS``; the others are embedders or
    None. Build it directly from objects (tests) or with ``Backbones.load``.
    """

    lpips: dict[str, torch.nn.Module] = field(default_factory=dict)
    clip: OpenClipEmbedder | HFClipEmbedder | None = None
    dino: HFImageEmbedder | None = None
    pickscore: HFClipEmbedder | None = None
    effnet: Any = None  # EfficientNetEmbedder (ImageNet EfficientNet-Lite0, the terrain extra)

    @classmethod
    def load(
        cls,
        *,
        lpips: tuple[str, ...] = ("alex",),
        clip: tuple[str, str | None] | None = (DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED),
        dino: str | None = None,
        pickscore: str | None = None,
        effnet: bool = False,
        lpips_trunks: dict[str, str] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        random_weights: bool = False,
    ) -> Backbones:
        """Load the named backbones; ``None`` / empty skips one. ``clip`` = (model, pretrained).
        ``effnet``: EfficientNet-Lite0, whose weights ship in its wheel (always the real ones)."""
        trunks = lpips_trunks or {}
        kwargs = {"device": device, "dtype": dtype, "random_weights": random_weights}
        if effnet:
            from couplednoise.eval.backbones.efficientnet import load_efficientnet_lite0
        return cls(
            lpips={net: load_lpips(net, trunk_path=trunks.get(net), **kwargs) for net in lpips},
            clip=load_clip(*clip, **kwargs) if clip else None,
            dino=load_dino(dino, **kwargs) if dino else None,
            pickscore=load_pickscore(pickscore, **kwargs) if pickscore else None,
            effnet=load_efficientnet_lite0(device=device, dtype=dtype) if effnet else None,
        )


# The backbone ids a command or config names (score's options, a batch config's [metrics]).
BACKBONE_IDS = ("clip_model", "clip_pretrained", "dino", "pickscore")


def plan_backbones(
    metrics: Sequence[str],
    *,
    clip_model: str = DEFAULT_CLIP_MODEL,
    clip_pretrained: str | None = DEFAULT_CLIP_PRETRAINED,
    dino: str = DEFAULT_DINO,
    pickscore: str = DEFAULT_PICKSCORE,
    lpips_trunks: dict[str, str] | None = None,
) -> dict:
    """Keyword arguments for ``Backbones.load`` that serve exactly the metrics ``metrics``.

    The metric registry says which backbone each metric needs; the ids say which weights.
    ``hf-hub:`` / ``local-dir:`` CLIP models carry their own weights (no pretrained tag).
    """
    from couplednoise.eval.metrics.registry import required_backbones

    needs = required_backbones(metrics)
    return {
        "lpips": needs["lpips"],
        "clip": (clip_model, None if ":" in clip_model else clip_pretrained)
        if needs["clip"]
        else None,
        "dino": dino if needs["dino"] else None,
        "pickscore": pickscore if needs["pickscore"] else None,
        "effnet": bool(needs["effnet"]),
        "lpips_trunks": dict(lpips_trunks or {}),
    }


def plan_backbones_for(metrics: Sequence[str], ids, lpips_trunks: dict[str, str]) -> dict:
    """``plan_backbones`` with the ``BACKBONE_IDS`` read from ``ids`` (parsed arguments or a
    batch config's metric section: anything with those attributes)."""
    return plan_backbones(
        metrics, lpips_trunks=lpips_trunks, **{key: getattr(ids, key) for key in BACKBONE_IDS}
    )


def check_weights_available(plan: dict, *, random_weights: bool = False) -> None:
    """Before any run folder or model: every backbone of ``plan`` (``Backbones.load`` kwargs)
    either has its weights locally or may still download them (downloads on).

    Raises MissingWeightsError naming the weights and how to supply them; ValueError for an
    unknown LPIPS net, open_clip model or tag, or a trunk file that is not a weights file.
    Downloads on, a weight that is not cached yet is not an error here (loading fetches it).
    """
    offline = downloads_off()
    trunks = plan.get("lpips_trunks") or {}
    for net in plan.get("lpips") or ():
        if net not in LPIPS_NETS:
            raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
        if random_weights:
            continue
        if net in trunks:
            check_trunk_file(trunks[net])
        elif offline and cached_trunk(net) is None:
            raise MissingWeightsError(
                f"LPIPS-{net} needs {LPIPS_TRUNK_FILES[net]} in "
                f"{os.path.join(torch.hub.get_dir(), 'checkpoints')} (downloads are off); copy "
                f"it there or pass a trunk file (--lpips-trunk {net}=PATH)"
            )
    if plan.get("clip"):
        _check_open_clip(*plan["clip"], random_weights=random_weights, offline=offline)
    if plan.get("effnet"):
        from couplednoise.eval.backbones.efficientnet import check_installed

        check_installed()
    for key, what in (("dino", "DINOv2 model"), ("pickscore", "PickScore model")):
        name = plan.get(key)
        if name and not random_weights and offline and not _hf_available(name):
            raise _hf_missing(what, name, OSError("not in the local cache"))


def _hf_available(name: str) -> bool:
    """A local folder, or a hub id with a config.json in the HF cache."""
    if os.path.isdir(os.path.expanduser(name)):
        return True
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def _check_open_clip(model: str, pretrained: str | None, *, random_weights: bool, offline: bool):
    """The open_clip model / tag exist; offline, their weights must be local."""
    import open_clip

    schema = model.split(":", 1)[0] if ":" in model else None
    if schema == "local-dir":
        if not os.path.isdir(model.split(":", 1)[1]):
            raise MissingWeightsError(f"open_clip local-dir folder not found: {model}")
        return
    if schema is not None:  # hf-hub:org/name
        if offline and not _hf_available(model.split(":", 1)[1]):
            raise _hf_missing("open_clip model", model, OSError("not in the local cache"))
        return
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; see open_clip.list_models()")
    if random_weights:
        return
    if not pretrained:
        raise ValueError("pretrained is required (a tag or a file); random_weights=True for tests")
    if os.path.isfile(pretrained):
        return
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        raise ValueError(
            f"{pretrained!r} is neither a pretrained tag of {model} ({tags}) nor a file"
        )
    hub = (open_clip.get_pretrained_cfg(model, pretrained) or {}).get("hf_hub", "")
    if offline and not (hub and _hf_cached_any(hub.strip("/"))):
        raise MissingWeightsError(
            f"open_clip weights for {model} / {pretrained} are not in the Hugging Face cache and "
            "downloads are off (HF_HUB_OFFLINE=1). Download them on a connected machine into the "
            "HF cache (HF_HOME), or pass a checkpoint file as pretrained / a local-dir:/path model."
        )


def _hf_cached_any(repo: str) -> bool:
    """Whether an open_clip hub repo has weights in the HF cache (either file name)."""
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo, name), str)
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    )
