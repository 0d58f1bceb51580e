"""Fixed-object background generation with subspace coupling, against its baselines.

    couplednoise background --model MODEL --image REF --mask MASK --prompt "a beach" -n 8 \
        --share 0.9 --out DIR
    couplednoise background --model MODEL --dataset DIR --prompt "..." --share 0,0.5,0.9,1 --out DIR
    couplednoise background --model lab --lab-scene 17 --share 0,0.5,0.9,1 --out DIR

Writes OUT/config.json, OUT/images/<image>/<method>/p<prompt>/<k>.png (and pasted/ with
--paste-back), OUT/grid_<image>_p<prompt>.png, OUT/metrics.json (per-gallery rows and the summary
per method / setting) and OUT/tradeoff.png (and tradeoff_pasted.png). The folder appears only
when everything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from couplednoise.eval.cli.options import (
    MAX_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    add_run_folder_arguments,
    add_sampling_arguments,
    float_list,
    int_in,
)

KIND = "background"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="diffusers folder, hub id, or 'lab'")
    source = parser.add_argument_group("reference (one of)")
    source.add_argument("--image", type=Path, help="reference image (any size)")
    source.add_argument(
        "--mask", type=Path, help="object mask: binary PNG (white = object) or RGBA alpha"
    )
    source.add_argument(
        "--dataset", type=Path, help="folder with images/NAME.png|jpg and masks/NAME.png"
    )
    source.add_argument(
        "--lab-scene",
        type=int_in(0, 10**6),
        help="lab only: index of the world scene used as reference",
    )
    parser.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="background prompt (repeatable; the lab accepts '')",
    )
    parser.add_argument(
        "-n", "--num-images", type=int_in(2, MAX_IMAGES), default=8, help="images per gallery"
    )
    parser.add_argument(
        "--share",
        type=float_list(0.0, 1.0),
        default=[0.9],
        help="share lambda in [0, 1], or a comma list for a sweep (0,0.5,0.9,1)",
    )
    parser.add_argument(
        "--dilate",
        type=int_in(0, 1024),
        default=0,
        help="grow the shared region beyond the object mask by this many pixels (default 0); "
        "metrics and paste-back still use the mask itself",
    )
    parser.add_argument(
        "--seed", type=int_in(0, MAX_SEED), default=0, help="seed of every gallery (default 0)"
    )
    parser.add_argument(
        "--steps",
        type=int_in(1, MAX_STEPS),
        default=50,
        help="sampling and inversion steps (default 50)",
    )
    parser.add_argument(
        "--source-prompt", default="", help="prompt the inversion is conditioned on (default '')"
    )
    parser.add_argument(
        "--sdedit",
        type=float_list(0.0, 1.0),
        default=[0.5, 0.8],
        help="SDEdit strengths in (0, 1], comma list (default 0.5,0.8)",
    )
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="only the subspace galleries (no inversion / SDEdit / inpainting)",
    )
    parser.add_argument(
        "--paste-back",
        action="store_true",
        help="also score the images with the reference object pasted back",
    )
    parser.add_argument("--lpips", default="alex", help="LPIPS net (alex, vgg, squeeze) or none")
    parser.add_argument("--lpips-trunk", type=Path, help="torchvision weights file of the trunk")
    parser.add_argument(
        "--clip",
        default="default",
        help="open_clip MODEL:PRETRAINED for the CLIP score, 'default' or none",
    )
    parser.add_argument(
        "--random-backbones",
        action="store_true",
        help="metric backbones with random weights (smoke tests only)",
    )
    add_sampling_arguments(parser)
    add_run_folder_arguments(parser)


def check_args(args: argparse.Namespace) -> None:
    """Every argument error before anything is loaded."""
    from couplednoise.pipelines.loading import is_lab as names_lab

    is_lab = names_lab(args.model)
    pair = args.image is not None or args.mask is not None
    chosen = sum([pair, args.dataset is not None, args.lab_scene is not None])
    if chosen != 1:
        raise ValueError(
            "give exactly one reference: --image with --mask, --dataset, or --lab-scene (lab)"
        )
    if pair and (args.image is None or args.mask is None):
        raise ValueError("--image and --mask go together")
    if args.lab_scene is not None and not is_lab:
        raise ValueError("--lab-scene needs --model lab")
    if not args.prompt:
        args.prompt = [""] if is_lab else []
    if not args.prompt or (not is_lab and any(not p.strip() for p in args.prompt)):
        raise ValueError("give at least one non-empty --prompt describing the new background")
    if 0.0 in args.sdedit:
        raise ValueError("--sdedit strengths must be in (0, 1] (0 would return the reference)")
    from couplednoise.eval.runs.folders import check_output_folder
    from couplednoise.pipelines.loading import check_model

    check_model(args.model)
    check_output_folder(args.out, KIND, overwrite=args.overwrite)


def load_backbones(args: argparse.Namespace, device) -> tuple[Any, dict[str, str]]:
    """(Backbones, skipped metric -> reason). Missing pretrained weights skip that metric with
    the loader's message (recorded in metrics.json); they never become random weights."""
    from couplednoise.eval.backbones.defaults import DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED
    from couplednoise.eval.backbones.loading import (
        Backbones,
        MissingWeightsError,
        load_clip,
        load_lpips,
    )

    backbones, skipped = Backbones(), {}
    common = {"device": device, "random_weights": args.random_backbones}
    if args.lpips != "none":
        try:
            trunk = None if args.random_backbones else args.lpips_trunk
            backbones.lpips[args.lpips] = load_lpips(args.lpips, trunk_path=trunk, **common)
        except MissingWeightsError as error:
            skipped["lpips"] = str(error)
    if args.clip != "none":
        model, _, pretrained = (
            f"{DEFAULT_CLIP_MODEL}:{DEFAULT_CLIP_PRETRAINED}"
            if args.clip == "default"
            else args.clip
        ).partition(":")
        try:
            backbones.clip = load_clip(model, pretrained or None, **common)
        except MissingWeightsError as error:
            skipped["clip"] = str(error)
    return backbones, skipped


