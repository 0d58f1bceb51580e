"""Measurement side: diversity, alignment and fidelity metrics, backbones, batch runs, reports."""

from __future__ import annotations

import importlib

# Public name -> defining module. Resolved on first access so that `couplednoise --help`
# (whose entry point lives in this package) does not import torch.
_EXPORTS: dict[str, str] = {
    "pairwise_l2": "pairwise",
    "pairwise_cosine_distance": "pairwise",
    "pairwise_ms_ssim": "ms_ssim",
    "ms_ssim_settings": "ms_ssim",
    "pairwise_lpips": "lpips_pairwise",
    "lpips_features": "lpips_pairwise",
    "masked_lpips": "lpips_pairwise",
    "vendi_score": "vendi",
    "vendi_score_from_kernel": "vendi",
    "similarity_kernel": "vendi",
    "clip_score": "alignment",
    "clip_score_from_features": "alignment",
    "pick_score": "alignment",
    "masked_psnr": "fidelity",
    "masked_ssim": "fidelity",
    "foreground_fidelity": "fidelity",
    "background_diversity": "fidelity",
    "fidelity_diversity_tradeoff": "fidelity",
    "background_generation_metrics": "fidelity",
    "gallery_metrics": "gallery",
    "available_metrics": "gallery",
    "METRICS": "gallery",
    "Backbones": "backbones",
    "MissingWeightsError": "backbones",
    "load_lpips": "backbones",
    "load_clip": "backbones",
    "load_hf_clip": "backbones",
    "load_pickscore": "backbones",
    "load_dino": "backbones",
    "OpenClipEmbedder": "embedders",
    "HFClipEmbedder": "embedders",
    "HFImageEmbedder": "embedders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
