"""couplednoise.pipelines.generation and pipelines.images on the tiny SD1.5 pipeline."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from couplednoise import generate
from couplednoise.eval.runs.images import image_grid, save_png
from couplednoise.pipelines.generation import generate_galleries, generate_gallery
from couplednoise.pipelines.images import from_pil
from tests.tiny_models import capture_denoiser_inputs

SETTINGS = dict(num_inference_steps=1, guidance_scale=4.0)


def test_gallery_depends_only_on_its_seed(sd15_pipe):
    first = generate_gallery(sd15_pipe, "a cat", "repulsive", num_images=3, seed=7, **SETTINGS)
    again = generate_gallery(sd15_pipe, "a cat", "repulsive", num_images=3, seed=7, **SETTINGS)
    assert first.images.shape == (3, 3, 64, 64) and first.images.device.type == "cpu"
    assert first.images.min() >= 0 and first.images.max() <= 1
    torch.testing.assert_close(first.images, again.images, rtol=0, atol=1e-6)
    # Exactly what couplednoise.generate gives with the documented generator.
    direct = generate(
        sd15_pipe,
        "a cat",
        "repulsive",
        3,
        generator=torch.Generator("cpu").manual_seed(7),
        output_type="pt",
        **SETTINGS,
    ).images
    torch.testing.assert_close(first.images, direct, rtol=0, atol=1e-6)
    other = generate_gallery(sd15_pipe, "a cat", "repulsive", num_images=3, seed=8, **SETTINGS)
    assert (other.images - first.images).abs().max() > 1e-3


def test_gallery_metadata_reproduces_the_call(sd15_pipe):
    gallery = generate_gallery(
        sd15_pipe,
        "a cat",
        "equicorrelated:rho=0.5",
        num_images=2,
        seed=3,
        negative_prompt="dog",
        num_inference_steps=1,
    )
    meta = gallery.metadata
    assert gallery.coupling == "equicorrelated:rho=0.5" == meta["coupling"]
    assert meta["family"] == "sd15" and meta["scheduler"] == "DDIMScheduler"
    assert meta["steps"] == 1 and meta["guidance"] == 7.5  # guidance: the pipeline's default
    assert meta["size"] == [64, 64] and meta["seed"] == 3 and meta["dtype"] == "float32"
    assert meta["negative_prompt"] == "dog" and "torch" in meta["versions"]


def test_galleries_order_pairing_and_up_front_validation(sd15_pipe):
    galleries = generate_galleries(
        sd15_pipe,
        ["a cat", "a dog"],
        ["independent", "repulsive"],
        num_images=2,
        seeds=[0, 1],
        progress=False,
        **SETTINGS,
    )
    keys = [(g.prompt, g.seed, g.coupling) for g in galleries]
    assert keys == [
        (p, s, c) for p in ("a cat", "a dog") for s in (0, 1) for c in ("independent", "repulsive")
    ]
    # Same seed, different couplings: paired draws. Repulsive with n = 2 is antithetic: (z, -z).
    with capture_denoiser_inputs(sd15_pipe) as inputs:
        generate_gallery(sd15_pipe, "a cat", "repulsive", num_images=2, seed=0, **SETTINGS)
    cond = inputs[0][2:]
    torch.testing.assert_close(cond[0], -cond[1])
    with capture_denoiser_inputs(sd15_pipe) as inputs, pytest.raises(ValueError, match="rho"):
        generate_galleries(
            sd15_pipe,
            ["a cat"],
            ["independent", "equicorrelated:rho=-0.9"],
            num_images=3,
            seeds=[0],
            progress=False,
        )
    assert inputs == []  # the valid first coupling was not generated either


def test_png_round_trip_and_grid(tmp_path):
    images = torch.rand(3, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    path = save_png(images[0], tmp_path / "sub" / "a.png")
    back = from_pil(Image.open(path))
    assert back.shape == (3, 16, 24)
    assert (back - images[0]).abs().max() <= 0.5 / 255 + 1e-6
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]  # no temp file left
    grid = image_grid([images, images[:2]], labels=["row a", "row b"], padding=2)
    assert grid.size == (2 + 3 * 26, 2 + 2 * (14 + 16 + 2))
    with pytest.raises(ValueError, match="labels"):
        image_grid([images], labels=["a", "b"])
