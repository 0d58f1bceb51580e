"""Coupled galleries from any model (`couplednoise generate`).

    couplednoise generate --model PATH_OR_ID --prompt "a red car" --coupling repulsive \\
        -n 4 --seeds 0-3 --compare --out runs/cars

Seeds: one gallery per (prompt, seed, coupling); a gallery's n images come jointly from the
coupling seeded by that seed, so the same seed gives paired galleries across couplings.
``--seeds`` takes ranges and lists: "0-3", "0,5,7", "0-3,10". ``--compare`` adds the independent
baseline and writes one side-by-side grid per prompt and seed.

Every argument, the model (without loading it) and every coupling at the gallery size and the
model's latent shape are checked first; the run folder is built in a temporary sibling, each
gallery written as it is generated, and moved into place at the end (nothing half-written):
    OUT/config.json      everything to reproduce the run (arguments, model, scheduler, versions)
    OUT/galleries.json   [{"id", "prompt", "coupling", "seed", "files": [...], "metadata"}]
    OUT/images/<id>/<k>.png
    OUT/grid.png         one labelled row per gallery (the first 32); OUT/grid_compare_p<i>_s<seed>.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from couplednoise import describe_couplings, get_coupling
from couplednoise.eval.cli.options import (
    MAX_IMAGES,
    MAX_STEPS,
    add_run_folder_arguments,
    add_sampling_arguments,
    int_in,
    seed_list,
)

GRID_ROWS = 32  # galleries shown in grid.png (all are saved as images)
KIND = "generate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "couplings (spec name: parameters):\n" + describe_couplings()
    parser.add_argument(
        "--model", required=True, help="diffusers folder, hub id, or a built-in model (lab)"
    )
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--prompts-file", type=Path, help="a text file with one prompt per line")
    parser.add_argument(
        "--coupling",
        action="append",
        default=[],
        help="coupling spec, e.g. repulsive or equicorrelated:rho=0.3 (repeatable; "
        "default repulsive)",
    )
    parser.add_argument(
        "--method",
        action="append",
        default=[],
        help="gallery method (repeatable; default plain): plain, cno[:iterations=3,...] "
        "(contrastive noise optimisation of the coupled noise) or cads[:noise_scale=0.25,...] "
        "(condition-annealed sampling)",
    )
    parser.add_argument(
        "-n", "--num-images", type=int_in(1, MAX_IMAGES), default=4, help="images per gallery"
    )
    parser.add_argument(
        "--seeds", type=seed_list, default=seed_list("0"), help="gallery seeds: 0-3, 0,5,7"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also generate independent galleries from the same seeds, grids side by side",
    )
    parser.add_argument(
        "--steps", type=int_in(1, MAX_STEPS), help="inference steps (pipeline default if unset)"
    )
    add_sampling_arguments(parser)
    parser.add_argument(
        "--local-files-only",
        action="store_true",
        help="never download: hub ids must be in the HF cache (default when HF_HUB_OFFLINE=1)",
    )
    add_run_folder_arguments(parser)


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts of ``--prompt`` and ``--prompts-file`` (UTF-8), each non-empty and once."""
    prompts = list(args.prompt)
    if args.prompts_file is not None:
        if not args.prompts_file.is_file():
            raise ValueError(f"--prompts-file {args.prompts_file} does not exist")
        try:
            lines = args.prompts_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(
                f"--prompts-file {args.prompts_file} is not UTF-8 text: {error.reason}"
            ) from None
        prompts.extend(line.strip() for line in lines if line.strip())
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError("give at least one non-empty --prompt or a --prompts-file")
    if len(set(prompts)) != len(prompts):
        raise ValueError("prompts repeat; give each prompt once")
    return prompts


def coupling_specs(args: argparse.Namespace) -> list[str]:
    """The galleries' couplings as canonical specs: independent first under --compare."""
    specs = [get_coupling(c).spec for c in (args.coupling or ["repulsive"])]
    if args.compare and "independent" not in specs:
        specs.insert(0, "independent")
    if len(set(specs)) != len(specs):
        raise ValueError(f"couplings repeat: {specs}")
    return specs


def method_specs(args: argparse.Namespace) -> list[str]:
    """The gallery methods as full specs (every setting), plain by default."""
    from couplednoise.pipelines.baselines.settings import get_gallery_method

    specs = [get_gallery_method(m).spec for m in (args.method or ["plain"])]
    if len(set(specs)) != len(specs):
        raise ValueError(f"gallery methods repeat: {specs}")
    return specs


