"""One call that scores a gallery (the images of one prompt) with the configured metrics."""

from __future__ import annotations

import torch

from couplednoise.eval.backbones.loading import Backbones
from couplednoise.eval.metrics.alignment import clip_score_from_features, pick_score
from couplednoise.eval.metrics.checks import check_images
from couplednoise.eval.metrics.lpips_pairwise import pairwise_lpips
from couplednoise.eval.metrics.ms_ssim import pairwise_ms_ssim
from couplednoise.eval.metrics.pairwise import pairwise_cosine_distance, pairwise_l2
from couplednoise.eval.metrics.vendi import vendi_score

# name -> what it measures; "div" metrics: higher = more diverse, except ms_ssim.
METRICS: dict[str, str] = {
    "l2": "mean pairwise pixel L2 (div, higher = more diverse)",
    "ms_ssim": "mean pairwise MS-SSIM (div, LOWER = more diverse)",
    "vendi_pixel": "Vendi score, cosine kernel on raw pixels (div)",
    "lpips_alex": "mean pairwise LPIPS, AlexNet (div)",
    "lpips_vgg": "mean pairwise LPIPS, VGG (div)",
    "lpips_squeeze": "mean pairwise LPIPS, SqueezeNet (div)",
    "vendi_clip": "Vendi score, cosine kernel on CLIP image embeddings (div)",
    "clip_distance": "mean pairwise cosine distance of CLIP image embeddings (div)",
    "vendi_dino": "Vendi score, cosine kernel on DINOv2 embeddings (div)",
    "dino_distance": "mean pairwise cosine distance of DINOv2 embeddings (div)",
    "clip_score": "CLIP score 100 * max(cos, 0) against the prompt (alignment)",
    "pickscore": "PickScore against the prompt (alignment / preference)",
}


def available_metrics(
    backbones: Backbones | None = None, *, with_prompt: bool = False
) -> list[str]:
    """The metric names ``gallery_metrics`` can compute with ``backbones`` (and a prompt)."""
    backbones = backbones or Backbones()
    names = ["l2", "ms_ssim", "vendi_pixel"]
    names += [f"lpips_{net}" for net in backbones.lpips]
    if backbones.clip is not None:
        names += ["vendi_clip", "clip_distance"] + (["clip_score"] if with_prompt else [])
    if backbones.dino is not None:
        names += ["vendi_dino", "dino_distance"]
    if backbones.pickscore is not None and with_prompt:
        names.append("pickscore")
    return names


def _requirement(name: str) -> str:
    if name.startswith("lpips_"):
        return f"an LPIPS-{name[6:]} net (Backbones(lpips={{'{name[6:]}': load_lpips(...)}}))"
    if name in ("clip_score", "pickscore"):
        return "a prompt and the matching backbone (clip / pickscore)"
    return f"the {name.split('_')[1]} backbone"


def check_metric_names(
    metrics: list[str] | tuple[str, ...], backbones: Backbones | None, *, with_prompt: bool
) -> list[str]:
    """Validate requested metric names against what the backbones allow (before any work)."""
    available = available_metrics(backbones, with_prompt=with_prompt)
    for name in metrics:
        if name not in METRICS and not name.startswith("lpips_"):
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        if name not in available:
            raise ValueError(f"metric {name!r} needs {_requirement(name)}")
    return list(metrics)


def gallery_metrics(
    images: torch.Tensor,
    *,
    backbones: Backbones | None = None,
    metrics: list[str] | tuple[str, ...] | None = None,
    prompt: str | None = None,
    vendi_q: float = 1.0,
    batch_size: int = 16,
) -> dict[str, float]:
    """Diversity (and alignment) metrics of one gallery [K, 3, H, W] in [0, 1], K >= 2.

    ``metrics`` (names from ``METRICS``) defaults to every metric the ``backbones`` allow:
    l2, ms_ssim and vendi_pixel always; lpips_<net> per LPIPS net; vendi_clip, clip_distance
    and (with ``prompt``) clip_score with a CLIP backbone; vendi_dino, dino_distance with
    DINOv2; pickscore with PickScore and a prompt. Embeddings are computed once per backbone.
    A metric whose backbone is missing raises ValueError before any work.
    """
    check_images(images, min_count=2)
    backbones = backbones or Backbones()
    with_prompt = prompt is not None
    names = (
        available_metrics(backbones, with_prompt=with_prompt)
        if metrics is None
        else check_metric_names(metrics, backbones, with_prompt=with_prompt)
    )
    embeddings: dict[str, torch.Tensor] = {}

    def embed(kind: str) -> torch.Tensor:
        if kind not in embeddings:
            embeddings[kind] = getattr(backbones, kind).embed_images(images)
        return embeddings[kind]

    result: dict[str, float] = {}
    for name in names:
        if name == "l2":
            value = pairwise_l2(images)
        elif name == "ms_ssim":
            value = pairwise_ms_ssim(images)
        elif name == "vendi_pixel":
            value = vendi_score(images.flatten(1), q=vendi_q)
        elif name.startswith("lpips_"):
            value = pairwise_lpips(images, backbones.lpips[name[6:]], batch_size=batch_size)
        elif name in ("vendi_clip", "vendi_dino"):
            value = vendi_score(embed(name[6:]), q=vendi_q)
        elif name in ("clip_distance", "dino_distance"):
            value = pairwise_cosine_distance(embed(name.split("_")[0]))
        elif name == "clip_score":
            text = backbones.clip.embed_texts([prompt])
            value = clip_score_from_features(embed("clip"), text)
        else:  # pickscore
            value = pick_score(images, prompt, backbones.pickscore)
        result[name] = float(value)
    return result
