"""Input checks shared by the metric functions: raise early with a message a user can act on."""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "none")


def check_images(images: torch.Tensor, *, name: str = "images", min_count: int = 1) -> None:
    """Require a float tensor [N, 3, H, W] in [0, 1] with N >= ``min_count``."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, 3, H, W], got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be a float tensor in [0, 1], got dtype {images.dtype} "
            "(convert uint8 images with images.float() / 255)"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape [N, 3, H, W], got {list(images.shape)}")
    if images.shape[0] < min_count:
        raise ValueError(f"{name} needs at least {min_count} images, got {images.shape[0]}")
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ValueError(
            f"{name} must lie in [0, 1], got values in [{images.min().item():.3g}, "
            f"{images.max().item():.3g}] (images in [-1, 1]? use (images + 1) / 2)"
        )


def check_reduction(reduction: str) -> None:
    """Require one of ``REDUCTIONS``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_features(features: torch.Tensor, *, min_count: int = 1) -> torch.Tensor:
    """Require a float tensor [n, ...]; returns it flattened to [n, d]."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor [n, d], got {type(features).__name__}")
    if not features.is_floating_point():
        raise TypeError(f"features must be a float tensor, got dtype {features.dtype}")
    if features.ndim < 2:
        raise ValueError(
            f"features must have shape [n, d] (or [n, ...]), got {list(features.shape)}"
        )
    if features.shape[0] < min_count:
        raise ValueError(f"need at least {min_count} feature vectors, got {features.shape[0]}")
    return features.reshape(features.shape[0], -1)


def check_mask(
    mask: torch.Tensor, height: int, width: int, count: int | None = None
) -> torch.Tensor:
    """Validate a {0,1} mask [H, W], [1|N, H, W] or [1|N, 1, H, W]; returns it as float [M, 1, H, W].

    ``count`` (when given) is the number of images the mask must broadcast against (M in {1, count}).
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor [H, W], got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(
            f"mask must have shape [H, W], [N, H, W] or [N, 1, H, W], got {list(mask.shape)}"
        )
    if tuple(mask.shape[-2:]) != (height, width):
        raise ValueError(
            f"mask is {tuple(mask.shape[-2:])} but the images are {(height, width)}; "
            "masks live in pixel space at the image resolution"
        )
    if count is not None and mask.shape[0] not in (1, count):
        raise ValueError(f"mask has {mask.shape[0]} entries but there are {count} images")
    mask = mask.float()
    if ((mask != 0) & (mask != 1)).any():
        raise ValueError("mask must be binary {0, 1} (1 = foreground / region to measure)")
    if (mask.flatten(1).sum(1) == 0).any():
        raise ValueError("mask is empty (no pixel set): nothing to measure in that region")
    return mask


def check_reference(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Validate a reference [3, H, W] or [1|N, 3, H, W] for images [N, 3, H, W]; returns it 4-d."""
    check_images(images)
    reference = reference[None] if reference.ndim == 3 else reference
    check_images(reference, name="reference")
    if reference.shape[0] not in (1, images.shape[0]) or reference.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"reference must be [3, H, W] or [N, 3, H, W] matching images {list(images.shape)}, "
            f"got {list(reference.shape)}"
        )
    return reference


def upper_pairs_mean(matrix: torch.Tensor) -> torch.Tensor:
    """Mean of the entries above the diagonal of an n x n matrix (n >= 2): the mean over pairs."""
    n = matrix.shape[0]
    rows, cols = torch.triu_indices(n, n, offset=1, device=matrix.device)
    return matrix[rows, cols].mean()
