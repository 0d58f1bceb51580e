"""gallery_metrics: the configured metrics of one gallery, equal to the individual functions."""

from __future__ import annotations

import pytest
import torch

from couplednoise.eval import (
    Backbones,
    available_metrics,
    gallery_metrics,
    load_lpips,
    pairwise_l2,
    pairwise_lpips,
    pairwise_ms_ssim,
    vendi_score,
)


class FakeClip:
    """A deterministic stand-in embedder: mean colour per quadrant (checks the plumbing only)."""

    name = "fake"

    def embed_images(self, images):
        return torch.nn.functional.adaptive_avg_pool2d(images, 2).flatten(1)

    def embed_texts(self, prompts):
        return torch.ones(len(prompts), 12)


def _gallery(seed: int = 0) -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_weight_free_metrics_by_default():
    images = _gallery()
    result = gallery_metrics(images)
    assert list(result) == ["l2", "ms_ssim", "vendi_pixel"]
    assert result["l2"] == pytest.approx(pairwise_l2(images).item(), rel=1e-6)
    assert result["ms_ssim"] == pytest.approx(pairwise_ms_ssim(images).item(), rel=1e-6)
    assert result["vendi_pixel"] == pytest.approx(vendi_score(images.flatten(1)).item())


def test_backbone_metrics_equal_the_functions():
    images = _gallery(1)
    alex = load_lpips("alex", random_weights=True)
    backbones = Backbones(lpips={"alex": alex}, clip=FakeClip())
    result = gallery_metrics(images, backbones=backbones, prompt="a cat", vendi_q=2.0)
    assert set(result) == set(available_metrics(backbones, with_prompt=True))
    assert result["lpips_alex"] == pytest.approx(pairwise_lpips(images, alex).item(), rel=1e-6)
    features = FakeClip().embed_images(images)
    assert result["vendi_clip"] == pytest.approx(vendi_score(features, q=2.0).item())
    assert 0 <= result["clip_score"] <= 100
    assert "clip_score" not in gallery_metrics(images, backbones=backbones)  # no prompt


def test_identical_gallery_has_no_diversity():
    same = _gallery()[:1].expand(3, -1, -1, -1)
    result = gallery_metrics(same, metrics=["l2", "ms_ssim", "vendi_pixel"])
    assert result["l2"] == 0.0
    assert result["ms_ssim"] == pytest.approx(1.0)
    assert result["vendi_pixel"] == pytest.approx(1.0)


def test_requested_metric_without_backbone_fails_before_work():
    with pytest.raises(ValueError, match="LPIPS-vgg"):
        gallery_metrics(_gallery(), metrics=["l2", "lpips_vgg"])
    with pytest.raises(ValueError, match="prompt"):
        gallery_metrics(_gallery(), backbones=Backbones(clip=FakeClip()), metrics=["clip_score"])
    with pytest.raises(ValueError, match="unknown metric"):
        gallery_metrics(_gallery(), metrics=["fid"])
    with pytest.raises(ValueError, match="at least 2"):
        gallery_metrics(_gallery()[:1])
