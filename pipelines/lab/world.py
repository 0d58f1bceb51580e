"""The lab's procedural image world: scenes of one object on a background, attributes known.

Every combination of the attribute values below is rendered ``variants`` times with a small
random jitter (object position, size, colour) drawn from ``seed``, so the world is a finite set
of N = 4 * 6 * 2 * 5 * 6 * variants scenes (2,880 with the default 2 variants), deterministic
from (size, variants, seed), with no files. Images are float [N, 3, size, size] in [0, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "diamond"),
    "colour": ("red", "orange", "yellow", "green", "blue", "purple"),
    "size": ("small", "large"),
    "position": ("left", "right", "top", "bottom", "center"),
    "background": ("white", "gray", "black", "blue", "striped", "checkered"),
}
OBJECT_ATTRIBUTES = ("shape", "colour", "size", "position")
SIZES = (32, 64)

_COLOURS = {
    "red": (0.88, 0.12, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.98, 0.88, 0.10),
    "green": (0.10, 0.70, 0.20),
    "blue": (0.10, 0.25, 0.90),
    "purple": (0.58, 0.18, 0.75),
}
_RADIUS = {"small": 0.11, "large": 0.20}  # fraction of the image side
_CENTRES = {
    "left": (0.28, 0.50),
    "right": (0.72, 0.50),
    "top": (0.50, 0.28),
    "bottom": (0.50, 0.72),
    "center": (0.50, 0.50),
}
_JITTER_SHIFT = 0.04  # max centre offset, fraction of the side
_JITTER_SCALE = 0.10  # max relative radius change
_JITTER_COLOUR = 0.05  # max per-channel colour offset


@dataclass(frozen=True, eq=False)
class World:
    """A finite set of scenes with known attributes.

    images:  float32 [N, 3, size, size] in [0, 1]
    codes:   int64 [N, 5]: index of each scene's value for each attribute, in ``ATTRIBUTES`` order
    centres: float32 [N, 2] object centre (x, y) in pixels; radii: float32 [N] in pixels
    """

    size: int
    variants: int
    seed: int
    images: torch.Tensor
    codes: torch.Tensor
    centres: torch.Tensor
    radii: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def matching(self, constraints: Mapping[str, str]) -> torch.Tensor:
        """Indices [M] (int64) of the scenes whose attributes equal every given value."""
        keep = torch.ones(len(self), dtype=torch.bool)
        for name, value in constraints.items():
            keep &= self.codes[:, attribute_index(name)] == value_index(name, value)
        return keep.nonzero().flatten()

    def attributes(self, index: int) -> dict[str, str]:
        """The attribute values of scene ``index``, e.g. {"shape": "circle", ...}."""
        code = self.codes[index].tolist()
        return {name: values[c] for (name, values), c in zip(ATTRIBUTES.items(), code)}

    def object_mask(self, index: int) -> torch.Tensor:
        """{0, 1} float mask [size, size] of scene ``index``'s object (coverage >= 0.5)."""
        shape = self.codes[index : index + 1, 0]
        alpha = _object_alpha(
            self.size, shape, self.centres[index : index + 1], self.radii[index : index + 1]
        )
        return (alpha[0] >= 0.5).to(torch.float32)


def attribute_index(name: str) -> int:
    if name not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {name!r}; valid: {', '.join(ATTRIBUTES)}")
    return list(ATTRIBUTES).index(name)


def value_index(name: str, value: str) -> int:
    values = ATTRIBUTES[name]
    if value not in values:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(values)}")
    return values.index(value)


@functools.lru_cache(maxsize=4)
def build_world(size: int = 32, variants: int = 2, seed: int = 0) -> World:
    """Render every attribute combination ``variants`` times (cached per arguments)."""
    if size not in SIZES:
        raise ValueError(f"lab world size must be one of {SIZES}, got {size}")
    if not isinstance(variants, int) or variants < 1:
        raise ValueError(f"variants must be a positive int, got {variants!r}")
    counts = [len(v) for v in ATTRIBUTES.values()]
    grids = torch.meshgrid(*[torch.arange(c) for c in counts], indexing="ij")
    codes = torch.stack([g.flatten() for g in grids], dim=1).repeat_interleave(variants, dim=0)
    n = codes.shape[0]

    gen = torch.Generator().manual_seed(seed)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * _JITTER_SHIFT
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * _JITTER_SCALE
    tint = (torch.rand(n, 3, generator=gen) * 2 - 1) * _JITTER_COLOUR

    centre_table = torch.tensor([_CENTRES[p] for p in ATTRIBUTES["position"]])
    radius_table = torch.tensor([_RADIUS[s] for s in ATTRIBUTES["size"]])
    colour_table = torch.tensor([_COLOURS[c] for c in ATTRIBUTES["colour"]])
    centres = (centre_table[codes[:, 3]] + shift) * size
    radii = radius_table[codes[:, 2]] * scale * size
    colours = (colour_table[codes[:, 1]] + tint).clamp(0, 1)

    alpha = _object_alpha(size, codes[:, 0], centres, radii)[:, None]  # [N, 1, H, W]
    backgrounds = _backgrounds(size)[codes[:, 4]]  # [N, 3, H, W]
    images = backgrounds * (1 - alpha) + colours[:, :, None, None] * alpha
    return World(size, variants, seed, images.contiguous(), codes, centres, radii)


def _object_alpha(
    size: int, shape: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor
) -> torch.Tensor:
    """Anti-aliased object coverage [N, H, W] in [0, 1] from a signed distance (pixels)."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dx = (coords[None, None, :] - centres[:, 0, None, None]).expand(-1, size, size)
    dy = (coords[None, :, None] - centres[:, 1, None, None]).expand(-1, size, size)
    r = radii[:, None, None]
    circle = (dx**2 + dy**2).sqrt() - r
    square = torch.maximum(dx.abs(), dy.abs()) - 0.85 * r
    # Equilateral triangle pointing up, inradius r / 2 (circumradius r): max over its 3 edges.
    up = -dy
    edges = torch.stack([-up, 0.866 * dx + 0.5 * up, -0.866 * dx + 0.5 * up])
    triangle = edges.amax(0) - 0.5 * r
    diamond = (dx.abs() + dy.abs()) * 0.7071 - 0.8 * r
    sdf = torch.stack([circle, square, triangle, diamond])  # order of ATTRIBUTES["shape"]
    chosen = sdf.gather(0, shape[None, :, None, None].expand(1, *circle.shape))[0]
    return (0.5 - chosen).clamp(0, 1)


def _backgrounds(size: int) -> torch.Tensor:
    """The background images [6, 3, size, size] in ``ATTRIBUTES["background"]`` order."""
    coords = torch.arange(size)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    period = size // 8

    def flat(rgb):
        return torch.tensor(rgb, dtype=torch.float32)[:, None, None].expand(3, size, size)

    def two_tone(pattern, light, dark):
        p = pattern.to(torch.float32)[None]
        return flat(light) * (1 - p) + flat(dark) * p

    stripes = ((x + y) // period) % 2 == 1
    checks = ((x // (2 * period)) + (y // (2 * period))) % 2 == 1
    return torch.stack(
        [
            flat((0.95, 0.95, 0.95)),
            flat((0.55, 0.55, 0.55)),
            flat((0.08, 0.08, 0.08)),
            flat((0.55, 0.72, 0.95)),
            two_tone(stripes, (0.92, 0.85, 0.70), (0.70, 0.58, 0.40)),
            two_tone(checks, (0.85, 0.85, 0.85), (0.35, 0.35, 0.35)),
        ]
    )
