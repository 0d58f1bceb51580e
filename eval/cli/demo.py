"""The main job: coupled vs independent galleries side by side, with a table of what coupling does.

    couplednoise demo                          # built-in lab model, ./couplednoise-demo
    couplednoise demo --out DIR --model PATH_OR_HUB_ID   # the same job on an SD checkpoint

For each prompt and seed, one gallery per coupling (independent, repulsive, orthogonal, subspace),
all drawn from the same seed (couplednoise.eval.demo.engine, the engine the web demo uses too).
The table gives each coupling's mean with a 95% interval over the gallery sets (prompts x seeds)
and its paired difference to independent noise on the same sets, with a 95% interval; * marks a
difference whose interval excludes 0. On the lab model it has ground truth (alignment, scene and
attribute coverage as fractions of the best possible, and for subspace the fixed-object readout)
beside generic diversity metrics (pairwise L2, MS-SSIM, pixel Vendi); on a checkpoint, the generic
metrics only. Writes DIR/grid_<prompt>.png (labelled rows, the first two seeds), DIR/images/<id>/
<k>.png with DIR/galleries.json (the `couplednoise score` layout), DIR/metrics.csv (one row per
gallery), DIR/table.md and DIR/config.json; prints the table. DIR is replaced only if it holds an
earlier demo run.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from couplednoise.eval.cli.options import (
    MAX_IMAGES,
    MAX_STEPS,
    device_name,
    float_in,
    int_in,
    seed_list,
)

DEFAULT_OUT = "couplednoise-demo"
DEFAULT_SEEDS = "0-7"
DEFAULT_COUPLINGS = ("independent", "repulsive", "orthogonal", "subspace")
SD_PROMPTS = (
    "a photo of a cat",
    "a bowl of fruit on a wooden table",
    "a red car parked in a city street",
    "a lighthouse at sunset",
)
GENERIC_METRICS = ("l2", "ms_ssim", "vendi_pixel")
LAB_METRICS = ("alignment", "scene_cov", "attr_cov", "object_kept", "kept_new_background")
TITLES = {
    "alignment": "align",
    "scene_cov": "scenes/limit",
    "attr_cov": "attr values/limit",
    "object_kept": "object kept",
    "kept_new_background": "kept, new bg",
    "backgrounds": "backgrounds",
    "l2": "L2 (div)",
    "ms_ssim": "MS-SSIM (lower=div)",
    "vendi_pixel": "Vendi pixel",
}
GRID_CELL = 96  # pixels per image in the grids (lab images are upscaled, nearest neighbour)
GRID_SEEDS = 2  # seeds per prompt shown in its grid
KIND = "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's options."""
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (./{DEFAULT_OUT})"
    )
    parser.add_argument(
        "--model",
        default="lab",
        help="'lab' (built-in closed-form model, no weights; 'lab:size=64,scheduler=flow'), "
        "another built-in model, or an SD1.5 / SDXL / SD3 checkpoint folder or hub id already in "
        "your HF cache",
    )
    parser.add_argument("--prompts", nargs="+", help="prompts (default: four per model kind)")
    parser.add_argument(
        "--couplings",
        nargs="+",
        default=list(DEFAULT_COUPLINGS),
        help="coupling specs, e.g. independent repulsive:strength=0.5 orthogonal subspace:share=0.9 "
        "(independent is added first if missing: every other coupling is compared with it; "
        "subspace shares the noise inside an object mask: the lab's reference object, a central "
        "box on checkpoints)",
    )
    parser.add_argument(
        "--num-images", type=int_in(2, MAX_IMAGES), default=6, help="gallery size K (default 6)"
    )
    parser.add_argument(
        "--seeds",
        type=seed_list,
        default=seed_list(DEFAULT_SEEDS),
        help=f"seeds, one gallery set per prompt each: '0', '0,3', '0-4' (default {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--steps", type=int_in(1, MAX_STEPS), help="denoising steps (default: the model's)"
    )
    parser.add_argument(
        "--guidance", type=float_in(0.0, 100.0), help="guidance scale (default: the model's)"
    )
    parser.add_argument("--device", type=device_name, help="cpu / cuda (default cuda if available)")


