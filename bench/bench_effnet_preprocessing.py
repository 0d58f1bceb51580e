"""EfficientNet-Lite0 preprocessing, chosen by measurement on labelled real photos.

    python bench/bench_effnet_preprocessing.py

Scores every combination of input scaling (TF-style (255 x - 127) / 128, ImageNet mean / std) and
crop (the whole short side, or TF's eval crop of the central 224 / 256) on the real photos that
ship in scikit-learn and scikit-image, each also mirrored, against the ImageNet classes a person
would accept for it: top-1 and top-5 accuracy, the mean log-probability of the accepted set, and
its paired difference to the first setting with a 95% t-interval over the photos (a photo's two
views averaged, since a mirror image is not an independent sample).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

from couplednoise.eval.backbones.efficientnet import (
    IMAGENET_SCALING,
    TF_SCALING,
    imagenet_categories,
    load_efficientnet_lite0,
)
from couplednoise.eval.runs.stats import paired_difference_ci
from couplednoise.pipelines.images import from_pil

# photo -> ImageNet classes that describe it (any one counts as correct)
ACCEPTED = {
    "sklearn:china.jpg": ("palace", "monastery", "bell cote"),
    "sklearn:flower.jpg": ("daisy",),
    "skimage:chelsea.png": ("tabby", "tiger cat", "Egyptian cat"),
    "skimage:coffee.png": ("espresso", "cup", "coffee mug"),
    "skimage:rocket.jpg": ("missile", "projectile", "space shuttle"),
    "skimage:motorcycle_left.png": ("moped", "motor scooter"),
    "skimage:camera.png": ("tripod", "reflex camera"),
    "skimage:clock_motion.png": ("wall clock", "analog clock"),
}
SCALINGS = {"tf (x-127)/128": TF_SCALING, "imagenet mean/std": IMAGENET_SCALING}
CROPS = {"whole short side": 1.0, "tf central 224/256": 224 / 256}


def photo(name: str) -> torch.Tensor:
    """[3, H, W] in [0, 1] of a photo shipped inside an installed package."""
    from PIL import Image

    package, file = name.split(":")
    folder = {"sklearn": ("sklearn", "datasets/images"), "skimage": ("skimage", "data")}[package]
    root = Path(next(iter(importlib.util.find_spec(folder[0]).submodule_search_locations)))
    return from_pil(Image.open(root / folder[1] / file))


def main() -> None:
    torch.set_num_threads(1)
    names = imagenet_categories()
    images = [photo(name) for name in ACCEPTED]
    views = [(name, view) for name, x in zip(ACCEPTED, images) for view in (x, x.flip(-1))]
    embedder = load_efficientnet_lite0()
    print(f"{len(views)} views of {len(ACCEPTED)} photos (each also mirrored)")
    print(
        "| scaling | crop | top-1 | top-5 | mean log p(accepted) | vs first, paired 95% CI |\n"
        "|---|---|---|---|---|---|"
    )
    first = None
    for scaling_name, (mean, std) in SCALINGS.items():
        for crop_name, fraction in CROPS.items():
            embedder.mean, embedder.std, embedder.crop_fraction = mean, std, fraction
            top1 = top5 = 0
            log_p = []
            for name, view in views:
                p = embedder.logits(view[None]).softmax(dim=1)[0]
                accepted = [names.index(c) for c in ACCEPTED[name]]
                ranked = p.argsort(descending=True).tolist()
                top1 += ranked[0] in accepted
                top5 += bool(set(ranked[:5]) & set(accepted))
                log_p.append(math.log(float(p[accepted].sum())))
            per_photo = [(a + b) / 2 for a, b in zip(log_p[::2], log_p[1::2])]
            first = per_photo if first is None else first
            diff, low, high = paired_difference_ci(per_photo, first)
            n = len(views)
            print(
                f"| {scaling_name} | {crop_name} | {top1}/{n} | {top5}/{n} | "
                f"{sum(log_p) / n:.3f} | {diff:+.3f} [{low:+.3f}, {high:+.3f}] |"
            )


if __name__ == "__main__":
    main()
