"""Background generation on tiny random pipelines: inputs, the coupling's sharing, baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from couplednoise import Subspace, latents_for
from couplednoise.pipelines.background import (
    Sampling,
    background_task,
    dilate_mask,
    load_mask,
    make_task,
    paste_back,
    resize_binary,
    run_background,
    subspace_gallery,
)
from couplednoise.pipelines.inversion import matching_sampler

SIZE = 64  # the tiny pipelines' default: 8 x 8 latents


def square_mask(size: int, lo: float = 0.25, hi: float = 0.75) -> np.ndarray:
    """uint8 {0, 255} [size, size] with a centred square object."""
    mask = np.zeros((size, size), np.uint8)
    mask[int(lo * size) : int(hi * size), int(lo * size) : int(hi * size)] = 255
    return mask


def reference(size: int = SIZE) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


# --- inputs -------------------------------------------------------------------------------------


def test_masks_of_any_size_are_resized_to_the_model_grid(sd15_pipe, tmp_path):
    Image.fromarray(square_mask(200)).save(tmp_path / "mask.png")
    task = background_task(sd15_pipe, reference(97), tmp_path / "mask.png")
    assert task.image.shape == (1, 3, SIZE, SIZE) and task.mask.shape == (SIZE, SIZE)
    expected = torch.zeros(SIZE, SIZE)
    expected[16:48, 16:48] = 1  # area average of the 200-px square [50, 150) then >= 0.5
    torch.testing.assert_close(task.mask, expected)


def test_rgba_alpha_and_mode_1_masks(tmp_path):
    alpha = square_mask(32)
    rgba = np.dstack([np.full((32, 32, 3), 90, np.uint8), alpha // 2 + (alpha > 0) * 100])
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(tmp_path / "cut.png")
    Image.fromarray(square_mask(32)).convert("1").save(tmp_path / "bw.png")
    expected = torch.from_numpy((square_mask(32) > 0).astype(np.float32))
    torch.testing.assert_close(load_mask(tmp_path / "cut.png"), expected)
    torch.testing.assert_close(load_mask(tmp_path / "bw.png"), expected)


def test_resize_binary_keeps_majority_cells():
    mask = torch.zeros(4, 4)
    mask[:2, :3] = 1
    torch.testing.assert_close(resize_binary(mask, (2, 2)), torch.tensor([[1.0, 1.0], [0, 0]]))


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.full((64, 64), 128, np.uint8), "not binary"),
        (np.zeros((64, 64), np.uint8), "empty"),
        (np.full((64, 64), 255, np.uint8), "whole image"),
        (square_mask(64)[:, :32], "aspect ratios differ"),
        (np.pad(np.full((2, 2), 255, np.uint8), 31), "no object left on the 8x8 latent grid"),
    ],
    ids=["soft", "empty", "full", "mismatch", "too-small"],
)
def test_bad_masks_are_clear_errors(mask, message, tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(mask).save(path)
    with pytest.raises(ValueError, match=message):
        make_task(reference(), path, (SIZE, SIZE), (8, 8))


def test_colour_mask_and_missing_files_are_clear_errors(tmp_path):
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[..., 0] = square_mask(64)
    Image.fromarray(colour).save(tmp_path / "red.png")
    with pytest.raises(ValueError, match="colour"):
        load_mask(tmp_path / "red.png")
    with pytest.raises(ValueError, match="not found"):
        load_mask(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_mask(tmp_path / "junk.png")


def test_image_size_must_fit_the_grid(sd15_pipe):
    with pytest.raises(ValueError, match="multiple of 8"):
        background_task(sd15_pipe, reference(), square_mask(64) // 255, height=60, width=64)


def test_dilation_grows_the_shared_region_only():
    task = make_task(reference(), square_mask(SIZE) // 255, (SIZE, SIZE), (8, 8), dilate=8)
    torch.testing.assert_close(task.mask, torch.from_numpy(square_mask(SIZE) / 255).float())
    grown = torch.zeros(SIZE, SIZE)
    grown[8:56, 8:56] = 1  # the 16..48 square grown by 8 px on every side
    torch.testing.assert_close(task.shared_mask, grown)
    torch.testing.assert_close(dilate_mask(task.mask, 0), task.mask)


@pytest.mark.parametrize(
    ("dilate", "message"), [(-1, ">= 0"), (1.5, "whole number"), (24, "no background")]
)
def test_bad_dilation_is_a_clear_error(dilate, message):
    with pytest.raises(ValueError, match=message):
        make_task(reference(), square_mask(SIZE) // 255, (SIZE, SIZE), (8, 8), dilate=dilate)


# --- the coupling -------------------------------------------------------------------------------


def subspace_latents(pipe, share: float, noise: torch.Tensor, k: int = 6) -> torch.Tensor:
    task = make_task(reference(), square_mask(SIZE) // 255, (SIZE, SIZE), (8, 8))
    coupling = Subspace(mask=task.mask, share=share, shared=noise[0])
    return latents_for(
        pipe, coupling, num_images_per_prompt=k, generator=torch.Generator().manual_seed(0)
    )


def test_share_one_keeps_the_masked_latents_identical(sd15_pipe):
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latents = subspace_latents(sd15_pipe, 1.0, noise)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:6, 2:6] = True
    torch.testing.assert_close(latents[:, :, inside], noise[:, :, inside].expand(6, -1, -1))
    outside = latents[:, :, ~inside]
    assert (outside[1:] - outside[:1]).abs().min() > 0  # independent draws differ everywhere


def test_share_zero_leaves_the_masked_latents_independent(sd15_pipe):
    """share 0 ignores the inverted noise and draws every image's noise independently."""
    noise_a = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latents = subspace_latents(sd15_pipe, 0.0, noise_a)
    torch.testing.assert_close(latents, subspace_latents(sd15_pipe, 0.0, 5 * noise_a))
    # independent N(0, 1) across the gallery: sample correlation of images near 0
    flat = latents.flatten(1)
    corr = torch.corrcoef(flat)[~torch.eye(6, dtype=torch.bool)]
    assert corr.abs().max() < 4 / flat.shape[1] ** 0.5  # 4 sigma of a null correlation


