"""Measurement side of couplednoise, in rooms:

    metrics/     pure metric functions on tensors, and the registry of what each metric needs
    backbones/   loading metric networks (LPIPS, CLIP, DINOv2, PickScore) and embedding with them
    runs/        run folders: atomic files, galleries.json, provenance, statistics, tables, images
    batch/       configured, resumable batch experiments and their reports
    background/  scoring fixed-object background galleries
    demo/        the engine behind `couplednoise demo` and the web demo: galleries from one seed
    studies/     the studies behind the documentation's tables (`couplednoise study NAME`)
    cli/         the `couplednoise` command: subcommand registry, shared options, error contract

The public metric and backbone API is re-exported here, resolved on first access so that
``couplednoise --help`` does not import torch.
"""

from __future__ import annotations

import importlib

# Public name -> defining module (relative to this package).
_EXPORTS: dict[str, str] = {
    "pairwise_l2": "metrics.pairwise",
    "pairwise_cosine_distance": "metrics.pairwise",
    "pairwise_ms_ssim": "metrics.ms_ssim",
    "ms_ssim_settings": "metrics.ms_ssim",
    "pairwise_lpips": "metrics.lpips_pairwise",
    "lpips_features": "metrics.lpips_pairwise",
    "masked_lpips": "metrics.lpips_pairwise",
    "vendi_score": "metrics.vendi",
    "vendi_score_from_kernel": "metrics.vendi",
    "similarity_kernel": "metrics.vendi",
    "clip_score": "metrics.alignment",
    "clip_score_from_features": "metrics.alignment",
    "pick_score": "metrics.alignment",
    "masked_psnr": "metrics.fidelity",
    "masked_ssim": "metrics.fidelity",
    "foreground_fidelity": "metrics.fidelity",
    "background_diversity": "metrics.fidelity",
    "fidelity_diversity_tradeoff": "metrics.fidelity",
    "background_generation_metrics": "metrics.fidelity",
    "gallery_metrics": "metrics.registry",
    "available_metrics": "metrics.registry",
    "METRICS": "metrics.registry",
    "Backbones": "backbones.loading",
    "MissingWeightsError": "backbones.loading",
    "load_lpips": "backbones.loading",
    "load_clip": "backbones.loading",
    "load_hf_clip": "backbones.loading",
    "load_pickscore": "backbones.loading",
    "load_dino": "backbones.loading",
    "OpenClipEmbedder": "backbones.embedders",
    "HFClipEmbedder": "backbones.embedders",
    "HFImageEmbedder": "backbones.embedders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
