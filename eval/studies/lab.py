"""Coverage and alignment of coupled vs independent galleries on the lab, with confidence intervals.

    couplednoise study lab                       # writes docs/lab_study.png and docs/lab_study.md
    couplednoise study lab --seeds 0-199 --sizes 2,4,8,16 --out docs

For each prompt, coupling and gallery size K, one gallery per seed of ``--seeds`` (seed s draws
gallery s; the same seeds for every coupling) are generated on the lab model and read out against ground truth:
scene coverage and attribute coverage (fractions of the best possible, min(K, #matching scenes /
values); 1.0 is the theoretical limit), alignment, and the expectation for K independent exact
draws. Reports mean and 95% t-intervals over galleries (prompts x seeds), and the mean paired
difference to independent noise with its 95% interval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from couplednoise.eval.cli.options import MAX_STEPS, int_in
from couplednoise.eval.runs.atomic import save_figure, write_text
from couplednoise.eval.runs.tables import format_pm
from couplednoise.eval.runs.tables import markdown_table as md_table
from couplednoise.eval.studies.common import add_grid_arguments, study_args, summarise_cells

DEFAULT_PROMPTS = (
    "a red circle on a white background",
    "a large square on the left",
    "a small green triangle",
)
DEFAULT_COUPLINGS = ("independent", "repulsive", "orthogonal")
METRICS = ("attr_cov", "scene_cov", "alignment")
TITLES = {
    "attr_cov": "attribute coverage / limit",
    "scene_cov": "scene coverage / limit",
    "alignment": "alignment",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_grid_arguments(
        parser,
        model="lab",
        model_help="lab spec, e.g. lab:size=64,scheduler=flow",
        prompts=DEFAULT_PROMPTS,
        couplings=DEFAULT_COUPLINGS,
        seeds="0-99",
    )
    parser.add_argument("--steps", type=int_in(1, MAX_STEPS), default=20, help="denoising steps")


def run_galleries(
    pipe, prompt: str, coupling: str, k: int, seeds: list[int], steps: int
) -> list[dict]:
    """Readout summaries of one gallery of K per seed (gallery s drawn from seed s), one batch."""
    from couplednoise import latents_for
    from couplednoise.pipelines.lab.readout import gallery_readout

    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    latents = latents_for(
        pipe, coupling, num_images_per_prompt=k, num_prompts=len(seeds), generator=generators
    )
    images = pipe(
        [prompt] * len(seeds),
        num_images_per_prompt=k,
        latents=latents,
        num_inference_steps=steps,
        output_type="pt",
    ).images
    rows = []
    for s in range(len(seeds)):
        readout = gallery_readout(images[s * k : (s + 1) * k], prompt, pipe.world)
        expected = [c.expected_independent / c.limit for c in readout.attribute_coverage.values()]
        rows.append(
            {
                **readout.summary(),
                "expected_attr_cov": sum(expected) / len(expected),
                "expected_scene_cov": readout.scene_coverage.expected_independent
                / readout.scene_coverage.limit,
            }
        )
    return rows


def markdown_table(records: list[dict], args: argparse.Namespace) -> str:
    """The table for docs/lab.md: coverage beside the limit (1.0) and the independent expectation."""
    by_key = {(r["coupling"], r["K"], r["metric"]): r for r in records}
    rows = []
    for k in args.sizes:
        for coupling in args.couplings:
            cells = []
            for metric in METRICS:
                r = by_key[(coupling, k, metric)]
                cells.append(format_pm(r["mean"], r["ci"]))
                if metric != "alignment":
                    diff = format_pm(r["diff"], r["diff_ci"], signed=True) if "diff" in r else "-"
                    cells.append(diff)
            rows.append([k, coupling, *cells])
        attr = by_key[(args.couplings[0], k, "attr_cov")]["expected_independent"]
        scene = by_key[(args.couplings[0], k, "scene_cov")]["expected_independent"]
        rows.append(
            [
                k,
                "*expected, independent exact draws*",
                f"{attr:.3f}",
                "",
                f"{scene:.3f}",
                "",
                "1.000",
            ]
        )
    headers = ["K", "coupling", "attribute coverage", "vs independent", "scene coverage"]
    headers += ["vs independent", "alignment"]
    caption = (
        f"Lab study: {len(args.seeds)} seeds x {len(args.prompts)} prompts per cell "
        f"({args.model}, {args.steps} steps); mean [95% CI]; limit = 1.000."
    )
    return caption + "\n\n" + md_table(headers, rows)


def figure(records: list[dict], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric in zip(axes, METRICS):
        for i, coupling in enumerate(args.couplings):
            mine = sorted(
                (r for r in records if r["coupling"] == coupling and r["metric"] == metric),
                key=lambda r: r["K"],
            )
            ks = [r["K"] * (1 + 0.04 * (i - 1)) for r in mine]  # small offset: bars do not overlap
            ax.errorbar(
                ks,
                [r["mean"] for r in mine],
                yerr=[r["ci"] for r in mine],
                marker="o",
                capsize=3,
                label=coupling,
            )
        expected = sorted(
            (
                r
                for r in records
                if r["coupling"] == args.couplings[0]
                and r["metric"] == metric
                and "expected_independent" in r
            ),
            key=lambda r: r["K"],
        )
        if expected:
            ax.plot(
                [r["K"] for r in expected],
                [r["expected_independent"] for r in expected],
                "k--",
                lw=1,
                label="independent, expected",
            )
        ax.axhline(1.0, color="gray", lw=1, ls=":", label="limit")
        ax.set_xscale("log", base=2)
        ax.set_xticks(args.sizes, [str(k) for k in args.sizes])
        ax.set_xlabel("gallery size K")
        ax.set_title(TITLES[metric])
    axes[0].legend(fontsize=8)
    fig.suptitle(f"lab: {len(args.seeds)} seeds x {len(args.prompts)} prompts, mean and 95% CI")
    fig.tight_layout()
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    from couplednoise import get_coupling
    from couplednoise.pipelines.lab import load_lab_pipeline

    for spec in args.couplings:
        get_coupling(spec)
    pipe = load_lab_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    for prompt in args.prompts:
        pipe.scenes_for(prompt)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    jobs = [(c, k) for k in args.sizes for c in args.couplings]
    for coupling, k in tqdm(jobs, desc="lab study", unit="cell"):
        results[(coupling, k)] = [
            row
            for prompt in args.prompts
            for row in run_galleries(pipe, prompt, coupling, k, args.seeds, args.steps)
        ]
    records = summarise_cells(results, args.couplings, args.sizes, METRICS)
    table = markdown_table(records, args)
    figure(records, args, args.out / "lab_study.png")
    write_text(args.out / "lab_study.md", table + "\n")
    write_text(
        args.out / "lab_study.json",
        json.dumps({"args": study_args(args), "records": records}, indent=1),
    )
    print(table)
    return 0