def references(args: argparse.Namespace, pipe) -> list[tuple[str, Any, Any, int | None]]:
    """(name, image, mask, lab scene index or None) for each reference."""
    if args.lab_scene is not None:
        world = pipe.world
        if not 0 <= args.lab_scene < len(world):
            raise ValueError(f"--lab-scene must be in [0, {len(world)}), got {args.lab_scene}")
        i = args.lab_scene
        return [(f"scene{i}", world.images[i], world.object_mask(i), i)]
    if args.dataset is not None:
        from couplednoise.eval.background.scoring import dataset_pairs

        return [(name, image, mask, None) for name, image, mask in dataset_pairs(args.dataset)]
    return [(args.image.stem, args.image, args.mask, None)]


def write_galleries(
    folder: Path, name: str, prompts: list[str], galleries, task, paste: bool
) -> list[dict]:
    """Each gallery's images (and pasted-back views), and a grid per prompt; returns the
    galleries.json entries (so `couplednoise score` reads a background run too)."""
    from couplednoise.eval.runs.galleries import GalleryRecord, save_gallery, slug
    from couplednoise.eval.runs.images import image_grid, save_image
    from couplednoise.pipelines.background import paste_back

    entries = []
    for gallery in galleries:
        p = prompts.index(gallery.prompt)
        base = f"images/{slug(name)}/{slug(gallery.label)}/p{p:03d}"
        info = {"method": gallery.method, "setting": gallery.setting, "seed": gallery.seed}
        record = GalleryRecord(f"{name}/{gallery.label}/p{p:03d}", gallery.prompt, gallery.images)
        entries.append(save_gallery(folder, dataclasses.replace(record, info=info, folder=base)))
        if paste:
            pasted = GalleryRecord(
                record.id + "/pasted", gallery.prompt, paste_back(gallery.images, task)
            )
            info = {**info, "view": "pasted"}
            entries.append(
                save_gallery(
                    folder, dataclasses.replace(pasted, info=info, folder=f"{base}/pasted")
                )
            )
    for p, prompt in enumerate(prompts):
        rows = [g for g in galleries if g.prompt == prompt]
        grid = image_grid(
            [task.image.expand(rows[0].images.shape[0], -1, -1, -1)] + [g.images for g in rows],
            labels=["reference"] + [g.label for g in rows],
        )
        save_image(grid, folder / f"grid_{slug(name)}_p{p:03d}.png")
    return entries


