"""Prompt alignment: CLIP score (Hessel et al. 2021) and PickScore from image / text embeddings."""

from __future__ import annotations

import torch

from couplednoise.eval.metrics.checks import check_reduction


def _normalised_pairs(
    image_features: torch.Tensor, text_features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError("image and text features must be [N, D] tensors")
    if text_features.shape[0] == 1:
        text_features = text_features.expand(image_features.shape[0], -1)
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image features {list(image_features.shape)} and text features "
            f"{list(text_features.shape)} do not pair up (one prompt, or one per image)"
        )
    image = torch.nn.functional.normalize(image_features.double(), dim=1)
    text = torch.nn.functional.normalize(text_features.double(), dim=1)
    return image, text


def clip_score_from_features(
    image_features: torch.Tensor, text_features: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """100 * max(cos(image, text), 0) per pair of [N, D] embeddings (text may be [1, D]).

    Returns the mean over images (float64 scalar) or [N] with ``reduction="none"``.
    """
    check_reduction(reduction)
    image, text = _normalised_pairs(image_features, text_features)
    scores = 100 * (image * text).sum(1).clamp_min(0)
    return scores.mean() if reduction == "mean" else scores


def _prompts_for(images: torch.Tensor, prompts: str | list[str]) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if len(prompts) not in (1, images.shape[0]):
        raise ValueError(f"got {len(prompts)} prompts for {images.shape[0]} images (need 1 or N)")
    return prompts


def clip_score(
    images: torch.Tensor, prompts: str | list[str], model, *, reduction: str = "mean"
) -> torch.Tensor:
    """CLIP score of images [N, 3, H, W] in [0, 1] against one prompt or one per image.

    ``model`` is a CLIP embedder from ``eval.load_clip`` (open_clip) or ``eval.load_hf_clip``
    (transformers); the score is 100 * max(cos, 0) per image, averaged unless ``reduction="none"``.
    """
    check_reduction(reduction)
    texts = _prompts_for(images, prompts)
    return clip_score_from_features(
        model.embed_images(images), model.embed_texts(texts), reduction=reduction
    )


def pick_score(
    images: torch.Tensor, prompts: str | list[str], model, *, reduction: str = "mean"
) -> torch.Tensor:
    """PickScore (Kirstain et al. 2023): logit_scale * cos(image, text), with ``eval.load_pickscore``.

    Returns the mean over images or [N] with ``reduction="none"`` (about 20-23 for real images).
    """
    check_reduction(reduction)
    texts = _prompts_for(images, prompts)
    image, text = _normalised_pairs(model.embed_images(images), model.embed_texts(texts))
    scores = model.logit_scale * (image * text).sum(1)
    return scores.mean() if reduction == "mean" else scores
