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
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from couplednoise.eval.cli.options import add_run_folder_arguments, add_sampling_arguments

PROG = "couplednoise background"


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
        "--lab-scene", type=int, help="lab only: index of the world scene used as reference"
    )
    parser.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="background prompt (repeatable; the lab accepts '')",
    )
    parser.add_argument("-n", "--num-images", type=int, default=8, help="images per gallery")
    parser.add_argument(
        "--share",
        default="0.9",
        help="share lambda in [0, 1], or a comma list for a sweep (0,0.5,0.9,1)",
    )
    parser.add_argument(
        "--dilate",
        type=int,
        default=0,
        help="grow the shared region beyond the object mask by this many pixels (default 0); "
        "metrics and paste-back still use the mask itself",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every gallery (default 0)")
    parser.add_argument(
        "--steps", type=int, default=50, help="sampling and inversion steps (default 50)"
    )
    parser.add_argument(
        "--source-prompt", default="", help="prompt the inversion is conditioned on (default '')"
    )
    parser.add_argument(
        "--sdedit", default="0.5,0.8", help="SDEdit strengths, comma list (default 0.5,0.8)"
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


def parse_floats(text: str, what: str) -> list[float]:
    """ "0,0.5,1" -> [0.0, 0.5, 1.0]; ValueError naming ``what`` otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be a comma list of numbers, got {text!r}") from None
    if len(set(values)) != len(values):
        raise ValueError(f"{what} repeats a value: {text!r}")
    return values


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
    if args.num_images < 2:
        raise ValueError(f"-n/--num-images must be >= 2 (a gallery), got {args.num_images}")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.dilate < 0:
        raise ValueError(f"--dilate must be >= 0 pixels, got {args.dilate}")
    for share in parse_floats(args.share, "--share"):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"--share values must be in [0, 1], got {share}")
    for strength in parse_floats(args.sdedit, "--sdedit"):
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"--sdedit strengths must be in (0, 1], got {strength}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    if args.out.is_dir() and any(args.out.iterdir()) and not args.overwrite:
        raise ValueError(f"--out {args.out} is not empty; pick a new folder or pass --overwrite")


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


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text)


def write_galleries(folder: Path, name: str, prompts: list[str], galleries, task, paste: bool):
    from couplednoise.eval.runs.images import image_grid, save_image, save_png
    from couplednoise.pipelines.background import paste_back

    for gallery in galleries:
        p = prompts.index(gallery.prompt)
        base = folder / "images" / slug(name) / slug(gallery.label) / f"p{p:03d}"
        for k, image in enumerate(gallery.images):
            save_png(image, base / f"{k}.png")
        if paste:
            for k, image in enumerate(paste_back(gallery.images, task)):
                save_png(image, base / "pasted" / f"{k}.png")
    for p, prompt in enumerate(prompts):
        rows = [g for g in galleries if g.prompt == prompt]
        grid = image_grid(
            [task.image.expand(rows[0].images.shape[0], -1, -1, -1)] + [g.images for g in rows],
            labels=["reference"] + [g.label for g in rows],
        )
        save_image(grid, folder / f"grid_{slug(name)}_p{p:03d}.png")


def run(args: argparse.Namespace) -> int:
    """Validate, load, invert, generate every method, score, write the run folder."""
    try:
        check_args(args)
        shares = parse_floats(args.share, "--share")
        strengths = parse_floats(args.sdedit, "--sdedit")
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2

    from couplednoise.eval.background.scoring import score_galleries, summarise, tradeoff_figure
    from couplednoise.pipelines.background import Sampling, background_task, run_background
    from couplednoise.pipelines.loading import detect_family, load_pipeline
    from couplednoise.pipelines.provenance import versions

    try:
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
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    sampling = Sampling(args.steps, args.guidance, args.negative_prompt)
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)
    try:
        rows = []
        for name, _, _, scene in refs:
            task = tasks[name]
            galleries = run_background(
                pipe,
                task,
                args.prompt,
                shares=shares,
                num_images=args.num_images,
                seed=args.seed,
                sampling=sampling,
                source_prompt=args.source_prompt,
                baselines=not args.no_baselines,
                sdedit_strengths=strengths,
                progress=not args.no_progress,
            )
            write_galleries(staging, name, args.prompt, galleries, task, args.paste_back)
            lab = (pipe.world, scene) if scene is not None else None
            rows += score_galleries(
                galleries, task, backbones, paste=args.paste_back, lab=lab, name=name
            )
        summary = summarise(rows)
        tradeoff_figure(summary, staging / "tradeoff.png")
        if args.paste_back:
            tradeoff_figure(summary, staging / "tradeoff_pasted.png", view="pasted")
        metrics = {"summary": summary, "rows": rows, "skipped_metrics": skipped}
        config = {
            "command": "background",
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
            "shares": shares,
            "shared_region_dilate_px": args.dilate,
            "sdedit_strengths": strengths,
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
            (staging / filename).write_text(json.dumps(data, indent=2, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except ValueError as error:
        shutil.rmtree(staging, ignore_errors=True)
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for note in skipped.values():
        print(f"{PROG}: note: metric skipped: {note}", file=sys.stderr)
    print(f"wrote {len(rows)} scored galleries to {out}")
    return 0