def run(args: argparse.Namespace) -> int:
    """Validate, load, invert, generate every method, score, write the run folder."""
    check_args(args)
    from couplednoise.eval.background.scoring import score_galleries, summarise, tradeoff_figure
    from couplednoise.eval.runs.atomic import write_text
    from couplednoise.eval.runs.folders import staged_run
    from couplednoise.eval.runs.galleries import write_gallery_index
    from couplednoise.pipelines.background import Sampling, background_task, run_background
    from couplednoise.pipelines.loading import detect_family, load_pipeline
    from couplednoise.pipelines.provenance import versions

    with staged_run(args.out, KIND, overwrite=args.overwrite) as staging:
        pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
        family = detect_family(pipe)
        refs = references(args, pipe)
        tasks = {
            name: background_task(
                pipe, image, mask, height=args.height, width=args.width, dilate=args.dilate
            )
            for name, image, mask, _ in refs
        }
        backbones, skipped = load_backbones(args, pipe.device)
        sampling = Sampling(args.steps, args.guidance, args.negative_prompt)
        rows, entries = [], []
        for name, _, _, scene in refs:
            task = tasks[name]
            galleries = run_background(
                pipe,
                task,
                args.prompt,
                shares=args.share,
                num_images=args.num_images,
                seed=args.seed,
                sampling=sampling,
                source_prompt=args.source_prompt,
                baselines=not args.no_baselines,
                sdedit_strengths=args.sdedit,
                progress=not args.no_progress,
            )
            entries += write_galleries(staging, name, args.prompt, galleries, task, args.paste_back)
            lab = (pipe.world, scene) if scene is not None else None
            rows += score_galleries(
                galleries, task, backbones, paste=args.paste_back, lab=lab, name=name
            )
        write_gallery_index(staging, entries)
        summary = summarise(rows)
        tradeoff_figure(summary, staging / "tradeoff.png")
        if args.paste_back:
            tradeoff_figure(summary, staging / "tradeoff_pasted.png", view="pasted")
        metrics = {"summary": summary, "rows": rows, "skipped_metrics": skipped}
        config = {
            "command": KIND,
            "argv": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "model": args.model,
            "family": family,
            "pipeline": type(pipe).__name__,
            "sampler": "DDIM (inverted with DDIMInverseScheduler)"
            if family != "sd3"
            else "flow-matching Euler (inverted on the same sigma grid)",
            "scheduler_config": dict(pipe.scheduler.config),
            "references": [name for name, *_ in refs],
            "prompts": args.prompt,
            "shares": args.share,
            "shared_region_dilate_px": args.dilate,
            "sdedit_strengths": args.sdedit,
            "seed": args.seed,
            "seed_semantics": "every gallery uses torch.Generator('cpu').manual_seed(seed): "
            "subspace noise is drawn from it, baselines get it as their pipeline generator",
            "sampling": {
                "num_inference_steps": args.steps,
                "guidance_scale": args.guidance,
                "negative_prompt": args.negative_prompt,
            },
            "backbones": {
                "lpips": list(backbones.lpips),
                "clip": backbones.clip is not None,
                "random_weights": args.random_backbones,
            },
            "versions": versions(),
        }
        for filename, data in (("metrics.json", metrics), ("config.json", config)):
            write_text(staging / filename, json.dumps(data, indent=2, default=str) + "\n")
    for note in skipped.values():
        print(f"couplednoise background: note: metric skipped: {note}", file=sys.stderr)
    print(f"wrote {len(rows)} scored galleries to {args.out}")
    return 0
