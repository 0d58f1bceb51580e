"""Ground-truth readout for the learned lab: the classifiers say what each image shows.

- alignment: the fraction of a gallery's images showing every attribute the prompt names;
- coverage: distinct values of each attribute the prompt leaves open, among the aligned images,
  beside the best possible min(K, #values) and the expectation for K independent draws from the
  training law (uniform over the values): as in the closed-form lab's readout;
- fixed-object task: whether the object (class, colour, position) of a reference is kept while
  the background changes.
Memorisation: each image's pixel distance to its nearest neighbour in a bank of composites the
denoiser was trained on, to compare with the same distance for held-out composites.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from couplednoise.pipelines.lab.readout import Coverage, FixedObjectReadout, expected_distinct
from couplednoise.pipelines.learned_lab.prompts import parse_prompt
from couplednoise.pipelines.learned_lab.world import ATTRIBUTES, OBJECT_ATTRIBUTES, describe

_NAMES = list(ATTRIBUTES)


def read_attributes(images: torch.Tensor, classifier) -> list[dict[str, str]]:
    """What each image [N, 3, 32, 32] in [0, 1] shows, by the classifier."""
    return describe(classifier.predict(images))


def matches(attributes: Mapping[str, str], constraints: Mapping[str, str]) -> bool:
    """Whether ``attributes`` has every value ``constraints`` names."""
    return all(attributes[name] == value for name, value in constraints.items())


@dataclass
class GalleryReadout:
    """Ground truth for one gallery of K images generated for ``prompt``."""

    prompt: str
    attributes: list[dict[str, str]]
    alignment: float
    attribute_coverage: dict[str, Coverage] = field(default_factory=dict)

    @property
    def mean_attribute_coverage(self) -> float:
        """Mean coverage fraction over the attributes the prompt leaves open (1.0 if none)."""
        fractions = [c.fraction for c in self.attribute_coverage.values()]
        return sum(fractions) / len(fractions) if fractions else 1.0

    def summary(self) -> dict[str, float]:
        """Flat numbers for tables: alignment, mean coverage fraction, distinct values each."""
        row = {"alignment": self.alignment, "attr_cov": self.mean_attribute_coverage}
        for name, cov in self.attribute_coverage.items():
            row[f"{name}_values"] = float(cov.distinct)
        return row


def gallery_readout(images: torch.Tensor, prompt: str, classifier) -> GalleryReadout:
    """Read out a gallery [K, 3, 32, 32] in [0, 1] generated for ``prompt``.

    Coverage counts values among the aligned images only, so off-prompt images add nothing.
    """
    constraints = parse_prompt(prompt)
    attributes = read_attributes(images, classifier)
    aligned = [a for a in attributes if matches(a, constraints)]
    k = len(attributes)
    coverage = {}
    for name, values in ATTRIBUTES.items():
        if name in constraints:
            continue
        seen = {a[name] for a in aligned}
        n = len(values)
        coverage[name] = Coverage(len(seen), min(k, n), expected_distinct(k, [1 / n] * n))
    return GalleryReadout(prompt, attributes, len(aligned) / k, coverage)


def object_of(attributes: Mapping[str, str]) -> tuple[str, ...]:
    """(object, colour, position): what the fixed-object task must keep."""
    return tuple(attributes[name] for name in OBJECT_ATTRIBUTES)


def fixed_object_readout(
    images: torch.Tensor, classifier, reference: Mapping[str, str] | None = None
) -> FixedObjectReadout:
    """object_kept: fraction of images whose (object, colour, position) equals the reference's
    (or the gallery's most common one without a reference); distinct backgrounds beside
    min(K, #backgrounds); with a reference, the fraction keeping it on another background."""
    attributes = read_attributes(images, classifier)
    objects = [object_of(a) for a in attributes]
    target = (
        object_of(reference) if reference is not None else Counter(objects).most_common(1)[0][0]
    )
    kept = sum(o == target for o in objects) / len(objects)
    backgrounds = {a["background"] for a in attributes}
    limit = min(len(attributes), len(ATTRIBUTES["background"]))
    new = None
    if reference is not None:
        hits = [
            o == target and a["background"] != reference["background"]
            for o, a in zip(objects, attributes)
        ]
        new = sum(hits) / len(hits)
    return FixedObjectReadout(kept, len(backgrounds), limit, new)


def nearest_distances(
    images: torch.Tensor, bank: torch.Tensor, *, chunk_size: int = 2048
) -> torch.Tensor:
    """Per image [N, 3, 32, 32], the L2 pixel distance [N] to its nearest neighbour in ``bank``
    [M, 3, 32, 32] (both in [0, 1]; recomputed exactly for the winner)."""
    x = images.detach().to("cpu", torch.float32).flatten(1)
    best = torch.full((x.shape[0],), torch.inf)
    index = torch.zeros(x.shape[0], dtype=torch.int64)
    for start in range(0, bank.shape[0], chunk_size):
        part = bank[start : start + chunk_size].to(torch.float32).flatten(1)
        distance, local = torch.cdist(x, part).min(1)
        better = distance < best
        best = torch.where(better, distance, best)
        index = torch.where(better, local + start, index)
    return (x - bank[index].to(torch.float32).flatten(1)).norm(dim=1)
