"""The learned lab's image world: a Fashion-MNIST object, coloured, placed on a background.

Composites are drawn on the fly from a torch generator, never stored: attribute codes
[N, 4] (object, colour, position, background, in ``ATTRIBUTES`` order) and the nuisance
variables (which Fashion-MNIST image, which texture crop, jitter) all come from it, so a seed
fixes a batch exactly. Two disjoint splits: "train" uses Fashion-MNIST's training images and the
top three quarters of each texture, "test" Fashion-MNIST's test images and the bottom quarter.

Sources (installed, no downloads): Debian ``dataset-fashion-mnist`` (MIT) and scikit-image's
``brick``, ``grass``, ``gravel`` textures (CC0).
"""

from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 32
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "object": ("t-shirt", "trouser", "dress", "sandal", "sneaker", "bag", "boot"),
    "colour": ("red", "yellow", "green", "blue", "purple", "white"),
    "position": ("left", "right", "top", "bottom"),
    "background": ("brick", "grass", "gravel", "black", "gray", "sky"),
}
NUM_VALUES = tuple(len(v) for v in ATTRIBUTES.values())
OBJECT_ATTRIBUTES = ("object", "colour", "position")
SPLITS = ("train", "test")
# Fashion-MNIST label of each object value (pullover, coat and shirt are left out: they are
# confused with each other and with the t-shirt even at 28 x 28).
FMNIST_LABELS = (0, 1, 3, 5, 7, 8, 9)
FMNIST_DIR_ENV = "COUPLEDNOISE_FASHION_MNIST"
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_COLOURS = {
    "red": (0.90, 0.12, 0.10),
    "yellow": (0.98, 0.88, 0.10),
    "green": (0.15, 0.85, 0.25),
    "blue": (0.12, 0.30, 0.95),
    "purple": (0.62, 0.20, 0.80),
    "white": (0.97, 0.97, 0.97),
}
_CENTRES = {"left": (11, 16), "right": (21, 16), "top": (16, 11), "bottom": (16, 21)}  # (x, y)
_TEXTURE_TINTS = {
    "brick": (0.62, 0.32, 0.24),
    "grass": (0.30, 0.52, 0.18),
    "gravel": (0.62, 0.56, 0.46),
}
_PLAIN = {"black": (0.06, 0.06, 0.06), "gray": (0.50, 0.50, 0.50), "sky": (0.55, 0.75, 0.95)}
OBJECT_SIZES = (18, 20, 22)  # side in pixels of the resized 28 x 28 Fashion-MNIST image
_SHIFT = 1  # max position jitter in pixels
_COLOUR_JITTER = 0.05
_PLAIN_JITTER = 0.04
_TEXTURE_SIDE = 256  # textures are downscaled 512 -> 256 so a 32 px crop shows their structure
_TEXTURE_TRAIN_ROWS = 192


class MissingDataError(FileNotFoundError):
    """Fashion-MNIST is not installed where the world looks for it."""


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get(FMNIST_DIR_ENV, FMNIST_DIR))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 28, 28], object codes int64 [N]) of the kept classes of ``split``,
    from ``$COUPLEDNOISE_FASHION_MNIST`` or Debian's folder (read once per folder)."""
    _check_split(split)
    return _fashion_mnist(str(fashion_mnist_dir()), split)


