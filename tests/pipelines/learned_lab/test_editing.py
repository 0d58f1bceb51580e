"""SDEdit and blended inpainting on the learned lab (committed weights, few steps)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from couplednoise.pipelines.background import BASELINE_FAMILIES, baseline_pipelines
from couplednoise.pipelines.inversion import matching_sampler
from couplednoise.pipelines.learned_lab.editing import (
    LearnedLabImg2ImgPipeline,
    LearnedLabInpaintPipeline,
    editing_pipelines,
)
from couplednoise.pipelines.learned_lab.world import sample_composites

STEPS = 10
KW = {"num_inference_steps": STEPS, "guidance_scale": 1.0, "output_type": "pt"}


def seed(s: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(s)


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


@pytest.fixture(scope="module")
def references():
    with pytest.MonkeyPatch.context() as mp:
        from couplednoise.pipelines.learned_lab.world import FMNIST_DIR_ENV

        from .conftest import FIXTURE

        mp.setenv(FMNIST_DIR_ENV, str(FIXTURE))
        return sample_composites(2, "test", generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def editors(learned_pipe):
    return editing_pipelines(learned_pipe)


class Inputs:
    """Records the UNet's first input of a call."""

    def __init__(self, unet):
        self.first = None
        self.handle = unet.register_forward_pre_hook(self)

    def __call__(self, module, args):
        if self.first is None:
            self.first = args[0].detach().clone()


def test_editors_share_the_modules_not_the_scheduler(learned_pipe, editors):
    img2img, inpaint = editors
    assert isinstance(img2img, LearnedLabImg2ImgPipeline)
    assert isinstance(inpaint, LearnedLabInpaintPipeline)
    for editor in editors:
        assert editor.unet is learned_pipe.unet
        assert editor.prompt_encoder is learned_pipe.prompt_encoder
        assert editor.scheduler is not learned_pipe.scheduler
        assert dict(editor.scheduler.config) == dict(learned_pipe.scheduler.config)


def test_strength_one_starts_from_the_noised_reference_near_plain_sampling(
    learned_pipe, editors, references
):
    """Strength 1 noises the reference to t = 999 (trailing spacing): x = sqrt(abar) x0 +
    sqrt(1 - abar) eps with sqrt(abar_999) = 0.0064, not pure noise, so it is not exactly plain
    sampling from eps, only close (and far closer than an unrelated sample)."""
    img2img, _ = editors
    x0 = references.images * 2 - 1
    recorder = Inputs(learned_pipe.unet)
    try:
        edited = img2img(["", ""], image=references.images, strength=1.0, generator=seed(), **KW)
    finally:
        recorder.handle.remove()
    eps = torch.randn(2, 3, 32, 32, generator=seed())
    abar = img2img.scheduler.alphas_cumprod[999]
    torch.testing.assert_close(recorder.first, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    plain = learned_pipe([""], num_images_per_prompt=2, generator=seed(), **KW).images
    other = learned_pipe([""], num_images_per_prompt=2, generator=seed(4), **KW).images
    assert not torch.equal(edited.images, plain)
    assert rms(edited.images, plain) < 0.05 < 0.2 < rms(other, plain)


def test_small_strength_returns_near_the_input_and_strength_orders_the_change(editors, references):
    img2img, _ = editors
    image = references.images
    change = [
        rms(img2img(["", ""], image=image, strength=s, generator=seed(), **KW).images, image)
        for s in (0.1, 0.5, 1.0)
    ]
    assert change[0] < 0.1  # one DDIM step from t = 99 back to the image
    assert change[0] < change[1] < change[2]


def test_one_reference_serves_every_image_and_a_seed_fixes_them(editors, references):
    img2img, _ = editors
    image = references.images[:1]
    kw = {**KW, "num_images_per_prompt": 3, "strength": 0.6}
    a = img2img("a red bag", image=image, generator=seed(), **kw).images
    b = img2img("a red bag", image=image, generator=seed(), **kw).images
    assert a.shape == (3, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
    pil = Image.fromarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy())
    c = img2img("a red bag", image=pil, generator=seed(), **kw).images
    assert rms(c, a) < 0.02  # the PIL path only rounds the reference to 8 bits


def test_inpainting_keeps_the_known_region_exactly_and_repaints_the_rest(editors, references):
    """After the last step the known region is the clean reference itself (the blend), and
    the repainted background is new."""
    _, inpaint = editors
    keep = (references.masks > 0.5).float()[:, None]  # the object
    for strength in (1.0, 0.5):
        out = inpaint(
            ["", ""], image=references.images, mask_image=1 - keep, strength=strength,
            generator=seed(), **KW,
        ).images  # fmt: skip
        known = keep.bool().expand_as(out)
        torch.testing.assert_close(out[known], references.images[known], rtol=0, atol=1e-6)
        assert float((out - references.images)[~known].pow(2).mean().sqrt()) > 0.1


def test_a_pil_mask_is_binarised_white_repaint(editors, references):
    _, inpaint = editors
    keep = references.masks[0] > 0.5
    mask = Image.fromarray(((~keep).float() * 200).byte().numpy())  # light gray = repaint
    out = inpaint("", image=references.images[:1], mask_image=mask, generator=seed(), **KW).images
    torch.testing.assert_close(out[0][:, keep], references.images[0][:, keep], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image": torch.rand(1, 3, 64, 64)}, ValueError, r"\[N, 3, 32, 32\]"),
        ({"image": torch.rand(1, 3, 32, 32) * 2}, ValueError, r"\[0, 1\]"),
        ({"image": torch.rand(3, 3, 32, 32)}, ValueError, "give 1 or one per prompt"),
        ({"image": "ref.png"}, TypeError, "PIL image"),
        ({"strength": 0.0}, ValueError, r"strength must be in \(0, 1\]"),
        ({"strength": 1.5}, ValueError, r"strength must be in \(0, 1\]"),
        ({"strength": 0.05}, ValueError, "leaves no denoising step"),
        ({"prompt": "a red unicorn"}, ValueError, "unknown word"),
        ({"image": None}, ValueError, "image is required"),
    ],
)
def test_bad_img2img_inputs_raise_before_the_model_runs(editors, kwargs, error, match):
    img2img, _ = editors
    call = {"prompt": "", "image": torch.rand(1, 3, 32, 32), "strength": 0.5, **kwargs}
    calls = Inputs(img2img.unet)
    try:
        with pytest.raises(error, match=match):
            img2img(**call, **KW)
    finally:
        calls.handle.remove()
    assert calls.first is None


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (torch.ones(16, 16), r"mask_image must be \[32, 32\]"),
        (torch.ones(1, 3, 32, 32), r"mask_image must be"),
        (torch.full((32, 32), 2.0), r"\[0, 1\]"),
        (torch.zeros(32, 32), "nothing to repaint"),
        (None, "mask_image are required"),
    ],
)
def test_bad_inpaint_masks_raise_before_the_model_runs(editors, mask, match):
    _, inpaint = editors
    calls = Inputs(inpaint.unet)
    try:
        with pytest.raises(ValueError, match=match):
            inpaint("", image=torch.rand(1, 3, 32, 32), mask_image=mask, **KW)
    finally:
        calls.handle.remove()
    assert calls.first is None


def test_background_gets_the_learned_lab_baselines(learned_pipe):
    assert "learned-lab" in BASELINE_FAMILIES
    img2img, inpaint = baseline_pipelines(matching_sampler(learned_pipe))
    assert isinstance(img2img, LearnedLabImg2ImgPipeline)
    assert isinstance(inpaint, LearnedLabInpaintPipeline)
