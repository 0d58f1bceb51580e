"""Image files of a run folder: atomic PNG writes and labelled gallery grids.

    save_png(images[0], "out/0.png")               # [3, H, W] -> 8-bit PNG (temp file + os.replace)
    grid = image_grid([row_a, row_b], labels=["independent", "repulsive"])   # a PIL image
    save_image(grid, "out/grid.png")

Written here rather than taken from torchvision: its make_grid has no row labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from couplednoise.eval.runs.atomic import atomic_file
from couplednoise.pipelines.images import to_pil

LABEL_HEIGHT = 14  # pixels of the label strip above a labelled row (PIL's default bitmap font)


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write a PIL image as PNG atomically (runs.atomic: temp file, fsync, rename)."""
    with atomic_file(path, "wb") as handle:
        image.save(handle, format="PNG")
    return Path(path)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write one image [3, H, W] float in [0, 1] as an 8-bit PNG, atomically."""
    return save_image(to_pil(image), path)


def image_grid(
    rows: Sequence[torch.Tensor],
    *,
    labels: Sequence[str] | None = None,
    padding: int = 2,
    background: int = 255,
) -> Image.Image:
    """One row per tensor [K_r, 3, H, W] (all images one size), with an optional label each."""
    if not rows:
        raise ValueError("image_grid needs at least one row")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"got {len(labels)} labels for {len(rows)} rows")
    sizes = {tuple(r.shape[-2:]) for r in rows}
    if len(sizes) != 1 or any(r.dim() != 4 or r.shape[1] != 3 for r in rows):
        raise ValueError(f"rows must be [K, 3, H, W] with one H x W; got sizes {sorted(sizes)}")
    h, w = sizes.pop()
    columns = max(r.shape[0] for r in rows)
    strip = LABEL_HEIGHT if labels is not None else 0
    row_height = strip + h + padding
    canvas = Image.new(
        "RGB",
        (padding + columns * (w + padding), padding + len(rows) * row_height),
        (background,) * 3,
    )
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        top = padding + r * row_height
        if labels is not None:
            draw.text((padding, top), labels[r], fill=(0, 0, 0))
        for k, image in enumerate(row):
            canvas.paste(to_pil(image), (padding + k * (w + padding), top + strip))
    return canvas


def enlarge(images: torch.Tensor, min_side: int) -> torch.Tensor:
    """Small images [..., 3, H, W] (the lab's 32 px) enlarged by an integer factor, nearest
    neighbour, so their shorter side is at least ``min_side`` (unchanged if already that big)."""
    factor = max(1, min_side // min(images.shape[-2:]))
    if factor == 1:
        return images
    batch = images if images.dim() == 4 else images[None]
    big = torch.nn.functional.interpolate(batch, scale_factor=factor, mode="nearest")
    return big if images.dim() == 4 else big[0]
