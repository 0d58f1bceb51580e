"""The main job: coupled vs independent galleries side by side, with a table of how diverse they are.

    couplednoise demo                          # built-in lab model, ./couplednoise-demo
    couplednoise demo --out DIR --model PATH_OR_HUB_ID   # the same job on an SD checkpoint

For each prompt and seed, one gallery per coupling (independent, repulsive, orthogonal, subspace),
all drawn from the same seed. Writes DIR/grid_<prompt>.png (labelled rows, one per coupling),
DIR/images/<id>/<k>.png with DIR/galleries.json (the `couplednoise score` layout), DIR/metrics.csv
(one row per gallery), DIR/table.md (means per coupling) and DIR/config.json; prints the table.
On the lab model the table has ground truth (alignment, scene and attribute coverage as fractions
of the best possible, and for subspace the fixed-object readout) beside generic diversity metrics
(pairwise L2, MS-SSIM, pixel Vendi); on a checkpoint, the generic metrics only.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from couplednoise.eval.cli.options import parse_seeds

DEFAULT_OUT = "couplednoise-demo"
DEFAULT_COUPLINGS = ("independent", "repulsive", "orthogonal", "subspace")
LAB_PROMPTS = (
    "a red circle",
    "a square on a blue background",
    "a large green triangle",
    "a diamond on the left",
)
SD_PROMPTS = (
    "a photo of a cat",
    "a bowl of fruit on a wooden table",
    "a red car parked in a city street",
    "a lighthouse at sunset",
)
GENERIC_METRICS = ("l2", "ms_ssim", "vendi_pixel")
LAB_DEFAULTS = {"steps": 20, "guidance": 1.0}
SD_DEFAULTS = {"steps": 30, "guidance": 7.5}
REFERENCE_SEED_OFFSET = 10_000  # the fixed-object reference noise: a seed apart from the galleries'
GRID_CELL = 96  # pixels per image in the grids (lab images are upscaled, nearest neighbour)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's options."""
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        help=f"output folder (default ./{DEFAULT_OUT})",
    )
    parser.add_argument(
        "--model",
        default="lab",
        help="'lab' (built-in closed-form model, no weights; 'lab:size=64,scheduler=flow'), "
        "or an SD1.5 / SDXL / SD3 checkpoint folder or hub id already in your HF cache",
    )
    parser.add_argument("--prompts", nargs="+", help="prompts (default: four per model kind)")
    parser.add_argument(
        "--couplings",
        nargs="+",
        default=list(DEFAULT_COUPLINGS),
        help="coupling specs, e.g. independent repulsive:strength=0.5 orthogonal subspace:share=0.9 "
        "(subspace shares the noise inside an object mask: the lab's reference object, a central "
        "box on checkpoints)",
    )
    parser.add_argument("--num-images", type=int, default=6, help="gallery size K (default 6)")
    parser.add_argument(
        "--seeds", default="0", help="seeds, one gallery set each: '0', '0,3', '0-4' (default 0)"
    )
    parser.add_argument("--steps", type=int, help="denoising steps (default lab 20, SD 30)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default lab 1.0, SD 7.5)")
    parser.add_argument("--device", default=None, help="cpu / cuda (default cuda if available)")


def is_lab(model: str) -> bool:
    return model.strip().lower().split(":")[0] == "lab"


