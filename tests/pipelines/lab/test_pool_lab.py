"""Pool couplings on the lab: exact outcome frequencies, the oracle and a learned predictor end to
end, pilot costs, and Pool through latents_for / generate / generate_gallery unchanged."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

import couplednoise as cn
from couplednoise.pipelines.generation import generate_gallery
from couplednoise.pipelines.lab import load_lab_pipeline
from couplednoise.pipelines.lab.oracle import lab_oracle, readout_labels
from couplednoise.pipelines.lab.readout import gallery_readout, nearest_scenes
from couplednoise.pipelines.pool_pilots import count_evaluations, fit_pilot_predictor, run_pilots

PROMPT = "a red circle on a white background"  # 20 scenes: size x position x 2 variants
STEPS = 6
GALLERIES = 240


@pytest.fixture(scope="module")
def pipe():
    pipe = load_lab_pipeline("lab")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def oracle(pipe):
    return lab_oracle(pipe.world, PROMPT, samples=5000)


def galleries(pipe, coupling, k=4, seeds=range(GALLERIES)):
    """Images [len(seeds) * k, 3, 32, 32] of PROMPT, gallery s drawn from seed s."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    latents = cn.latents_for(
        pipe, coupling, num_images_per_prompt=k, num_prompts=len(generators), generator=generators
    )
    return pipe(
        [PROMPT] * len(generators),
        num_images_per_prompt=k,
        latents=latents,
        num_inference_steps=STEPS,
        output_type="pt",
    ).images


def test_slot_zero_outcomes_are_as_frequent_as_with_independent_noise_and_galleries_cover_more(
    pipe, oracle
):
    pool = galleries(pipe, cn.Pool(pool_size=32, predictor=oracle))
    independent = galleries(pipe, "independent", seeds=range(GALLERIES, 2 * GALLERIES))
    scenes = pipe.scenes_for(PROMPT).tolist()
    counts, coverage = [], []
    for images in (pool, independent):
        index = nearest_scenes(images, pipe.world)[0]
        first = index[0::4].tolist()
        counts.append([first.count(s) for s in scenes])
        # mean over the open attributes (size: 2 values, position: 5) of distinct values / limit
        codes = pipe.world.codes[index].reshape(GALLERIES, 4, -1)
        sizes = torch.tensor([len(set(g[:, 2].tolist())) / 2 for g in codes])
        positions = torch.tensor([len(set(g[:, 3].tolist())) / 4 for g in codes])
        coverage.append((sizes + positions) / 2)
    # two-sample chi-square on the 20 scenes of slot 0 (12 expected per cell)
    assert stats.chi2_contingency(counts).pvalue > 1e-3, counts
    # the oracle's gain in coverage is ~0.15; with 240 galleries per arm its standard error ~0.02
    planned, random = coverage
    assert planned.mean() > random.mean() + 0.08
    assert planned.mean() > 0.9
    # the readout agrees with the ground-truth gallery readout
    assert gallery_readout(pool[:4], PROMPT, pipe.world).mean_attribute_coverage == planned[0]


def test_a_predictor_learned_from_pilots_counts_its_cost_saves_and_plans_galleries(pipe, tmp_path):
    fit = fit_pilot_predictor(
        pipe,
        PROMPT,
        pilots=24,
        seed=123,
        labels=readout_labels(pipe.world, PROMPT),
        num_inference_steps=STEPS,
        fit_options={"samples": 5000},
    )
    assert fit.network_evaluations == 24 * STEPS
    assert fit.predictor.metadata["network_evaluations"] == 24 * STEPS
    assert [name for name, _, _ in fit.predictor.tables] == ["size", "position", "outcome"]
    assert fit.predictor.metadata["in_sample_accuracy"] > 0.7
    path = tmp_path / "red_circle.pt"
    fit.predictor.save(path)
    spec = f"pool:pool_size=32,predictor=learned:{path}"
    gallery = generate_gallery(pipe, PROMPT, spec, num_images=4, seed=5, num_inference_steps=STEPS)
    assert gallery.images.shape == (4, 3, 32, 32)
    assert gallery.metadata["coupling"] == spec
    again = generate_gallery(pipe, PROMPT, spec, num_images=4, seed=5, num_inference_steps=STEPS)
    assert torch.equal(gallery.images, again.images)


def test_pilots_count_guided_evaluations_twice_and_restore_the_pipeline(pipe):
    runs = run_pilots(pipe, PROMPT, 3, seed=0, num_inference_steps=2, guidance_scale=2.0)
    assert runs.network_evaluations == 3 * 2 * 2
    assert runs.noise.shape == runs.outputs.shape == (3, 3, 32, 32)
    assert "_posterior" not in vars(pipe)  # the counter is gone again
    with (
        pytest.raises(TypeError, match="cannot count the network evaluations"),
        count_evaluations(object()),
    ):
        pass


def test_pool_goes_through_generate_with_several_prompts_and_generators(pipe):
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    out = cn.generate(
        pipe,
        [PROMPT, "a large square on the left"],
        "pool:pool_size=16,predictor=dct:2,coupling=repulsive",
        num_images_per_prompt=4,
        generator=generators,
        num_inference_steps=2,
        output_type="pt",
    )
    assert out.images.shape == (8, 3, 32, 32)
    alone = cn.latents_for(
        pipe,
        "pool:pool_size=16,predictor=dct:2,coupling=repulsive",
        num_images_per_prompt=4,
        generator=torch.Generator().manual_seed(2),
    )
    both = cn.latents_for(
        pipe,
        "pool:pool_size=16,predictor=dct:2,coupling=repulsive",
        num_images_per_prompt=4,
        num_prompts=2,
        generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
    )
    assert torch.equal(both[4:], alone)  # a prompt's gallery depends on its own seed only


def test_pool_on_a_tiny_sd_pipeline_and_its_pilot_cost(sd15_pipe):
    out = cn.generate(
        sd15_pipe,
        "a photo",
        "pool:pool_size=16",
        num_images_per_prompt=4,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=2,
        output_type="pt",
    )
    assert out.images.shape[0] == 4
    runs = run_pilots(sd15_pipe, "a photo", 2, seed=0, num_inference_steps=2, guidance_scale=5.0)
    assert runs.network_evaluations == 2 * 2 * 2  # classifier-free guidance: two rows per image