def plan(args: argparse.Namespace) -> dict:
    """Every option resolved and checked, the model included (ValueError before any work)."""
    from couplednoise import get_coupling, parse_spec
    from couplednoise.eval.runs.folders import check_output_folder
    from couplednoise.pipelines.builtin import example_prompts, model_defaults
    from couplednoise.pipelines.loading import check_model, is_lab, planned_latent_shape

    check_model(args.model)
    shape = planned_latent_shape(args.model)  # None: the model's shape is known only once loaded
    specs = [get_coupling(s).spec if parse_spec(s)[0] != "subspace" else s for s in args.couplings]
    for spec in specs:
        name, params = parse_spec(spec)
        region = name == "subspace" and "band" not in params
        coupling = get_coupling(spec, mask=_box(8)) if region else get_coupling(spec)
        if shape is not None:
            coupling.check(args.num_images, shape)
    if "independent" not in specs:
        specs.insert(0, "independent")
    if len(set(specs)) != len(specs):
        raise ValueError(f"--couplings repeat a coupling: {specs}")
    check_output_folder(args.out, KIND, overwrite=True)
    lab = is_lab(args.model)
    defaults = model_defaults(args.model)
    prompts = list(args.prompts or example_prompts(args.model) or SD_PROMPTS)
    if len(set(prompts)) != len(prompts) or not all(p.strip() for p in prompts):
        raise ValueError("--prompts must be distinct and non-empty")
    return {
        "lab": lab,
        "model": args.model,
        "prompts": prompts,
        "couplings": specs,
        "num_images": args.num_images,
        "seeds": args.seeds,
        "steps": args.steps if args.steps is not None else int(defaults["steps"]),
        "guidance": args.guidance if args.guidance is not None else defaults["guidance"],
    }


