"""Coupled galleries from a Stable Diffusion checkpoint (`couplednoise generate`).

    couplednoise generate --model PATH_OR_ID --prompt "a red car" --coupling repulsive \\
        -n 4 --seeds 0-3 --compare --out runs/cars

Seeds: one gallery per (prompt, seed, coupling); a gallery's n images come jointly from the
coupling seeded by that seed, so the same seed gives paired galleries across couplings.
``--seeds`` takes ranges and lists: "0-3", "0,5,7", "0-3,10". ``--compare`` adds the independent
baseline and writes one side-by-side grid per prompt and seed.

Run folder (written to a temporary sibling, then moved into place: nothing half-written):
    OUT/config.json      everything to reproduce the run (arguments, model, scheduler, versions)
    OUT/galleries.json   [{"id", "prompt", "coupling", "seed", "files": [...], "metadata"}]
    OUT/images/<id>/<k>.png
    OUT/grid.png         one labelled row per gallery; OUT/grid_compare_p<i>_s<seed>.png
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

from couplednoise.eval.cli.options import (
    add_run_folder_arguments,
    add_sampling_arguments,
    parse_seeds,
)
from couplednoise.spec import describe_couplings, get_coupling


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "couplings (spec name: parameters):\n" + describe_couplings()
    parser.add_argument("--model", required=True, help="diffusers folder, hub id, or 'lab'")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--prompts-file", type=Path, help="a text file with one prompt per line")
    parser.add_argument(
        "--coupling",
        action="append",
        default=[],
        help="coupling spec, e.g. repulsive or equicorrelated:rho=0.3 (repeatable; "
        "default repulsive)",
    )
    parser.add_argument("-n", "--num-images", type=int, default=4, help="images per gallery")
    parser.add_argument("--seeds", default="0", help="gallery seeds: 0-3, 0,5,7 (default 0)")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also generate independent galleries from the same seeds, grids side by side",
    )
    parser.add_argument("--steps", type=int, help="inference steps (pipeline default if unset)")
    add_sampling_arguments(parser)
    parser.add_argument(
        "--local-files-only",
        action="store_true",
        help="never download: hub ids must be in the HF cache (default when HF_HUB_OFFLINE=1)",
    )
    add_run_folder_arguments(parser)


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file is not None:
        if not args.prompts_file.is_file():
            raise ValueError(f"--prompts-file {args.prompts_file} does not exist")
        lines = args.prompts_file.read_text().splitlines()
        prompts.extend(line.strip() for line in lines if line.strip())
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError("give at least one non-empty --prompt or a --prompts-file")
    return prompts


def coupling_specs(args: argparse.Namespace) -> list[str]:
    """The galleries' couplings as canonical specs: independent first under --compare."""
    specs = [get_coupling(c).spec for c in (args.coupling or ["repulsive"])]
    if args.compare and "independent" not in specs:
        specs.insert(0, "independent")
    if len(set(specs)) != len(specs):
        raise ValueError(f"couplings repeat: {specs}")
    return specs


def gallery_id(prompt_index: int, seed: int, spec: str) -> str:
    return f"p{prompt_index:03d}_s{seed}_" + re.sub(r"[^A-Za-z0-9.=_-]+", "_", spec)


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"--out {out} is not empty; pick a new folder or pass --overwrite")


def write_run(folder: Path, galleries, prompts: list[str], compare: bool) -> list[dict]:
    """Images, grids and galleries.json into ``folder``; returns the galleries.json entries."""
    from couplednoise.eval.runs.images import image_grid, save_image, save_png

    entries = []
    for gallery in galleries:
        index = prompts.index(gallery.prompt)
        gid = gallery_id(index, gallery.seed, gallery.coupling)
        files = []
        for k, image in enumerate(gallery.images):
            relative = f"images/{gid}/{k}.png"
            save_png(image, folder / relative)
            files.append(relative)
        entry = {"id": gid, "prompt": gallery.prompt, "coupling": gallery.coupling}
        entry.update(seed=gallery.seed, files=files, metadata=gallery.metadata)
        entries.append(entry)
    labels = [f"{e['id']}: {e['prompt'][:40]}" for e in entries]
    save_image(image_grid([g.images for g in galleries], labels=labels), folder / "grid.png")
    if compare:
        for index in range(len(prompts)):
            for seed in sorted({g.seed for g in galleries}):
                rows = [g for g in galleries if prompts.index(g.prompt) == index and g.seed == seed]
                grid = image_grid([g.images for g in rows], labels=[g.coupling for g in rows])
                save_image(grid, folder / f"grid_compare_p{index:03d}_s{seed}.png")
    return entries


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def run(args: argparse.Namespace) -> int:
    """Validate everything, load the model, generate, write the run folder; 0 on success."""
    try:
        prompts = read_prompts(args)
        if len(set(prompts)) != len(prompts):
            raise ValueError("prompts repeat; give each prompt once")
        specs = coupling_specs(args)
        seeds = parse_seeds(args.seeds)
        if args.num_images < 1:
            raise ValueError(f"-n/--num-images must be >= 1, got {args.num_images}")
        check_out(args.out, args.overwrite)
    except ValueError as error:
        print(f"couplednoise generate: error: {error}", file=sys.stderr)
        return 2

    from couplednoise.pipelines.generation import generate_galleries
    from couplednoise.pipelines.loading import detect_family, load_pipeline
    from couplednoise.pipelines.provenance import versions

    settings = {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "negative_prompt": args.negative_prompt,
        "height": args.height,
        "width": args.width,
    }
    settings = {k: v for k, v in settings.items() if v is not None}
    try:  # loading and the up-front checks of generate_galleries raise ValueError, not the run
        pipe = load_pipeline(
            args.model,
            device=args.device,
            dtype=args.dtype,
            local_files_only=True if args.local_files_only else None,
        )
        galleries = generate_galleries(
            pipe,
            prompts,
            specs,
            num_images=args.num_images,
            seeds=seeds,
            progress=not args.no_progress,
            **settings,
        )
    except ValueError as error:
        print(f"couplednoise generate: error: {error}", file=sys.stderr)
        return 2
    config = {
        "command": "generate",
        "argv": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": args.model,
        "family": detect_family(pipe),
        "pipeline": type(pipe).__name__,
        "scheduler": type(pipe.scheduler).__name__,
        "scheduler_config": dict(pipe.scheduler.config),
        "prompts": prompts,
        "couplings": specs,
        "seeds": seeds,
        "num_images": args.num_images,
        "settings": settings,
        "seed_semantics": "one gallery per (prompt, seed, coupling); its images are drawn "
        "jointly from the coupling with torch.Generator('cpu').manual_seed(seed)",
        "versions": versions(),
    }
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        entries = write_run(staging, galleries, prompts, args.compare)
        write_json(staging / "galleries.json", entries)
        write_json(staging / "config.json", config)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"wrote {len(galleries)} galleries to {out}")
    return 0