def gallery_id(prompt_index: int, seed: int, spec: str, method: str = "plain") -> str:
    from couplednoise.eval.runs.galleries import slug

    suffix = "" if method == "plain" else f"_{slug(method)}"
    return f"p{prompt_index:03d}_s{seed}_{slug(spec)}{suffix}"


def check_couplings(specs: list[str], num_images: int, shape: tuple[int, ...] | None) -> None:
    """Every coupling at the gallery size (and the model's latent shape when known)."""
    for spec in specs:
        coupling = get_coupling(spec)
        if shape is not None:
            coupling.check(num_images, shape)


def run(args: argparse.Namespace) -> int:
    """Check everything, then load the model, generate and write the run folder; 0 on success."""
    from couplednoise.eval.runs.folders import check_output_folder, staged_run
    from couplednoise.pipelines.loading import check_model, planned_latent_shape

    prompts = read_prompts(args)
    specs = coupling_specs(args)
    methods = method_specs(args)
    local = True if args.local_files_only else None
    check_model(args.model, local_files_only=local)
    check_couplings(
        specs, args.num_images, planned_latent_shape(args.model, args.height, args.width)
    )
    check_output_folder(args.out, KIND, overwrite=args.overwrite)
    settings = {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "negative_prompt": args.negative_prompt,
        "height": args.height,
        "width": args.width,
    }
    from couplednoise.pipelines.generation import sampling_settings

    settings = sampling_settings(**settings)
    with staged_run(args.out, KIND, overwrite=args.overwrite) as folder:
        from couplednoise.pipelines.loading import load_pipeline

        pipe = load_pipeline(
            args.model, device=args.device, dtype=args.dtype, local_files_only=local
        )
        count = write_run(folder, pipe, prompts, specs, methods, args, settings)
    print(f"wrote {count} galleries to {args.out}")
    return 0


def write_run(folder: Path, pipe, prompts, specs, methods, args, settings) -> int:
    """Generate and write every gallery, its grids, galleries.json and config.json."""
    from couplednoise.eval.runs.atomic import write_text
    from couplednoise.eval.runs.galleries import GalleryRecord, save_gallery, write_gallery_index
    from couplednoise.eval.runs.images import image_grid, save_image
    from couplednoise.pipelines.generation import iter_galleries
    from couplednoise.pipelines.provenance import pipeline_record, versions

    entries, shown, compare_rows = [], [], {}
    for gallery in iter_galleries(
        pipe,
        prompts,
        specs,
        num_images=args.num_images,
        seeds=args.seeds,
        methods=methods,
        progress=not args.no_progress,
        **settings,
    ):
        index = prompts.index(gallery.prompt)
        gid = gallery_id(index, gallery.seed, gallery.coupling, gallery.method)
        info = {"coupling": gallery.coupling, "seed": gallery.seed, "metadata": gallery.metadata}
        if gallery.method != "plain":
            info["method"] = gallery.method
        entries.append(
            save_gallery(folder, GalleryRecord(gid, gallery.prompt, gallery.images, info))
        )
        if len(shown) < GRID_ROWS:
            shown.append((f"{gid}: {gallery.prompt[:40]}", gallery.images))
        if args.compare:
            compare_rows.setdefault((index, gallery.seed), []).append(gallery)
            if len(compare_rows[(index, gallery.seed)]) == len(specs) * len(methods):
                rows = compare_rows.pop((index, gallery.seed))
                labels = [
                    g.coupling + ("" if g.method == "plain" else f" + {g.method}") for g in rows
                ]
                grid = image_grid([g.images for g in rows], labels=labels)
                save_image(grid, folder / f"grid_compare_p{index:03d}_s{gallery.seed}.png")
    labels, rows = zip(*shown)
    save_image(image_grid(list(rows), labels=list(labels)), folder / "grid.png")
    write_gallery_index(folder, entries)
    config = {
        "command": KIND,
        "argv": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": args.model,
        **{k: v for k, v in pipeline_record(pipe).items() if k != "model"},
        "prompts": prompts,
        "couplings": specs,
        "methods": methods,
        "seeds": args.seeds,
        "num_images": args.num_images,
        "settings": settings,
        "seed_semantics": "one gallery per (prompt, seed, coupling); its images are drawn "
        "jointly from the coupling with torch.Generator('cpu').manual_seed(seed)",
        "versions": versions(),
    }
    write_text(folder / "config.json", json.dumps(config, indent=2, default=str) + "\n")
    return len(entries)
