"""Ground-truth readout: what each generated lab image shows, and how diverse a gallery is.

Each image maps to its nearest world scene (pixel L2), which gives its attributes. From that:
- alignment: the fraction of images whose attributes match the prompt;
- coverage: distinct scenes, and distinct values of every attribute the prompt leaves open,
  among the aligned images of a gallery;
- the best possible coverage for K images: min(K, number of matching scenes or values);
- the expectation for K independent draws with replacement from the prompt's scenes (what an
  exact sampler with independent noise achieves on average): sum_v 1 - (1 - p_v)^K.
Fixed-object task: a reference scene's object mask, and whether a gallery keeps the object
(shape, colour, size, position) while its backgrounds vary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from couplednoise.pipelines.lab.prompts import parse_prompt
from couplednoise.pipelines.lab.world import ATTRIBUTES, OBJECT_ATTRIBUTES, World, attribute_index


def nearest_scenes(
    images: torch.Tensor, world: World, *, chunk_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices [N] int64, L2 distances [N]) of each image's nearest world scene.

    ``images`` float [N, 3, size, size] in [0, 1], the world's resolution.
    """
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(world.images.shape[1:]):
        raise ValueError(
            f"images must be [N, {', '.join(map(str, world.images.shape[1:]))}] to read out "
            f"against this lab world, got {list(images.shape)}"
        )
    x = images.detach().to("cpu", torch.float32).flatten(1)
    best = torch.full((x.shape[0],), torch.inf)
    index = torch.zeros(x.shape[0], dtype=torch.int64)
    for start in range(0, len(world), chunk_size):
        scenes = world.images[start : start + chunk_size].flatten(1)
        distance, local = torch.cdist(x, scenes).min(1)
        better = distance < best
        best = torch.where(better, distance, best)
        index = torch.where(better, local + start, index)
    # cdist's matrix-product shortcut is fast but loses ~1e-1 near 0: recompute the winners exactly.
    exact = (x - world.images[index].flatten(1)).norm(dim=1)
    return index, exact


def read_attributes(images: torch.Tensor, world: World) -> list[dict[str, str]]:
    """The attributes of each image's nearest scene, e.g. [{"shape": "circle", ...}, ...]."""
    index, _ = nearest_scenes(images, world)
    return [world.attributes(i) for i in index.tolist()]


def matches(attributes: Mapping[str, str], constraints: Mapping[str, str]) -> bool:
    """Whether ``attributes`` has every value ``constraints`` names."""
    return all(attributes[name] == value for name, value in constraints.items())


def expected_distinct(k: int, probabilities: Sequence[float]) -> float:
    """E[#distinct values] in k draws with replacement from a law with these probabilities."""
    return float(sum(1.0 - (1.0 - p) ** k for p in probabilities if p > 0))


@dataclass
class Coverage:
    """Distinct values in a gallery beside the best possible and the independent expectation."""

    distinct: int
    limit: int
    expected_independent: float

    @property
    def fraction(self) -> float:
        """distinct / limit (1.0 = the best any gallery of this size can do)."""
        return self.distinct / self.limit


@dataclass
class GalleryReadout:
    """Ground truth for one gallery of K images generated for ``prompt``."""

    prompt: str
    scenes: list[int]
    attributes: list[dict[str, str]]
    alignment: float
    scene_coverage: Coverage
    attribute_coverage: dict[str, Coverage] = field(default_factory=dict)

    @property
    def mean_attribute_coverage(self) -> float:
        """Mean coverage fraction over the attributes the prompt leaves open (1.0 if none)."""
        fractions = [c.fraction for c in self.attribute_coverage.values()]
        return sum(fractions) / len(fractions) if fractions else 1.0

    def summary(self) -> dict[str, float]:
        """Flat numbers for tables: alignment, scene and attribute coverage (fractions of the limit)."""
        row = {
            "alignment": self.alignment,
            "scenes": float(self.scene_coverage.distinct),
            "scene_cov": self.scene_coverage.fraction,
            "attr_cov": self.mean_attribute_coverage,
        }
        for name, cov in self.attribute_coverage.items():
            row[f"{name}_values"] = float(cov.distinct)
        return row


def gallery_readout(images: torch.Tensor, prompt: str, world: World) -> GalleryReadout:
    """Read out a gallery [K, 3, size, size] in [0, 1] generated for ``prompt``.

    Coverage counts distinct scenes / values among the aligned images only, so off-prompt images
    never add diversity.
    """
    constraints = parse_prompt(prompt)
    candidates = world.matching(constraints)
    index, _ = nearest_scenes(images, world)
    attributes = [world.attributes(i) for i in index.tolist()]
    aligned = [i for i, a in zip(index.tolist(), attributes) if matches(a, constraints)]
    k = images.shape[0]
    m = len(candidates)
    scene_coverage = Coverage(len(set(aligned)), min(k, m), expected_distinct(k, [1 / m] * m))
    coverage = {}
    for name, values in ATTRIBUTES.items():
        if name in constraints:
            continue
        column = world.codes[candidates, attribute_index(name)]
        counts = torch.bincount(column, minlength=len(values)).double() / m
        present = int((counts > 0).sum())
        seen = {world.attributes(i)[name] for i in aligned}
        coverage[name] = Coverage(len(seen), min(k, present), expected_distinct(k, counts.tolist()))
    return GalleryReadout(
        prompt=prompt,
        scenes=index.tolist(),
        attributes=attributes,
        alignment=len(aligned) / k,
        scene_coverage=scene_coverage,
        attribute_coverage=coverage,
    )


def object_attributes(attributes: Mapping[str, str]) -> tuple[str, ...]:
    """(shape, colour, size, position): what the fixed-object task must preserve."""
    return tuple(attributes[name] for name in OBJECT_ATTRIBUTES)


@dataclass
class FixedObjectReadout:
    """Fixed-object task: is the object kept (vs a reference, or the gallery's majority), do
    backgrounds vary? ``kept_on_new_background``: the fraction of images that keep the object
    *and* show a background other than the reference's (None without a reference); it is what
    the task asks of every image, so at best 1 - P(the reference's background)."""

    object_kept: float
    distinct_backgrounds: int
    background_limit: int
    kept_on_new_background: float | None = None


def fixed_object_readout(
    images: torch.Tensor, world: World, reference: int | None = None
) -> FixedObjectReadout:
    """object_kept: fraction of images whose object equals the reference scene's (or, without
    a reference, the gallery's most common object); distinct backgrounds beside min(K, #backgrounds)."""
    attributes = read_attributes(images, world)
    objects = [object_attributes(a) for a in attributes]
    target = (
        object_attributes(world.attributes(reference))
        if reference is not None
        else Counter(objects).most_common(1)[0][0]
    )
    kept = sum(o == target for o in objects) / len(objects)
    backgrounds = {a["background"] for a in attributes}
    limit = min(len(images), len(ATTRIBUTES["background"]))
    new = None
    if reference is not None:
        old = world.attributes(reference)["background"]
        hits = [o == target and a["background"] != old for o, a in zip(objects, attributes)]
        new = sum(hits) / len(hits)
    return FixedObjectReadout(kept, len(backgrounds), limit, new)
