"""TerrainPipeline end to end on the real trained weights (the adaptive-terrain-diffusion wheel)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.real_weights import require

require("terrain_diffusion", "onnxruntime")

import couplednoise  # noqa: E402
from couplednoise.eval.cli import main  # noqa: E402
from couplednoise.pipelines.generation import generate_gallery  # noqa: E402
from couplednoise.pipelines.loading import load_pipeline  # noqa: E402
from couplednoise.pipelines.terrain import TerrainPipeline, to_images  # noqa: E402


class Recorder:
    """Wraps the ONNX denoiser and keeps every call's (input, sigma, output)."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.calls: list[tuple[np.ndarray, float, np.ndarray]] = []

    def __call__(self, noisy, sigma, difficulty):
        out = self.denoiser(noisy, sigma, difficulty)
        self.calls.append((noisy.copy(), sigma, out.copy()))
        return out


@pytest.fixture(scope="module")
def pipe():
    pipe = load_pipeline("terrain", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def recorded(pipe):
    """A pipeline sharing ``pipe``'s session whose network calls are recorded."""
    recorder = Recorder(pipe.denoiser)
    spy = TerrainPipeline(recorder, pipe.scheduler, name_or_path="terrain")
    spy.set_progress_bar_config(disable=True)
    return spy, recorder


def roughness(heightfields: torch.Tensor) -> float:
    """RMS of the discrete Laplacian of [B, 1, H, W] heightfields."""
    h = heightfields[:, 0]
    lap = 4 * h[:, 1:-1, 1:-1] - h[:, 2:, 1:-1] - h[:, :-2, 1:-1] - h[:, 1:-1, 2:] - h[:, 1:-1, :-2]
    return float(lap.pow(2).mean().sqrt())


def test_a_coupled_gallery_is_grey_heightfields_in_0_1_with_provenance(pipe):
    gallery = generate_gallery(pipe, "difficulty 50", "repulsive", num_images=2, seed=0)
    images = gallery.images
    assert images.shape == (2, 3, 128, 128) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.02
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    meta = gallery.metadata
    assert meta["steps"] == 1 and meta["guidance"] == 1.0 and meta["coupling"] == "repulsive"
    assert meta["scheduler"] == "ConsistencySchedule" and meta["scheduler_config"]["floor"] == 40
    again = generate_gallery(pipe, "difficulty 50", "repulsive", num_images=2, seed=0)
    assert torch.equal(again.images, images)


def test_the_network_sees_80_times_the_coupled_latents_exactly(recorded):
    spy, recorder = recorded
    for coupling, k in (("antithetic", 2), ("repulsive", 3)):
        recorder.calls.clear()
        generator = torch.Generator().manual_seed(7)
        couplednoise.generate(
            spy, "difficulty 30", coupling, num_images_per_prompt=k, generator=generator
        )
        expected = couplednoise.latents_for(
            spy, coupling, num_images_per_prompt=k, generator=torch.Generator().manual_seed(7)
        )
        ((noisy, sigma, _),) = recorder.calls
        assert sigma == 80.0
        np.testing.assert_array_equal(noisy, 80 * expected.numpy())
    np.testing.assert_allclose(noisy.sum(0), 0, atol=2e-4)  # repulsive, K = 3: zero-sum


def test_one_step_matches_the_packages_own_sampler_given_the_same_noise(pipe):
    from terrain_diffusion import TerrainGenerator

    generator = TerrainGenerator(device="cpu")
    heights = generator.generate(2, shape=128, difficulty=40, seed=3, zero_floor=False)
    noise = np.random.default_rng(3).standard_normal((2, 1, 128, 128), dtype=np.float32)
    ours = pipe(
        "40", num_images_per_prompt=2, latents=torch.from_numpy(noise), output_type="latent"
    ).images
    # The package maps the model's [-1, 1] to metres by an asinh law; undo it.
    scale, top = TerrainGenerator.asinh_scale, TerrainGenerator.height_range
    theirs = np.arcsinh(heights / scale) / np.arcsinh(top / scale) * 2 - 1
    np.testing.assert_allclose(ours[:, 0].numpy(), theirs, atol=1e-5)


def test_multistep_differs_from_one_step_yet_stays_clean(recorded):
    spy, recorder = recorded
    noise = torch.randn(2, 1, 128, 128, generator=torch.Generator().manual_seed(1))
    one = spy("difficulty 50", num_images_per_prompt=2, latents=noise, output_type="latent").images
    calls = []
    for _ in range(2):
        recorder.calls.clear()
        two = spy(
            "difficulty 50",
            num_images_per_prompt=2,
            latents=noise,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(5),
            output_type="latent",
        ).images
        calls.append(two)
    assert torch.equal(calls[0], calls[1])  # the re-noise comes from the generator
    assert [sigma for _, sigma, _ in recorder.calls] == [80.0, 40.0]
    first_out = recorder.calls[0][2]
    np.testing.assert_array_equal(first_out, one.numpy())
    fresh = (recorder.calls[1][0] - first_out) / spy.scheduler.renoise_scale(40.0)
    assert abs(fresh.std() - 1) < 0.01 and abs(fresh.mean()) < 0.01
    assert (two - one).abs().mean() > 0.05  # a different heightfield...
    assert roughness(two) < 2 * roughness(one)  # ...not a noisy one (floor 40 was chosen so)


def test_coupled_renoise_draws_each_steps_noise_from_the_coupling(recorded):
    spy, recorder = recorded
    spy(
        "difficulty 70",
        num_images_per_prompt=2,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(2),
        renoise_coupling="antithetic",
    )
    for (_, _, before), (after, sigma, _) in zip(recorder.calls, recorder.calls[1:]):
        fresh = (after - before) / spy.scheduler.renoise_scale(sigma)
        np.testing.assert_allclose(fresh[0], -fresh[1], atol=1e-4)


def test_output_types_agree(pipe):
    noise = torch.randn(1, 1, 128, 128, generator=torch.Generator().manual_seed(4))
    run = {
        kind: pipe("20", latents=noise, output_type=kind).images
        for kind in ("latent", "pt", "np", "pil")
    }
    assert run["latent"].shape == (1, 1, 128, 128) and run["latent"].abs().max() <= 1
    assert torch.equal(run["pt"], to_images(run["latent"]))
    assert run["np"].shape == (1, 128, 128, 3)
    np.testing.assert_array_equal(run["np"], run["pt"].permute(0, 2, 3, 1).numpy())
    image = run["pil"][0]
    assert image.mode == "RGB" and image.size == (128, 128)
    assert np.abs(np.asarray(image) / 255 - run["np"][0]).max() <= 0.5 / 255 + 1e-6


def test_threads_and_batch_size_do_not_change_results(pipe):
    other = load_pipeline("terrain:threads=2,batch=1", device="cpu")
    other.set_progress_bar_config(disable=True)
    noise = torch.randn(3, 1, 128, 128, generator=torch.Generator().manual_seed(6))
    ours = pipe("60", num_images_per_prompt=3, latents=noise, output_type="latent").images
    theirs = other("60", num_images_per_prompt=3, latents=noise, output_type="latent").images
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt": "a red car"}, "is not a difficulty: write 'difficulty 50' or '50'"),
        ({"prompt": "difficulty 0"}, r"difficulty 0 is outside 1\.\.100"),
        ({"prompt": ["50", "hills"]}, "'hills' is not a difficulty"),
        ({"negative_prompt": "flat"}, "has no negative conditioning"),
        ({"guidance_scale": 7.5}, "has no classifier-free guidance"),
        ({"height": 256}, "generates 128 x 128 heightfields"),
        ({"num_inference_steps": 0}, "num_inference_steps must be a positive int"),
        ({"latents": torch.zeros(2, 3, 128, 128)}, r"expected \(1, 1, 128, 128\)"),
        ({"output_type": "latents"}, "output_type must be one of"),
    ],
)
def test_bad_calls_fail_before_the_network_runs(recorded, kwargs, match):
    spy, recorder = recorded
    call = {"prompt": "difficulty 50", **kwargs}
    with pytest.raises(ValueError, match=match):
        spy(**call)
    assert recorder.calls == []


def test_generate_cli_writes_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "generate",
        "--model",
        "terrain",
        "--prompt",
        "difficulty 50",
        "--coupling",
        "antithetic",
        "-n",
        "2",
        "--seeds",
        "0",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    galleries = json.loads((out / "galleries.json").read_text())
    assert [g["coupling"] for g in galleries] == ["antithetic"]
    assert all((out / f).is_file() for f in galleries[0]["files"])
    config = json.loads((out / "config.json").read_text())
    assert config["pipeline"] == "TerrainPipeline" and config["scheduler_config"]["floor"] == 40
    capsys.readouterr()
    assert main([*argv[:4], "a red car", *argv[5:-3], "--out", str(tmp_path / "bad")]) == 2
    assert "is not a difficulty" in capsys.readouterr().err