@functools.lru_cache(maxsize=4)
def _fashion_mnist(folder: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    root = Path(folder)
    prefix = "train" if split == "train" else "t10k"
    files = [root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise MissingDataError(
            f"Fashion-MNIST not found ({', '.join(missing)}): install it with "
            f"`apt-get install dataset-fashion-mnist` or point {FMNIST_DIR_ENV} at a folder "
            "holding the four *-idx*-ubyte.gz files"
        )
    images, labels = _read_idx(files[0]), _read_idx(files[1]).astype(np.int64)
    lookup = np.full(10, -1)
    lookup[list(FMNIST_LABELS)] = np.arange(len(FMNIST_LABELS))
    codes = lookup[labels]
    keep = codes >= 0
    return torch.from_numpy(images[keep].copy()), torch.from_numpy(codes[keep])


def _objects_by_class(split: str) -> tuple[tuple[torch.Tensor, ...], ...]:
    """Per object size, per class: intensities float [M_c, s, s] in [0, 1] (antialiased)."""
    return _resized_objects(str(fashion_mnist_dir()), split)


@functools.lru_cache(maxsize=4)
def _resized_objects(folder: str, split: str) -> tuple[tuple[torch.Tensor, ...], ...]:
    images, codes = _fashion_mnist(folder, split)
    x = images.float()[:, None] / 255
    out = []
    for side in OBJECT_SIZES:
        small = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)[:, 0]
        small = small.clamp(0, 1)
        out.append(tuple(small[codes == c].contiguous() for c in range(len(FMNIST_LABELS))))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def textures() -> torch.Tensor:
    """The three textures, float [3, 256, 256], each standardised (mean 0, std 1)."""
    from skimage import data

    planes = []
    for name in _TEXTURE_TINTS:
        image = torch.from_numpy(getattr(data, name)().astype(np.float32) / 255)[None, None]
        image = F.interpolate(image, size=(_TEXTURE_SIDE,) * 2, mode="bilinear", antialias=True)
        image = image[0, 0]
        planes.append((image - image.mean()) / image.std())
    return torch.stack(planes)


def object_centres() -> torch.Tensor:
    """(x, y) pixel centre int64 [n_positions, 2] of each position code (before jitter)."""
    return torch.tensor([_CENTRES[p] for p in ATTRIBUTES["position"]])


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@dataclass(frozen=True)
class Composites:
    """A batch of composites: images float [N, 3, 32, 32] in [0, 1], codes int64 [N, 4],
    object masks float [N, 32, 32] in [0, 1] (the object's opacity)."""

    images: torch.Tensor
    codes: torch.Tensor
    masks: torch.Tensor


def sample_codes(n: int, *, generator: torch.Generator) -> torch.Tensor:
    """Uniform attribute codes int64 [n, 4]."""
    return torch.stack(
        [torch.randint(len(v), (n,), generator=generator) for v in ATTRIBUTES.values()], 1
    )


def render(codes: torch.Tensor, split: str, *, generator: torch.Generator) -> Composites:
    """Composites for attribute ``codes`` [N, 4], nuisances drawn from ``generator``."""
    _check_split(split)
    codes = torch.as_tensor(codes, dtype=torch.int64)
    if codes.ndim != 2 or codes.shape[1] != len(ATTRIBUTES):
        raise ValueError(f"codes must be [N, {len(ATTRIBUTES)}], got {list(codes.shape)}")
    for j, values in enumerate(ATTRIBUTES.values()):
        if codes.numel() and (codes[:, j].min() < 0 or codes[:, j].max() >= len(values)):
            raise ValueError(f"codes[:, {j}] must lie in [0, {len(values)})")
    n = codes.shape[0]
    objects = _objects_by_class(split)
    # Every draw has a fixed size per row, so a batch is reproducible whatever it contains.
    size_pick = torch.randint(len(OBJECT_SIZES), (n,), generator=generator)
    image_pick = torch.rand(n, generator=generator)
    shift = torch.randint(-_SHIFT, _SHIFT + 1, (n, 2), generator=generator)
    tint = (torch.rand(n, 3, generator=generator) * 2 - 1) * _COLOUR_JITTER
    background = _backgrounds(codes[:, 3], split, generator)

    colour_table = torch.tensor([_COLOURS[c] for c in ATTRIBUTES["colour"]])
    colours = (colour_table[codes[:, 1]] + tint).clamp(0, 1)
    alpha = torch.zeros(n, SIZE, SIZE)
    shade = torch.zeros(n, SIZE, SIZE)
    centres = object_centres()
    for i in range(n):
        bank = objects[int(size_pick[i])][int(codes[i, 0])]
        intensity = bank[min(int(image_pick[i] * len(bank)), len(bank) - 1)]
        side = intensity.shape[0]
        cx, cy = (centres[codes[i, 2]] + shift[i]).tolist()
        x0, y0 = cx - side // 2, cy - side // 2
        # Clip the paste to the canvas (a jittered large object can overhang by a pixel).
        sx, sy = max(0, -x0), max(0, -y0)
        ex, ey = min(side, SIZE - x0), min(side, SIZE - y0)
        patch = intensity[sy:ey, sx:ex]
        alpha[i, y0 + sy : y0 + ey, x0 + sx : x0 + ex] = (patch * 4).clamp(max=1)
        shade[i, y0 + sy : y0 + ey, x0 + sx : x0 + ex] = 0.45 + 0.55 * patch
    a = alpha[:, None]
    obj = colours[:, :, None, None] * shade[:, None]
    images = (background * (1 - a) + obj * a).clamp(0, 1)
    return Composites(images.contiguous(), codes, alpha)


def _backgrounds(kind: torch.Tensor, split: str, generator: torch.Generator) -> torch.Tensor:
    """Backgrounds float [N, 3, 32, 32] for background codes ``kind`` [N]."""
    n = kind.shape[0]
    rows = (0, _TEXTURE_TRAIN_ROWS) if split == "train" else (_TEXTURE_TRAIN_ROWS, _TEXTURE_SIDE)
    top = torch.randint(rows[0], rows[1] - SIZE + 1, (n,), generator=generator)
    left = torch.randint(0, _TEXTURE_SIDE - SIZE + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    brightness = (torch.rand(n, generator=generator) * 2 - 1) * _PLAIN_JITTER
    names = ATTRIBUTES["background"]
    out = torch.empty(n, 3, SIZE, SIZE)
    planes = textures() if bool((kind < len(_TEXTURE_TINTS)).any()) else None
    for i in range(n):
        name = names[int(kind[i])]
        if name in _TEXTURE_TINTS:
            t, y, x = int(kind[i]), int(top[i]), int(left[i])
            crop = planes[t, y : y + SIZE, x : x + SIZE]
            crop = crop.flip(-1) if flip[i] else crop
            tint_rgb = torch.tensor(_TEXTURE_TINTS[name])[:, None, None]
            out[i] = (tint_rgb * (1 + 0.35 * crop[None])).clamp(0, 1)
        else:
            level = torch.tensor(_PLAIN[name]) + brightness[i]
            out[i] = level.clamp(0, 1)[:, None, None].expand(3, SIZE, SIZE)
    return out


def sample_composites(n: int, split: str, *, generator: torch.Generator) -> Composites:
    """``n`` composites with uniform attributes from ``split``."""
    return render(sample_codes(n, generator=generator), split, generator=generator)


def describe(codes: torch.Tensor) -> list[dict[str, str]]:
    """Attribute dicts of codes [N, 4], e.g. [{"object": "sneaker", ...}, ...]."""
    names = list(ATTRIBUTES)
    return [{name: ATTRIBUTES[name][c] for name, c in zip(names, row)} for row in codes.tolist()]
