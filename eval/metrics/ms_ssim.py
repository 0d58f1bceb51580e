"""Mean pairwise MS-SSIM ("MSS", lower = more diverse) via torchmetrics, with a small-image fallback."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from couplednoise.eval.metrics.checks import check_images, check_reduction

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
STANDARD_KERNEL_SIZE = 11
STANDARD_SIGMA = 1.5


@dataclass(frozen=True)
class MsSsimSettings:
    """Scale weights and Gaussian window used for one image size."""

    betas: tuple[float, ...]
    kernel_size: int
    sigma: float


def ms_ssim_settings(height: int, width: int) -> MsSsimSettings:
    """The MS-SSIM settings for images of ``height`` x ``width``.

    Standard (Wang et al. 2003): 5 scales, 11-px Gaussian window (sigma 1.5), which torchmetrics
    accepts from 176 px on. Smaller images fall back to the largest number of scales s whose
    coarsest level (size / 2^(s-1)) still holds the 11-px window, with the first s standard
    weights renormalised to sum 1 (64 px -> 3 scales, 128 px -> 4); below 11 px a single scale
    with the largest odd window that fits (sigma scaled by window / 11).
    """
    side = min(height, width)
    if side < 2:
        raise ValueError(f"MS-SSIM needs images of at least 2 x 2 pixels, got {height} x {width}")
    scales = 1
    for s in range(len(STANDARD_BETAS), 0, -1):
        # torchmetrics' own size check, and the window must fit the coarsest level.
        fits_torchmetrics = side // max(1, s - 1) ** 2 > STANDARD_KERNEL_SIZE - 1 and side >= 2**s
        if fits_torchmetrics and side // 2 ** (s - 1) >= STANDARD_KERNEL_SIZE:
            scales = s
            break
    kernel_size = STANDARD_KERNEL_SIZE
    if side < STANDARD_KERNEL_SIZE:
        kernel_size = side if side % 2 else side - 1
    betas = STANDARD_BETAS
    if scales < len(STANDARD_BETAS):
        betas = tuple(b / sum(STANDARD_BETAS[:scales]) for b in STANDARD_BETAS[:scales])
    return MsSsimSettings(
        betas=betas,
        kernel_size=kernel_size,
        sigma=STANDARD_SIGMA * kernel_size / STANDARD_KERNEL_SIZE,
    )


def pairwise_ms_ssim(
    images: torch.Tensor, *, reduction: str = "mean", batch_size: int = 64
) -> torch.Tensor:
    """MS-SSIM between every pair of images [N, 3, H, W] in [0, 1] (data range 1).

    Uses torchmetrics' ``multiscale_structural_similarity_index_measure`` (normalize="relu" so
    negative contrast terms of very different images do not give NaN) on ``batch_size`` pairs
    at a time, with ``ms_ssim_settings`` for the image size. Returns the mean over pairs
    (scalar; 1 = all identical, lower = more diverse), or the N x N matrix (diagonal 1) with
    ``reduction="none"``.
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    check_reduction(reduction)
    check_images(images, min_count=2)
    n = images.shape[0]
    settings = ms_ssim_settings(*images.shape[-2:])
    rows, cols = torch.triu_indices(n, n, offset=1)
    values = []
    for start in range(0, rows.numel(), batch_size):
        i, j = rows[start : start + batch_size], cols[start : start + batch_size]
        values.append(
            multiscale_structural_similarity_index_measure(
                images[i.to(images.device)],
                images[j.to(images.device)],
                data_range=1.0,
                kernel_size=settings.kernel_size,
                sigma=settings.sigma,
                betas=settings.betas,
                normalize="relu",
                reduction="none",
            )
        )
    pair_values = torch.cat(values)
    if reduction == "mean":
        return pair_values.mean()
    matrix = torch.ones(n, n, dtype=pair_values.dtype, device=pair_values.device)
    matrix[rows, cols] = pair_values
    matrix[cols, rows] = pair_values
    return matrix
