"""Foreground fidelity against a reference and background diversity, for fixed-object generation.

A gallery [N, 3, H, W] keeps one object (``object_mask`` [H, W], 1 = object) from a reference
image [3, H, W] while the background varies. Fidelity is measured inside the mask against the
reference, diversity outside it between gallery images.
"""

from __future__ import annotations

import torch

from couplednoise.eval.metrics.checks import check_mask, check_reduction, check_reference
from couplednoise.eval.metrics.lpips_pairwise import masked_lpips, pairwise_lpips
from couplednoise.eval.metrics.pairwise import pairwise_l2


def _pair_with_reference(
    images: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked (reference [N, 3, H, W], mask [N, 1, H, W]) expanded against images."""
    reference = check_reference(images, reference)
    mask = check_mask(mask, *images.shape[-2:], count=images.shape[0])
    n = images.shape[0]
    reference = reference.to(images.device, images.dtype).expand(n, -1, -1, -1)
    return reference, mask.to(images.device, images.dtype).expand(n, -1, -1, -1)


def masked_psnr(
    images: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor,
    *,
    data_range: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """PSNR in dB of each image against ``reference`` over the pixels where ``mask`` is 1.

    images [N, 3, H, W], reference [3, H, W] or [N, 3, H, W] in [0, 1]; mask [H, W] or
    [N, 1, H, W]. An all-ones mask gives the ordinary PSNR; identical regions give inf.
    Returns the mean over images or [N] with ``reduction="none"``.
    """
    check_reduction(reduction)
    reference, mask = _pair_with_reference(images, reference, mask)
    squared = ((images.double() - reference.double()) ** 2 * mask.double()).sum(dim=(1, 2, 3))
    mse = squared / (images.shape[1] * mask.double().sum(dim=(1, 2, 3)))
    values = (10 * torch.log10(data_range**2 / mse)).to(images.dtype)
    return values.mean() if reduction == "mean" else values


def masked_ssim(
    images: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """SSIM map (torchmetrics, 11-px Gaussian window, data range 1) averaged where ``mask`` is 1.

    Shapes as ``masked_psnr``; an all-ones mask gives torchmetrics' SSIM. Returns the mean over
    images or [N] with ``reduction="none"``.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    check_reduction(reduction)
    reference, mask = _pair_with_reference(images, reference, mask)
    _, ssim_map = structural_similarity_index_measure(
        images, reference, data_range=1.0, reduction="none", return_full_image=True
    )
    weights = mask.expand_as(ssim_map)
    values = (ssim_map * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3))
    return values.mean() if reduction == "mean" else values


def foreground_fidelity(
    images: torch.Tensor, reference: torch.Tensor, object_mask: torch.Tensor, *, lpips_net=None
) -> dict[str, float]:
    """Object fidelity: ``fg_psnr``, ``fg_ssim`` and (with ``lpips_net``) ``fg_lpips``, means over images."""
    result = {
        "fg_psnr": float(masked_psnr(images, reference, object_mask)),
        "fg_ssim": float(masked_ssim(images, reference, object_mask)),
    }
    if lpips_net is not None:
        result["fg_lpips"] = float(masked_lpips(images, reference, object_mask, lpips_net))
    return result


def background_mask(object_mask: torch.Tensor) -> torch.Tensor:
    """1 - object_mask, as a float [H, W] mask; the object must not cover the whole image."""
    if object_mask.ndim != 2:
        raise ValueError(f"object_mask must be [H, W] for a gallery, got {list(object_mask.shape)}")
    background = 1 - object_mask.float()
    if background.sum() == 0:
        raise ValueError("object_mask covers the whole image: there is no background to measure")
    return background


def background_diversity(
    images: torch.Tensor, object_mask: torch.Tensor, *, lpips_net=None
) -> dict[str, float]:
    """Diversity outside the object: ``bg_l2`` and (with ``lpips_net``) ``bg_lpips`` over pairs."""
    background = background_mask(object_mask)
    result = {"bg_l2": float(pairwise_l2(images, mask=background))}
    if lpips_net is not None:
        result["bg_lpips"] = float(pairwise_lpips(images, lpips_net, mask=background))
    return result


def fidelity_diversity_tradeoff(fg_lpips: float, bg_lpips: float) -> float:
    """One number for the trade-off: harmonic mean of fidelity 1 - fg_lpips and diversity bg_lpips.

    High only when the object is kept (fg_lpips near 0) and the backgrounds differ (bg_lpips
    high); 0 if either side fails. A plot shows bg_lpips (x) against 1 - fg_lpips (y) per method.
    """
    fidelity = min(max(1.0 - fg_lpips, 0.0), 1.0)
    diversity = max(bg_lpips, 0.0)
    if fidelity + diversity == 0:
        return 0.0
    return 2 * fidelity * diversity / (fidelity + diversity)


def background_generation_metrics(
    images: torch.Tensor, reference: torch.Tensor, object_mask: torch.Tensor, lpips_net
) -> dict[str, float]:
    """Foreground fidelity, background diversity and their ``tradeoff`` for one gallery.

    images [N, 3, H, W] (N >= 2), reference [3, H, W], object_mask [H, W] (1 = object).
    """
    result = foreground_fidelity(images, reference, object_mask, lpips_net=lpips_net)
    result.update(background_diversity(images, object_mask, lpips_net=lpips_net))
    result["tradeoff"] = fidelity_diversity_tradeoff(result["fg_lpips"], result["bg_lpips"])
    return result
