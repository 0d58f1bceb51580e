"""Image tensors <-> PIL: float [3, H, W] in [0, 1] <-> 8-bit RGB (writing files: eval.runs.images).

Written here rather than taken from torchvision: torchvision is not a dependency of the
``pipelines`` extra.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] float in [0, 1] -> an RGB PIL image (rounded to 8 bits)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got shape {tuple(image.shape)}")
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy())


def from_pil(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> [3, H, W] float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def open_image(path, what: str = "image") -> Image.Image:
    """A decoded image file; ValueError naming ``path`` when it is missing, unreadable or a
    decompression bomb (over PIL's MAX_IMAGE_PIXELS, which decoding would blow up in memory)."""
    import warnings
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return image
    except (
        OSError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        raise ValueError(f"{what} {path} is not a readable image: {error}") from None
