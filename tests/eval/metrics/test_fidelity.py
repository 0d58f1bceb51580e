"""Masked PSNR / SSIM, background diversity and the trade-off summary."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from couplednoise.eval import (
    background_diversity,
    background_generation_metrics,
    fidelity_diversity_tradeoff,
    load_lpips,
    masked_psnr,
    masked_ssim,
    pairwise_l2,
)

SIZE = 32


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_masked_psnr_full_mask_equals_torchmetrics_and_box_mask_equals_crop():
    images, reference = _images(3, 0), _images(1, 1)[0]
    full = masked_psnr(images, reference, torch.ones(SIZE, SIZE), reduction="none")
    expected = peak_signal_noise_ratio(
        images, reference.expand_as(images), data_range=1.0, dim=(1, 2, 3), reduction="none"
    )
    torch.testing.assert_close(full, expected)
    box = torch.zeros(SIZE, SIZE)
    box[4:20, 10:30] = 1
    crop = peak_signal_noise_ratio(
        images[..., 4:20, 10:30],
        reference[None, :, 4:20, 10:30].expand(3, -1, -1, -1),
        data_range=1.0,
        dim=(1, 2, 3),
        reduction="none",
    )
    torch.testing.assert_close(masked_psnr(images, reference, box, reduction="none"), crop)
    assert masked_psnr(images, reference, box).item() == pytest.approx(crop.mean().item(), rel=1e-5)


def test_masked_psnr_ignores_changes_outside_the_mask():
    reference = _images(1, 2)[0]
    mask = torch.zeros(SIZE, SIZE)
    mask[:16] = 1
    changed = reference.clone()[None]
    changed[..., 16:, :] = 0.0  # only outside the mask
    assert torch.isinf(masked_psnr(changed, reference, mask))


def test_masked_ssim_full_mask_equals_torchmetrics_ssim():
    images, reference = _images(2, 3), _images(1, 4)[0]
    got = masked_ssim(images, reference, torch.ones(SIZE, SIZE), reduction="none")
    expected = structural_similarity_index_measure(
        images, reference.expand_as(images), data_range=1.0, reduction="none"
    )
    torch.testing.assert_close(got, expected)
    assert masked_ssim(reference[None], reference, torch.ones(SIZE, SIZE)).item() == pytest.approx(
        1
    )


@pytest.mark.parametrize("metric", [masked_psnr, masked_ssim])
def test_masked_metrics_reject_empty_or_mismatched_masks(metric):
    images, reference = _images(2, 5), _images(1, 6)[0]
    with pytest.raises(ValueError, match="empty"):
        metric(images, reference, torch.zeros(SIZE, SIZE))
    with pytest.raises(ValueError, match="entries"):
        metric(images, reference, torch.ones(3, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match="binary"):
        metric(images, reference, torch.rand(SIZE, SIZE))


def test_background_diversity_sees_only_the_background():
    lpips_net = load_lpips("alex", random_weights=True)
    base = _images(1, 7)
    object_mask = torch.zeros(SIZE, SIZE)
    object_mask[8:24, 8:24] = 1
    noise = _images(4, 8)
    # Same background, different objects: background L2 is 0; different backgrounds: > 0.
    objects_vary = base * (1 - object_mask) + noise * object_mask
    assert background_diversity(objects_vary, object_mask)["bg_l2"] == 0.0
    backgrounds_vary = base * object_mask + noise * (1 - object_mask)
    result = background_diversity(backgrounds_vary, object_mask, lpips_net=lpips_net)
    bg = 1 - object_mask
    assert result["bg_l2"] == pytest.approx(pairwise_l2(backgrounds_vary, mask=bg).item())
    assert result["bg_lpips"] > 0
    with pytest.raises(ValueError, match="no background"):
        background_diversity(noise, torch.ones(SIZE, SIZE))
    summary = background_generation_metrics(backgrounds_vary, base[0], object_mask, lpips_net)
    assert summary["fg_psnr"] == float("inf") and summary["fg_lpips"] < summary["bg_lpips"]
    expected = fidelity_diversity_tradeoff(summary["fg_lpips"], summary["bg_lpips"])
    assert summary["tradeoff"] == pytest.approx(expected)


def test_tradeoff_known_values():
    assert fidelity_diversity_tradeoff(0.0, 1.0) == pytest.approx(1.0)
    assert fidelity_diversity_tradeoff(1.0, 0.8) == 0.0  # object lost
    assert fidelity_diversity_tradeoff(0.0, 0.0) == 0.0  # no diversity
    assert fidelity_diversity_tradeoff(0.5, 0.5) == pytest.approx(0.5)
    assert fidelity_diversity_tradeoff(0.1, 0.3) > fidelity_diversity_tradeoff(0.1, 0.2)