def run(args: argparse.Namespace) -> int:
    """Check every option, generate, score, write the run folder and print the table."""
    import torch

    started = time.perf_counter()
    plan = _plan(args)  # validates before loading anything heavy
    pipe = _load(args.model, args.device)
    pipe.set_progress_bar_config(disable=True)
    if plan["lab"]:
        for prompt in plan["prompts"]:
            pipe.scenes_for(prompt)  # unknown words: ValueError listing the vocabulary
    rows, galleries = _generate(pipe, plan, torch)
    table = summary_table(rows, plan["couplings"], plan["lab"])
    _write_run(args.out, plan, rows, galleries, table, time.perf_counter() - started)
    print(table)
    print(
        f"\nwrote {args.out}/ (grids, images, metrics.csv, table.md) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


def _plan(args: argparse.Namespace) -> dict:
    """All options resolved and checked (ValueError before any work)."""
    import torch

    lab = is_lab(args.model)
    defaults = LAB_DEFAULTS if lab else SD_DEFAULTS
    if args.num_images < 2:
        raise ValueError(
            f"--num-images must be >= 2 to compare a gallery's images, got {args.num_images}"
        )
    steps = args.steps if args.steps is not None else defaults["steps"]
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if not args.couplings:
        raise ValueError("--couplings needs at least one coupling spec")
    for spec in args.couplings:  # ValueError naming the valid couplings / parameters
        build_coupling(spec, torch.ones(8, 8), None)
    _check_out(args.out)
    return {
        "lab": lab,
        "model": args.model,
        "prompts": list(args.prompts or (LAB_PROMPTS if lab else SD_PROMPTS)),
        "couplings": list(args.couplings),
        "num_images": args.num_images,
        "seeds": parse_seeds(args.seeds),
        "steps": steps,
        "guidance": args.guidance if args.guidance is not None else defaults["guidance"],
    }


def _check_out(out: Path) -> None:
    """The output folder must be new, empty, or an earlier demo run (which is replaced)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            earlier = json.loads((out / "config.json").read_text()).get("command") == "demo"
        except (OSError, json.JSONDecodeError):
            earlier = False
        if not earlier:
            raise ValueError(
                f"--out {out} is a non-empty folder that is not an earlier demo run; "
                "choose a new or empty folder"
            )


def _load(model: str, device: str | None):
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if is_lab(model):
        from couplednoise.pipelines.lab import load_lab_pipeline

        return load_lab_pipeline(model, device=device)
    from couplednoise.pipelines.loading import load_pipeline

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return load_pipeline(model, device=device, dtype=dtype)


def build_coupling(spec: str, mask, shared):
    """The coupling for ``spec``; a subspace spec without ``band=`` shares ``mask`` / ``shared``."""
    from couplednoise import get_coupling, parse_spec

    name, params = parse_spec(spec)
    if name == "subspace" and "band" not in params:
        return get_coupling(spec, mask=mask, shared=shared)
    return get_coupling(spec)


def fixed_object_reference(pipe, prompt: str, seed: int, plan: dict, torch):
    """The fixed-object task's reference: (mask [H, W], shared noise [C, h, w], lab scene or None).

    A reference noise z0 (seeded by ``seed``, drawn like any latent) is shared inside the mask by
    the subspace coupling, so z0 is itself a member of the gallery's law and marginals stay
    exactly N(0, I). Lab: the mask is the object of the scene z0 generates (ground truth for
    "object kept"). Checkpoint: a central box over the middle half of the image.
    """
    from couplednoise import latents_for

    generator = torch.Generator("cpu").manual_seed(REFERENCE_SEED_OFFSET + seed)
    z0 = latents_for(pipe, "independent", num_images_per_prompt=1, generator=generator)
    if plan["lab"]:
        from couplednoise.pipelines.lab.readout import nearest_scenes

        image = pipe(
            prompt,
            latents=z0,
            num_inference_steps=plan["steps"],
            guidance_scale=plan["guidance"],
            output_type="pt",
        ).images
        reference = int(nearest_scenes(image, pipe.world)[0][0])
        return pipe.world.object_mask(reference), z0[0].float().cpu(), reference
    h, w = z0.shape[-2:]
    mask = torch.zeros(h, w)
    mask[h // 4 : h - h // 4, w // 4 : w - w // 4] = 1
    return mask, z0[0].float().cpu(), None


def _generate(pipe, plan: dict, torch) -> tuple[list[dict], list[dict]]:
    """Every gallery: generated, read out and scored. Returns (metric rows, gallery records)."""
    from tqdm.auto import tqdm

    from couplednoise.eval.metrics.registry import gallery_metrics
    from couplednoise.pipelines.generation import generate_gallery

    if plan["lab"]:
        from couplednoise.pipelines.lab.readout import fixed_object_readout, gallery_readout
    rows, galleries, references = [], [], {}
    jobs = [
        (p, prompt, seed, spec)
        for p, prompt in enumerate(plan["prompts"])
        for seed in plan["seeds"]
        for spec in plan["couplings"]
    ]
    for p, prompt, seed, spec in tqdm(jobs, desc="galleries", unit="gallery"):
        if (p, seed) not in references:
            references[(p, seed)] = fixed_object_reference(pipe, prompt, seed, plan, torch)
        mask, shared, reference = references[(p, seed)]
        coupling = build_coupling(spec, mask, shared)
        gallery = generate_gallery(
            pipe,
            prompt,
            coupling,
            num_images=plan["num_images"],
            seed=seed,
            num_inference_steps=plan["steps"],
            guidance_scale=plan["guidance"],
        )
        images = gallery.images.clamp(0, 1)
        row = {"prompt": prompt, "prompt_index": p, "seed": seed, "coupling": spec}
        if plan["lab"]:
            row.update(gallery_readout(images, prompt, pipe.world).summary())
            fixed = fixed_object_readout(images, pipe.world, reference)
            row["object_kept"] = fixed.object_kept
            row["kept_new_background"] = fixed.kept_on_new_background
            row["backgrounds"] = float(fixed.distinct_backgrounds)
        row.update(gallery_metrics(images, metrics=list(GENERIC_METRICS)))
        rows.append(row)
        galleries.append(
            {
                "id": f"p{p}-s{seed}-{spec.replace(':', '_').replace('=', '')}",
                "prompt": prompt,
                "coupling": gallery.coupling,
                "label": spec,
                "seed": seed,
                "images": images,
                "prompt_index": p,
                "metadata": gallery.metadata,
            }
        )
    return rows, galleries


def summary_table(rows: list[dict], couplings: list[str], lab: bool) -> str:
    """Markdown table: one row per coupling, means over its galleries (prompts x seeds)."""
    lab_columns = ["alignment", "scene_cov", "attr_cov", "object_kept", "kept_new_background"]
    columns = [*lab_columns, "backgrounds"] if lab else []
    columns += list(GENERIC_METRICS)
    titles = {
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
    lines = ["| coupling | " + " | ".join(titles[c] for c in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for spec in couplings:
        mine = [r for r in rows if r["coupling"] == spec]
        cells = []
        for column in columns:
            values = [r[column] for r in mine if column in r]
            cells.append(f"{sum(values) / len(values):.3f}" if values else "-")
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    n = len({(r["prompt"], r["seed"]) for r in rows})
    note = f"\nMeans over {n} gallery set(s) (prompts x seeds) of {len(couplings)} couplings."
    if lab:
        note += (
            " Ground truth from the nearest lab scene: coverage as a fraction of the best possible "
            "min(K, #matching scenes or values); object kept = subspace galleries keeping the "
            "reference object (generated from a reference noise that subspace shares inside the "
            "object's mask; the other couplings show the chance level); kept, new bg = the object "
            "kept on another background than the reference's; backgrounds = distinct "
            "backgrounds per gallery."
        )
    return "\n".join(lines) + note


def _write_run(out: Path, plan, rows, galleries, table: str, seconds: float) -> None:
    """Build the run folder beside ``out`` and move it into place (never half-written)."""
    from couplednoise.eval.runs.images import image_grid, save_image, save_png

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        index = []
        for g in galleries:
            files = [f"images/{g['id']}/{k}.png" for k in range(len(g["images"]))]
            for file, image in zip(files, g["images"]):
                save_png(image, staging / file)
            index.append({k: g[k] for k in ("id", "prompt", "coupling", "seed")} | {"files": files})
        (staging / "galleries.json").write_text(json.dumps(index, indent=1))
        for p, prompt in enumerate(plan["prompts"]):
            mine = [g for g in galleries if g["prompt_index"] == p]
            labels = [f"{prompt!r}   {g['label']}   seed {g['seed']}" for g in mine]
            grid = image_grid([_for_grid(g["images"]) for g in mine], labels=labels)
            save_image(grid, staging / f"grid_{p}.png")
        _write_csv(staging / "metrics.csv", rows)
        (staging / "table.md").write_text(table + "\n")
        pipeline = {
            k: v for k, v in galleries[0]["metadata"].items() if k not in ("seed", "coupling")
        }
        config = {"command": "demo", **plan, "pipeline": pipeline, "seconds": round(seconds, 2)}
        (staging / "config.json").write_text(json.dumps(config, indent=1, default=str))
        if out.exists():
            shutil.rmtree(out)  # an earlier demo run (checked in _check_out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def _for_grid(images):
    """Small (lab) images upscaled, nearest neighbour, to at least ``GRID_CELL`` pixels a side."""
    import torch.nn.functional as F

    factor = max(1, GRID_CELL // images.shape[-1])
    return F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images