class RecordingPipe:
    """A pipeline stand-in: forwards attributes to ``pipe`` and records each call's kwargs."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(**kwargs)


def test_subspace_gallery_shares_the_dilated_region(sd15_pipe):
    """share 1 with dilation: every image's latent in the grown region is the inverted noise;
    outside it the latents differ."""
    task = make_task(reference(), square_mask(SIZE) // 255, (SIZE, SIZE), (8, 8), dilate=8)
    noise = 0.2 * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    sampler = RecordingPipe(matching_sampler(sd15_pipe))
    common = {"share": 1.0, "num_images": 4, "seed": 0, "sampling": Sampling(1)}
    subspace_gallery(sampler, task, noise, "x", **common)
    latents = sampler.calls[0]["latents"]
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[1:7, 1:7] = True
    torch.testing.assert_close(latents[:, :, inside], noise[:, :, inside].expand(4, -1, -1))
    outside = latents[:, :, ~inside]
    assert (outside[1:] - outside[:1]).abs().min() > 0


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bg")
    Image.fromarray(square_mask(SIZE)).save(folder / "mask.png")
    reference().save(folder / "ref.png")
    return make_task(folder / "ref.png", folder / "mask.png", (SIZE, SIZE), (8, 8))


def test_all_methods_run_with_the_same_seed(tiny_pipe, tiny_task):
    galleries = run_background(
        tiny_pipe,
        tiny_task,
        ["a beach", "a forest"],
        shares=[0.0, 1.0],
        num_images=2,
        seed=3,
        sampling=Sampling(num_inference_steps=2, guidance_scale=2.0),
        sdedit_strengths=[0.5],
        progress=False,
    )
    labels = [(g.prompt, g.label) for g in galleries]
    for prompt in ("a beach", "a forest"):
        for label in (
            "subspace:share=0",
            "subspace:share=1",
            "inversion",
            "sdedit:strength=0.5",
            "inpaint:strength=1",
        ):
            assert (prompt, label) in labels
    for gallery in galleries:
        assert gallery.images.shape == (2, 3, SIZE, SIZE) and gallery.seed == 3
        assert gallery.images.min() >= 0 and gallery.images.max() <= 1
    inversion = next(g for g in galleries if g.method == "inversion")
    torch.testing.assert_close(inversion.images[0], inversion.images[1])
    # same seed, same call: the run is reproducible
    again = run_background(
        tiny_pipe,
        tiny_task,
        ["a beach"],
        shares=[1.0],
        num_images=2,
        seed=3,
        sampling=Sampling(num_inference_steps=2, guidance_scale=2.0),
        baselines=False,
        progress=False,
    )
    torch.testing.assert_close(again[0].images, galleries[1].images)


def test_share_one_regenerates_the_object_from_the_same_noise(sd15_pipe, tiny_task):
    """share 1: every image starts from the reference's inverted noise inside the mask; with
    guidance 1 and the inversion's own prompt the object region stays close across the gallery,
    closer than at share 0."""
    sampling = Sampling(num_inference_steps=4, guidance_scale=1.0)
    galleries = run_background(
        sd15_pipe,
        tiny_task,
        ["x"],
        shares=[0.0, 1.0],
        num_images=4,
        sampling=sampling,
        baselines=False,
        progress=False,
    )
    spread = {}
    for gallery in galleries:
        inside = gallery.images[:, :, tiny_task.mask.bool()]
        spread[gallery.setting["share"]] = float((inside - inside.mean(0)).pow(2).mean())
    assert spread[1.0] < spread[0.0]


def test_paste_back_puts_the_reference_inside_the_mask(tiny_task):
    images = torch.rand(3, 3, SIZE, SIZE)
    pasted = paste_back(images, tiny_task)
    inside = tiny_task.mask.bool()
    torch.testing.assert_close(
        pasted[:, :, inside], tiny_task.image[:, :, inside].expand(3, -1, -1)
    )
    torch.testing.assert_close(pasted[:, :, ~inside], images[:, :, ~inside])


def test_matching_sampler_does_not_touch_the_pipeline(sdxl_pipe):
    before = type(sdxl_pipe.scheduler)
    sampler = matching_sampler(sdxl_pipe)
    assert type(sdxl_pipe.scheduler) is before
    assert type(sampler.scheduler).__name__ == "DDIMScheduler"
    assert sampler.unet is sdxl_pipe.unet and sampler.unet.dtype == sdxl_pipe.unet.dtype
