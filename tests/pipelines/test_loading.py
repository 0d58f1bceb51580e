"""couplednoise.pipelines.loading: local folders, the HF cache, family detection, clear errors."""

from __future__ import annotations

import shutil

import pytest
import torch

from couplednoise import latents_for
from couplednoise.eval.cli.options import DTYPE_NAMES
from couplednoise.pipelines.loading import DTYPES, detect_family, family_from_index, load_pipeline

FAMILY_CLASSES = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
}


@pytest.mark.parametrize("family", list(FAMILY_CLASSES))
def test_load_local_folder_detects_family_and_reproduces_images(
    family, tiny_pipeline_dir, tiny_pipes
):
    pipe = load_pipeline(str(tiny_pipeline_dir(family)), device="cpu")
    assert type(pipe).__name__ == FAMILY_CLASSES[family]
    assert detect_family(pipe) == family
    assert not any(m.training for m in pipe.components.values() if isinstance(m, torch.nn.Module))
    latents = latents_for(pipe, "repulsive", num_images_per_prompt=2)
    call = dict(num_images_per_prompt=2, num_inference_steps=1, output_type="pt")
    loaded = pipe("a cat", latents=latents, **call).images
    original = tiny_pipes[family]("a cat", latents=latents, **call).images
    torch.testing.assert_close(loaded, original, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["fp16", "float16"])
def test_load_in_half_precision_without_deprecation_warnings(tiny_pipeline_dir, name):
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*torch_dtype.*")
        pipe = load_pipeline(str(tiny_pipeline_dir("sd15")), device="cpu", dtype=name)
    assert pipe.unet.dtype == torch.float16
    assert latents_for(pipe, "repulsive", num_images_per_prompt=2).dtype == torch.float16


def test_dtype_names_are_the_same_everywhere():
    assert set(DTYPE_NAMES) == set(DTYPES)


def test_hub_id_resolves_in_the_cache(tiny_pipeline_dir, tmp_path):
    # The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/...}.
    commit = "0" * 40
    repo = tmp_path / "models--someone--tiny-sd"
    shutil.copytree(tiny_pipeline_dir("sd15"), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    pipe = load_pipeline("someone/tiny-sd", device="cpu", local_files_only=True, cache_dir=tmp_path)
    assert detect_family(pipe) == "sd15"


def test_hub_id_missing_from_cache_says_how_to_get_it(tmp_path):
    with pytest.raises(
        ValueError, match=r"not in the Hugging Face cache.*huggingface-cli download"
    ):
        load_pipeline("someone/absent", local_files_only=True, cache_dir=tmp_path)


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such local folder"):
        load_pipeline(str(tmp_path / "nowhere"))


def test_folder_without_model_index_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"no model_index\.json"):
        load_pipeline(str(tmp_path))


def test_pickle_weights_are_refused(tiny_pipeline_dir, tmp_path):
    folder = shutil.copytree(tiny_pipeline_dir("sd15"), tmp_path / "pickled")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    torch.save({}, folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors only"):
        load_pipeline(str(folder))
    checkpoint = tmp_path / "model.ckpt"
    torch.save({}, checkpoint)
    with pytest.raises(ValueError, match="pickle checkpoint"):
        load_pipeline(str(checkpoint))


def test_family_from_model_index_components():
    component = ["diffusers", "X"]
    assert family_from_index({"_class_name": "StableDiffusionXLPipeline"}) == "sdxl"
    custom = {"_class_name": "MyPipeline", "unet": component, "vae": component}
    assert family_from_index({**custom, "text_encoder": component}) == "sd15"
    assert family_from_index({**custom, "text_encoder_2": component}) == "sdxl"
    sd3 = {"_class_name": "Mine", "transformer": component, "text_encoder_3": component}
    assert family_from_index(sd3) == "sd3"
    assert family_from_index({**sd3, "text_encoder_3": [None, None]}) == "other"
    assert family_from_index({"_class_name": "FluxPipeline", "transformer": component}) == "other"


def test_lab_model_loads_through_the_same_door():
    pipe = load_pipeline("lab", device="cpu")
    assert detect_family(pipe) == "lab"
    latents = latents_for(pipe, "repulsive", num_images_per_prompt=2)
    assert latents.shape == (2, 3, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    out = pipe("a red circle", num_images_per_prompt=2, latents=latents, output_type="pt")
    assert out.images.shape[0] == 2
