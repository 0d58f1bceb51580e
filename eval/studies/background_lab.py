"""The fixed-object task on the lab, measured against ground truth over many references.

    couplednoise study background-lab      # writes docs/background_lab_study.{png,md,json}
    couplednoise study background-lab --references 96 --dilations 0,2,4 --shares 0,0.9,1

For each reference (a seeded random sample of world scenes) the scene is inverted once (DDIM,
guidance 1) and galleries are drawn with ``Subspace(mask dilated by d px, share, shared=x_T)``
for every (dilation, share), all from the same seed (``--seed`` + the reference's position in
the sample, so references get different galleries). Each image is read out against the
reference: ``object_kept`` (shape, colour, size and position equal), ``kept_on_new_background``
(the object kept on a background other than the reference's: what the task asks of every image)
and the gallery's distinct backgrounds. Reports means with 95% t-intervals over references.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from couplednoise.eval.cli.options import (
    MAX_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    float_list,
    int_in,
    int_list,
)
from couplednoise.eval.runs.atomic import save_figure, write_text
from couplednoise.eval.runs.stats import t_interval
from couplednoise.eval.runs.tables import format_pm
from couplednoise.eval.runs.tables import markdown_table as md_table
from couplednoise.eval.studies.common import study_args
from couplednoise.pipelines.lab.world import ATTRIBUTES

METRICS = ("object_kept", "kept_on_new_background", "distinct_backgrounds")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="lab", help="lab spec, e.g. lab:size=64")
    parser.add_argument(
        "--references", type=int_in(2, 100_000), default=64, help="reference scenes sampled"
    )
    parser.add_argument(
        "--reference-seed", type=int_in(0, MAX_SEED), default=0, help="seed of that sample"
    )
    parser.add_argument(
        "--shares", type=float_list(0.0, 1.0), default=[0.0, 0.5, 0.9, 1.0], help="share lambdas"
    )
    parser.add_argument(
        "--dilations", type=int_list(0, 64), default=[0, 1, 2, 3, 4], help="dilations in pixels"
    )
    parser.add_argument("--prompt", default="", help="background prompt ('' = whole world)")
    parser.add_argument(
        "-n", "--num-images", type=int_in(2, MAX_IMAGES), default=8, help="images per gallery"
    )
    parser.add_argument(
        "--seed", type=int_in(0, MAX_SEED), default=0, help="gallery seed of the first reference"
    )
    parser.add_argument(
        "--steps", type=int_in(1, MAX_STEPS), default=20, help="sampling and inversion steps"
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the outputs")


def reference_scenes(world, count: int, seed: int) -> list[int]:
    """``count`` distinct scene indices, a seeded uniform sample of the world."""
    if count > len(world):
        raise ValueError(f"the world has only {len(world)} scenes, asked for {count}")
    return torch.randperm(len(world), generator=torch.Generator().manual_seed(seed))[
        :count
    ].tolist()


def measure(pipe, scene: int, args: argparse.Namespace, seed: int) -> dict[tuple[int, float], dict]:
    """Readout of every (dilation, share) gallery for one reference scene, drawn from ``seed``."""
    from couplednoise.pipelines.background import Sampling, make_task, subspace_gallery
    from couplednoise.pipelines.inversion import invert, matching_sampler
    from couplednoise.pipelines.lab.readout import fixed_object_readout

    world, size = pipe.world, pipe.world.size
    sampler, sampling = matching_sampler(pipe), Sampling(args.steps)
    image, mask = world.images[scene : scene + 1], world.object_mask(scene)
    noise = invert(pipe, image, num_inference_steps=args.steps, progress=False)
    out = {}
    for d in args.dilations:
        task = make_task(image, mask, (size, size), (size, size), dilate=d)
        for share in args.shares:
            gallery = subspace_gallery(
                sampler,
                task,
                noise,
                args.prompt,
                share=share,
                num_images=args.num_images,
                seed=seed,
                sampling=sampling,
            )
            readout = fixed_object_readout(gallery.images, world, reference=scene)
            out[(d, share)] = {
                "object_kept": readout.object_kept,
                "kept_on_new_background": readout.kept_on_new_background,
                "distinct_backgrounds": float(readout.distinct_backgrounds),
            }
    return out


def summarise(per_scene: list[dict], args: argparse.Namespace) -> list[dict]:
    """One record per (dilation, share): mean and 95% CI of each metric over references."""
    records = []
    for d in args.dilations:
        for share in args.shares:
            record = {"dilation": d, "share": share}
            for metric in METRICS:
                values = torch.tensor([scene[(d, share)][metric] for scene in per_scene])
                record[metric], record[f"{metric}_ci"] = t_interval(values)
            records.append(record)
    return records


def markdown_table(records: list[dict], args: argparse.Namespace) -> str:
    caption = (
        f"Lab fixed-object study: {args.references} reference scenes, K = {args.num_images}, "
        f"{args.steps} DDIM steps, prompt {args.prompt!r}, seeds {args.seed}.."
        f"{args.seed + args.references - 1}; mean [95% CI] over references."
    )
    headers = ["dilation (px)", "share", "object kept", "kept on a new background"]
    headers.append("distinct backgrounds")
    rows = [
        [r["dilation"], f"{r['share']:g}", *(format_pm(r[m], r[f"{m}_ci"], 2) for m in METRICS)]
        for r in records
    ]
    return caption + "\n\n" + md_table(headers, rows)


def figure(records: list[dict], args: argparse.Namespace, path: Path) -> None:
    """Object kept (y) against distinct backgrounds (x): one line per dilation over the shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for d in args.dilations:
        mine = sorted((r for r in records if r["dilation"] == d), key=lambda r: r["share"])
        for axis, y in zip(axes, ("object_kept", "kept_on_new_background")):
            axis.errorbar(
                [r["distinct_backgrounds"] for r in mine],
                [r[y] for r in mine],
                yerr=[r[f"{y}_ci"] for r in mine],
                marker="o",
                capsize=3,
                label=f"dilation {d} px",
            )
            for r in mine:
                axis.annotate(
                    f"{r['share']:g}",
                    (r["distinct_backgrounds"], r[y]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
    axes[0].plot([1], [1], "k*", markersize=10, label="inversion (reconstruction)")
    ideal = 1 - 1 / len(ATTRIBUTES["background"])  # object always kept, background uniform
    axes[1].axhline(ideal, color="gray", ls=":", label="the task's ideal")
    axes[1].legend(fontsize=8)
    for axis, title in zip(axes, ("object kept", "object kept on a new background")):
        axis.set_xlabel(f"distinct backgrounds in a gallery of {args.num_images}")
        axis.set_ylabel(f"{title} (fraction, ground truth)")
        axis.set_ylim(-0.03, 1.03)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"lab fixed-object task: {args.references} references, labels = share; mean and 95% CI"
    )
    fig.tight_layout()
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    from couplednoise.pipelines.lab import load_lab_pipeline

    pipe = load_lab_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    pipe.scenes_for(args.prompt)  # an unknown word fails here, before any work
    scenes = reference_scenes(pipe.world, args.references, args.reference_seed)
    args.out.mkdir(parents=True, exist_ok=True)
    per_scene = [
        measure(pipe, scene, args, seed=args.seed + i)
        for i, scene in enumerate(tqdm(scenes, desc="references", unit="scene"))
    ]
    records = summarise(per_scene, args)
    table = markdown_table(records, args)
    figure(records, args, args.out / "background_lab_study.png")
    write_text(args.out / "background_lab_study.md", table + "\n")
    write_text(
        args.out / "background_lab_study.json",
        json.dumps({"args": study_args(args), "references": scenes, "records": records}, indent=1),
    )
    print(table)
    return 0
