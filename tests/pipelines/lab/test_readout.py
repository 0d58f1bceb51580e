"""Lab world, prompts and ground-truth readout: exact on known scenes, limits and expectations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from couplednoise.pipelines.lab import ATTRIBUTES, build_world, parse_prompt
from couplednoise.pipelines.lab.readout import (
    expected_distinct,
    fixed_object_readout,
    gallery_readout,
    nearest_scenes,
    read_attributes,
)


@pytest.fixture(scope="module")
def world():
    return build_world(32, 2, 0)


def test_world_is_deterministic_and_complete(world):
    assert len(world) == math.prod(len(v) for v in ATTRIBUTES.values()) * 2 == 2880
    assert world.images.shape == (2880, 3, 32, 32)
    assert world.images.min() >= 0 and world.images.max() <= 1
    again = build_world.__wrapped__(32, 2, 0)
    assert torch.equal(again.images, world.images)
    other = build_world.__wrapped__(32, 2, 1)
    assert not torch.equal(other.images, world.images)
    # Every attribute combination appears exactly `variants` times.
    combos = {tuple(c) for c in world.codes.tolist()}
    assert len(combos) == 1440


def test_readout_is_exact_on_training_scenes(world):
    index = torch.randperm(len(world), generator=torch.Generator().manual_seed(0))[:300]
    found, distance = nearest_scenes(world.images[index], world, chunk_size=100)
    assert torch.equal(found, index)
    assert distance.max() < 1e-3
    attributes = read_attributes(world.images[index[:20]], world)
    assert attributes == [world.attributes(i) for i in index[:20].tolist()]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red circle", {"colour": "red", "shape": "circle"}),
        ("A square on a blue background.", {"shape": "square", "background": "blue"}),
        (
            "a blue square on a blue background",
            {"colour": "blue", "shape": "square", "background": "blue"},
        ),
        (
            "big grey-backed diamond in the centre on white",
            {
                "size": "large",
                "colour": None,
                "shape": "diamond",
                "position": "center",
                "background": "white",
            },
        ),
        ("", {}),
    ],
)
def test_parse_prompt(prompt, expected):
    if expected.get("colour", "") is None:  # "grey-backed": unknown word "backed"
        with pytest.raises(ValueError, match="backed"):
            parse_prompt(prompt)
        return
    assert parse_prompt(prompt) == expected


def test_prompt_errors_list_the_vocabulary():
    with pytest.raises(ValueError, match=r"(?s)'dog'.*colour: red, orange"):
        parse_prompt("a red dog")
    with pytest.raises(ValueError, match="two values for shape"):
        parse_prompt("a circle square")


def test_prompt_scenes_are_the_matching_product(world):
    for prompt in ("a red circle", "a small triangle on the left on a striped background", ""):
        constraints = parse_prompt(prompt)
        index = world.matching(constraints)
        free = [len(v) for k, v in ATTRIBUTES.items() if k not in constraints]
        assert len(index) == math.prod(free) * 2
        assert all(
            world.attributes(i)[k] == v for i in index[:50].tolist() for k, v in constraints.items()
        )


def test_expected_distinct_matches_enumeration():
    # E[#distinct] of k draws from a law, enumerated over all k-tuples.
    probabilities = [0.5, 0.3, 0.2]
    for k in (1, 2, 3, 4):
        exact = sum(
            math.prod(probabilities[v] for v in draw) * len(set(draw))
            for draw in itertools.product(range(3), repeat=k)
        )
        assert expected_distinct(k, probabilities) == pytest.approx(exact, abs=1e-12)


def test_gallery_readout_counts_coverage_and_limits(world):
    prompt = "a red circle on a white background"  # open: size (2), position (5); 20 scenes
    index = world.matching(parse_prompt(prompt))
    sizes = world.codes[index, 2]
    positions = world.codes[index, 3]
    # Two large images at the same position, same scene twice, plus one blue (off-prompt) circle.
    large_left = index[(sizes == 1) & (positions == 0)]
    off_prompt = world.matching({"colour": "blue", "shape": "circle", "background": "white"})[0]
    chosen = torch.stack([large_left[0], large_left[0], large_left[1], off_prompt])
    readout = gallery_readout(world.images[chosen], prompt, world)
    assert readout.alignment == 0.75
    assert (readout.scene_coverage.distinct, readout.scene_coverage.limit) == (2, 4)
    assert readout.scene_coverage.expected_independent == pytest.approx(20 * (1 - (19 / 20) ** 4))
    size, position = readout.attribute_coverage["size"], readout.attribute_coverage["position"]
    assert (size.distinct, size.limit) == (1, 2)
    assert (position.distinct, position.limit) == (1, 4)
    assert size.expected_independent == pytest.approx(2 * (1 - 0.5**4))
    assert set(readout.attribute_coverage) == {"size", "position"}
    assert readout.mean_attribute_coverage == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_fixed_object_readout_and_object_mask(world):
    reference = int(world.matching({"shape": "square", "size": "large", "position": "center"})[0])
    mask = world.object_mask(reference)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    side = float(world.radii[reference]) * 0.85 * 2
    assert mask.sum().item() == pytest.approx(side**2, rel=0.15)
    same_object = world.matching(
        {k: v for k, v in world.attributes(reference).items() if k != "background"}
    )
    gallery = torch.cat([same_object[:3], torch.tensor([0])])  # 3 keep the object, 1 does not
    fixed = fixed_object_readout(world.images[gallery], world, reference)
    assert fixed.object_kept == 0.75
    old = world.attributes(reference)["background"]
    moved = sum(world.attributes(int(i))["background"] != old for i in gallery[:3])
    assert fixed.kept_on_new_background == moved / 4
    assert fixed_object_readout(world.images[gallery], world).kept_on_new_background is None
    assert fixed.background_limit == 4
    assert fixed.distinct_backgrounds == len(
        {world.attributes(int(i))["background"] for i in gallery}
    )
