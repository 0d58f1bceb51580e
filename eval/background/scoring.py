"""Scoring fixed-object background galleries: fidelity, diversity, alignment, lab ground truth.

    rows = score_galleries(galleries, task, backbones, paste=True)   # one row per gallery and view
    summary = summarise(rows)                                          # mean per method/setting/view
    tradeoff_figure(summary, "out/tradeoff.png")

Per gallery (images [K, 3, H, W], the reference and its object mask): foreground fidelity inside
the mask against the reference (``fg_psnr``, ``fg_ssim``, ``fg_lpips`` with an LPIPS net),
background diversity outside it between gallery images (``bg_l2``, ``bg_lpips``), ``tradeoff``
(their harmonic mean, eval.fidelity) and ``clip`` (CLIP score to the background prompt, with a
CLIP backbone). On the lab, the ground-truth readout adds ``object_kept`` (fraction of images
whose object has the reference's shape, colour, size and position) and ``distinct_backgrounds``.
A dataset is a folder with images/NAME.(png|jpg|jpeg|webp) and masks/NAME.png.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from couplednoise.eval.metrics.alignment import clip_score
from couplednoise.eval.metrics.fidelity import (
    background_diversity,
    fidelity_diversity_tradeoff,
    foreground_fidelity,
)
from couplednoise.pipelines.background import BackgroundGallery, BackgroundTask, paste_back

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIEWS = ("raw", "pasted")
# (x, y, y label) of the trade-off plot, by preference: LPIPS when measured, else pixel metrics.
AXES = (
    ("bg_lpips", "fg_lpips", "foreground LPIPS (lower = object kept)"),
    ("bg_l2", "fg_psnr", "foreground PSNR, dB (higher = object kept)"),
)


def gallery_scores(
    images: torch.Tensor, task: BackgroundTask, prompt: str, backbones=None
) -> dict[str, float]:
    """Metrics of one gallery [K, 3, H, W] against ``task``'s reference and mask."""
    lpips_net = next(iter(backbones.lpips.values()), None) if backbones is not None else None
    reference = task.image[0]
    scores = foreground_fidelity(images, reference, task.mask, lpips_net=lpips_net)
    scores.update(background_diversity(images, task.mask, lpips_net=lpips_net))
    if "fg_lpips" in scores:
        scores["tradeoff"] = fidelity_diversity_tradeoff(scores["fg_lpips"], scores["bg_lpips"])
    if backbones is not None and backbones.clip is not None:
        scores["clip"] = float(clip_score(images, prompt, backbones.clip))
    return scores


def lab_scores(images: torch.Tensor, world, reference: int) -> dict[str, float]:
    """Ground truth on the lab: ``object_kept`` vs scene ``reference``, distinct backgrounds, and
    ``kept_on_new_background`` (object kept and background changed, per image)."""
    from couplednoise.pipelines.lab.readout import fixed_object_readout

    readout = fixed_object_readout(images, world, reference=reference)
    return {
        "object_kept": readout.object_kept,
        "kept_on_new_background": readout.kept_on_new_background,
        "distinct_backgrounds": float(readout.distinct_backgrounds),
        "background_limit": float(readout.background_limit),
    }


def score_galleries(
    galleries: Sequence[BackgroundGallery],
    task: BackgroundTask,
    backbones=None,
    *,
    paste: bool = False,
    lab: tuple[Any, int] | None = None,
    name: str = "",
) -> list[dict[str, Any]]:
    """One row per gallery (and per view, "raw" and with ``paste`` also "pasted").

    ``lab`` = (world, reference scene index) adds the ground-truth readout.
    """
    rows = []
    for gallery in galleries:
        views = {"raw": gallery.images}
        if paste:
            views["pasted"] = paste_back(gallery.images, task)
        for view, images in views.items():
            row = {
                "image": name,
                "method": gallery.method,
                "label": gallery.label,
                **gallery.setting,
                "prompt": gallery.prompt,
                "seed": gallery.seed,
                "view": view,
            }
            row.update(gallery_scores(images, task, gallery.prompt, backbones))
            if lab is not None:
                row.update(lab_scores(images, *lab))
            rows.append(row)
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of every metric per (method, label, view) over images, prompts and seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["label"], row["view"])].append(row)
    summary = []
    for (method, label, view), members in groups.items():
        entry: dict[str, Any] = {
            "method": method,
            "label": label,
            "view": view,
            "count": len(members),
        }
        for key in ("share", "strength"):
            if key in members[0]:
                entry[key] = members[0][key]
        metrics = [k for k, v in members[0].items() if isinstance(v, float) and k not in entry]
        for key in metrics:
            entry[key] = sum(float(m[key]) for m in members) / len(members)
        summary.append(entry)
    return summary


def tradeoff_figure(summary: Sequence[dict[str, Any]], path: str | Path, *, view: str = "raw"):
    """Background diversity (x) against foreground fidelity (y): the subspace sweep as a line over
    share, SDEdit as a line over strength, inversion and inpainting as points. Written atomically
    as PNG; returns the path. On the lab a second panel plots ``object_kept`` against
    ``distinct_backgrounds``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from couplednoise.eval.runs.images import save_image

    entries = [e for e in summary if e["view"] == view]
    if not entries:
        raise ValueError(f"no summary rows for view {view!r}")
    x_key, y_key, y_label = next(a for a in AXES if a[0] in entries[0] and a[1] in entries[0])
    panels = [(x_key, y_key, y_label)]
    if "object_kept" in entries[0]:
        panels.append(("distinct_backgrounds", "object_kept", "object kept (fraction, lab truth)"))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for axis, (x, y, label) in zip(axes[0], panels):
        for method, marker in (
            ("subspace", "o-"),
            ("sdedit", "s--"),
            ("inversion", "*"),
            ("inpaint", "D"),
        ):
            points = sorted(
                (e for e in entries if e["method"] == method),
                key=lambda e: e.get("share", e.get("strength", 0.0)),
            )
            if not points:
                continue
            xs, ys = [e[x] for e in points], [e[y] for e in points]
            axis.plot(xs, ys, marker, label=method, markersize=8)
            for e, xv, yv in zip(points, xs, ys):
                value = e.get("share", e.get("strength"))
                if value is not None and method in ("subspace", "sdedit"):
                    axis.annotate(
                        f"{value:g}",
                        (xv, yv),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=8,
                    )
        axis.set_xlabel(f"background diversity ({x})")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"fidelity vs diversity ({view})")
    figure.tight_layout()
    figure.canvas.draw()
    from PIL import Image

    image = Image.frombuffer(
        "RGBA", figure.canvas.get_width_height(), figure.canvas.buffer_rgba()
    ).convert("RGB")
    plt.close(figure)
    return save_image(image, path)


def dataset_pairs(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """(name, image path, mask path) for every image in ``folder``/images with a mask in
    ``folder``/masks of the same stem (.png); a ValueError lists images without masks."""
    folder = Path(folder)
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise ValueError(
            f"dataset {folder} needs two folders: images/ (NAME.png|jpg|jpeg|webp) and masks/ "
            "(NAME.png: binary, or RGBA with the object in alpha)"
        )
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    pairs, missing = [], []
    for image in images:
        mask = masks_dir / f"{image.stem}.png"
        (pairs if mask.is_file() else missing).append((image.stem, image, mask))
    if missing:
        names = ", ".join(name for name, _, _ in missing[:5])
        raise ValueError(f"{len(missing)} image(s) have no mask in {masks_dir}: {names}")
    return pairs