def _box(size: int):
    import torch

    mask = torch.zeros(size, size)
    mask[size // 4 : size - size // 4, size // 4 : size - size // 4] = 1
    return mask


def run(args: argparse.Namespace) -> int:
    """Check every option, generate, score, write the run folder and print the table."""
    from couplednoise.eval.runs.folders import staged_run
    from couplednoise.pipelines.loading import load_pipeline

    started = time.perf_counter()
    job = plan(args)
    with staged_run(args.out, KIND, overwrite=True) as folder:
        pipe = load_pipeline(job["model"], device=args.device)
        pipe.set_progress_bar_config(disable=True)
        if job["lab"]:
            for prompt in job["prompts"]:
                pipe.scenes_for(prompt)  # unknown words: ValueError listing the vocabulary
        rows, entries, metadata = generate_and_score(pipe, job, folder)
        table = summary_table(rows, job)
        write_outputs(folder, job, rows, entries, metadata, table, time.perf_counter() - started)
    print(table)
    print(
        f"\nwrote {args.out}/ (grids, images, metrics.csv, table.md) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


def generate_and_score(pipe, job: dict, folder: Path) -> tuple[list[dict], list[dict], dict]:
    """Every gallery set (prompt x seed): generated, scored, its images saved, and one grid per
    prompt (its first seeds). Returns (metric rows, galleries.json entries, pipeline metadata)."""
    from tqdm.auto import tqdm

    from couplednoise import parse_spec
    from couplednoise.eval.demo.engine import (
        build_coupling,
        draw_galleries,
        fixed_object_reference,
        score_gallery,
    )
    from couplednoise.eval.runs.galleries import GalleryRecord, save_gallery, slug
    from couplednoise.eval.runs.images import enlarge, image_grid, save_image

    settings = {"num_inference_steps": job["steps"], "guidance_scale": job["guidance"]}
    needs_reference = any(
        parse_spec(s)[0] == "subspace" and "band" not in parse_spec(s)[1] for s in job["couplings"]
    )
    rows, entries = [], []
    sets = [(p, prompt, seed) for p, prompt in enumerate(job["prompts"]) for seed in job["seeds"]]
    grids: dict[int, list] = {}
    for p, prompt, seed in tqdm(sets, desc="gallery sets", unit="set"):
        reference = (
            fixed_object_reference(pipe, prompt, seed, settings) if needs_reference else None
        )
        couplings = [
            build_coupling(
                spec,
                mask=reference.mask if reference else None,
                shared=reference.shared if reference else None,
            )
            for spec in job["couplings"]
        ]
        galleries = draw_galleries(
            pipe, prompt, couplings, num_images=job["num_images"], seed=seed, settings=settings
        )
        for spec, gallery in zip(job["couplings"], galleries):
            images = gallery.images.clamp(0, 1)
            scores = score_gallery(images, prompt, pipe, reference=reference)
            row = {"prompt": prompt, "prompt_index": p, "seed": seed, "coupling": spec}
            rows.append({**row, **{k: scores[k] for k in scores if k in TITLES}})
            gid = f"p{p}-s{seed}-{slug(spec)}"
            info = {"coupling": gallery.coupling, "label": spec, "seed": seed}
            entries.append(save_gallery(folder, GalleryRecord(gid, prompt, images, info)))
            if seed in job["seeds"][:GRID_SEEDS]:
                label = f"{prompt!r}   {spec}   seed {seed}"
                grids.setdefault(p, []).append((label, enlarge(images, GRID_CELL)))
    for p, shown in grids.items():
        labels, images = zip(*shown)
        save_image(image_grid(list(images), labels=list(labels)), folder / f"grid_{p}.png")
    return rows, entries, galleries[0].metadata


def summary_table(rows: list[dict], job: dict) -> str:
    """Markdown: per coupling the mean [95% CI] over gallery sets, then the paired difference to
    independent on the same sets (prompt, seed) with its 95% CI; * = interval excludes 0."""
    from couplednoise.eval.runs.stats import mean_ci, paired_difference_ci
    from couplednoise.eval.runs.tables import format_ci, markdown_table

    columns = [c for c in (*LAB_METRICS, *GENERIC_METRICS) if any(c in r for r in rows)]
    by = {(r["coupling"], r["prompt_index"], r["seed"]): r for r in rows}
    keys = sorted({(r["prompt_index"], r["seed"]) for r in rows})
    means, diffs = [], []
    for spec in job["couplings"]:
        cells, deltas = [], []
        for column in columns:
            values = [by[(spec, *k)].get(column) for k in keys]
            present = [v for v in values if v is not None]
            cells.append(format_ci(*mean_ci(present)) if present else "-")
            base = [by[("independent", *k)].get(column) for k in keys]
            if spec == "independent" or None in values or None in base:
                deltas.append("-")
                continue
            diff, low, high = paired_difference_ci(values, base)
            if math.isnan(low):  # one gallery set: no interval
                deltas.append(f"{diff:+.3g}")
                continue
            star = " *" if low > 0 or high < 0 else ""
            deltas.append(f"{diff:+.3g} [{low:+.3g}, {high:+.3g}]{star}")
        means.append([spec, *cells])
        if spec != "independent":
            diffs.append([spec, *deltas])
    headers = ["coupling", *(TITLES[c] for c in columns)]
    n = len(keys)
    text = [
        f"Mean [95% CI] over {n} gallery sets ({len(job['prompts'])} prompts x "
        f"{len(job['seeds'])} seeds) of {job['num_images']} images:",
        "",
        markdown_table(headers, means),
        "",
        f"Paired difference to independent on the same {n} sets [95% CI] (* = excludes 0):",
        "",
        markdown_table(headers, diffs),
    ]
    if job["lab"]:
        text += [
            "",
            "Ground truth from the nearest lab scene: coverage as a fraction of the best possible "
            "min(K, #matching scenes or values); object kept = galleries keeping the reference "
            "object (generated from a reference noise that subspace shares inside the object's "
            "mask; the other couplings show the chance level); kept, new bg = the object kept on "
            "another background than the reference's.",
        ]
    return "\n".join(text)


def write_outputs(folder: Path, job, rows, entries, metadata, table: str, seconds: float) -> None:
    """galleries.json, metrics.csv, table.md and config.json (the images are already written)."""
    from couplednoise.eval.runs.atomic import write_text
    from couplednoise.eval.runs.galleries import write_gallery_index
    from couplednoise.eval.runs.tables import csv_text

    write_gallery_index(folder, entries)
    write_text(folder / "metrics.csv", csv_text(rows))
    write_text(folder / "table.md", table + "\n")
    pipeline = {k: v for k, v in metadata.items() if k not in ("seed", "coupling")}
    config = {"command": KIND, **job, "pipeline": pipeline, "seconds": round(seconds, 2)}
    write_text(folder / "config.json", json.dumps(config, indent=1, default=str))
