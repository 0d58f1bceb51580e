"""The lab side of pool couplings: the oracle predictor, and readout labels for pilot fitting.

The oracle is a cell predictor that reads the prompt's scene set.

An upper bound, not a method for real models: it knows every scene the prompt allows and their
attributes. With the lab's exact denoiser the final scene depends on the noise only through its
projection on the span of the prompt's centered scenes, and the outcome map is close to an
equal-mass power diagram: scene n wins where <z, a_n> + b_n is largest, a_n = Sigma^0.1 c_n
(c_n the centered scene, Sigma their covariance), b fitted so every cell has N(0, I) mass 1/M.
The oracle's tables: every attribute the prompt leaves open (weight 1) and the scene (0.5).

    predictor = lab_oracle(pipe.world, "a red circle")
    coupling = Pool(pool_size=256, predictor=predictor)
"""

from __future__ import annotations

import torch

from couplednoise import CellPredictor, cell_predictor_from_outcomes
from couplednoise.pipelines.lab.prompts import parse_prompt
from couplednoise.pipelines.lab.readout import read_attributes
from couplednoise.pipelines.lab.world import ATTRIBUTES, World, attribute_index, value_index


def lab_oracle(
    world: World,
    prompt: str,
    *,
    power: float = 0.1,
    temperature: float = 1.5,
    scene_weight: float = 0.5,
    samples: int = 50_000,
    seed: int = 0,
) -> CellPredictor:
    """The oracle cell predictor for ``prompt``'s scenes, for lab noise [3, size, size]."""
    constraints = parse_prompt(prompt)
    index = world.matching(constraints)
    if index.numel() < 2:
        raise ValueError(f"{prompt!r} matches {index.numel()} scene(s): nothing to tell apart")
    scenes = world.images[index].double() * 2 - 1  # model space, the noise's space
    tables = [
        (name, world.codes[index, attribute_index(name)], 1.0)
        for name in ATTRIBUTES
        if name not in constraints
    ]
    return cell_predictor_from_outcomes(
        scenes,
        tuple(world.images.shape[1:]),
        tables=tables,
        outcome_weight=scene_weight,
        power=power,
        temperature=temperature,
        samples=samples,
        seed=seed,
        metadata={"kind": "lab oracle", "prompt": prompt},
    )


def readout_labels(world: World, prompt: str):
    """A ``labels`` function for pilot fitting on the lab: the attribute values (the prompt's open
    attributes) that the ground-truth readout gives each pilot output [P, 3, size, size] (model
    space). It labels pilot images only, like a classifier would; the fitted predictor itself
    never sees the scene set."""
    open_attributes = [name for name in ATTRIBUTES if name not in parse_prompt(prompt)]

    def labels(outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        images = ((outputs.float() + 1) / 2).clamp(0, 1)
        read = read_attributes(images, world)
        return {
            name: torch.tensor([value_index(name, attributes[name]) for attributes in read])
            for name in open_attributes
        }

    return labels
