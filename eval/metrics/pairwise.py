"""Pairwise diversity in pixel or feature space: mean pairwise L2 and cosine distance."""

from __future__ import annotations

import torch

from couplednoise.eval.metrics.checks import (
    check_features,
    check_images,
    check_mask,
    check_reduction,
    upper_pairs_mean,
)


def pairwise_l2(
    images: torch.Tensor, *, mask: torch.Tensor | None = None, reduction: str = "mean"
) -> torch.Tensor:
    """Euclidean distance ||x_i - x_j||_2 between flattened images [N, 3, H, W] in [0, 1].

    ``mask`` [H, W] (1 = pixels to compare, e.g. the background) restricts the distance to those
    pixels. Returns the mean over the N(N-1)/2 pairs (scalar), or the N x N matrix with
    ``reduction="none"``. Computed in float64, without the Gram-matrix shortcut, so identical
    images give exactly 0.
    """
    check_reduction(reduction)
    check_images(images, min_count=2)
    x = images.double()
    if mask is not None:
        x = x * check_mask(mask, *images.shape[-2:], count=1).to(x.device, x.dtype)
    x = x.flatten(1)
    distances = torch.cdist(x[None], x[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
    distances = distances.to(images.dtype)
    return upper_pairs_mean(distances) if reduction == "mean" else distances


def pairwise_cosine_distance(features: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """1 - cos(f_i, f_j) between feature vectors [n, d] (e.g. CLIP or DINOv2 image embeddings).

    Returns the mean over pairs (scalar), or the n x n matrix with ``reduction="none"``.
    """
    check_reduction(reduction)
    x = check_features(features, min_count=2).double()
    x = torch.nn.functional.normalize(x, dim=1)
    distances = (1 - x @ x.T).clamp_min(0).fill_diagonal_(0).to(features.dtype)
    return upper_pairs_mean(distances) if reduction == "mean" else distances
