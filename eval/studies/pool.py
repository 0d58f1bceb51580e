"""Pool-partition couplings on the lab: each predictor against independent and repulsive noise.

    couplednoise study pool                         # writes docs/pool_study.{md,json,png}
    couplednoise study pool --seeds 0-299 --sizes 2,4,8,16 --cache /tmp/pool_cells

For each prompt, arm and gallery size K, one gallery per seed (seed s draws gallery s in every
arm: paired) is generated on the lab and read out against ground truth: attribute coverage and
scene coverage (fractions of the best possible) and alignment, with 95% t-intervals over
galleries (prompts x seeds), the paired difference to independent and to repulsive noise, and
the fraction of the independent-to-limit gap closed, diff / (1 - independent), whose interval
is the difference's scaled by the same factor. Pools have 64 groups (pool_size = 64 K).

Arms: ``independent``, ``repulsive``; pools by predictor: ``oracle`` (reads the prompt's scene
set: an upper bound), ``learned`` (fitted from ``--pilots`` pilot generations per prompt, tables
from the lab's readout of the pilot images), ``learned-pixels`` (the same pilots, tables from
clusters of the pilot images' pixels: nothing but the model's outputs), ``dct`` (noise-only
features, zero network evaluations); zero-sum variants: ``*-pairs`` (antithetic pairs kept
together: every gallery sums to zero exactly, like repulsive) and ``*-zero-sum`` (a pool of
zero-sum blocks, mixed freely). The learned predictors' pilot seeds are apart from the galleries'.
With ``--cache DIR`` finished cells are kept and reused (an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from couplednoise.eval.cli.options import MAX_STEPS, int_in, int_list, seed_list
from couplednoise.eval.runs.atomic import save_figure, write_text
from couplednoise.eval.runs.stats import t_interval
from couplednoise.eval.studies.common import study_args

DEFAULT_PROMPTS = (
    "a red circle on a white background",
    "a large square on the left",
    "a small green triangle",
)
BASELINES = ("independent", "repulsive")
PREDICTOR_ARMS = ("oracle", "learned", "learned-pixels", "dct")
VARIANTS = ("", "-pairs", "-zero-sum")
ARMS = BASELINES + tuple(p + v for p in PREDICTOR_ARMS for v in VARIANTS)
DEFAULT_ARMS = (
    "independent",
    "repulsive",
    "oracle",
    "learned",
    "learned-pixels",
    "dct",
    "oracle-pairs",
    "learned-pixels-pairs",
    "dct-pairs",
    "learned-pixels-zero-sum",
)
METRICS = ("attr_cov", "scene_cov", "alignment")
TITLES = {
    "attr_cov": "attribute coverage / limit",
    "scene_cov": "scene coverage / limit",
    "alignment": "alignment",
    "gap": "attribute-coverage gap closed",
}
GROUPS = 64  # B: pool_size = GROUPS * K


def arm_name(text: str) -> str:
    if text not in ARMS:
        raise ValueError(f"unknown arm {text!r}; valid: {', '.join(ARMS)}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="lab", help="lab spec, e.g. lab:scheduler=flow")
    parser.add_argument("--prompts", nargs="+", default=list(DEFAULT_PROMPTS))
    parser.add_argument("--arms", nargs="+", type=arm_name, default=list(DEFAULT_ARMS))
    parser.add_argument("--sizes", type=int_list(2, 64), default=[4, 8], help="gallery sizes K")
    parser.add_argument(
        "--seeds", type=seed_list, default=seed_list("0-299"), help="gallery seeds (0-299)"
    )
    parser.add_argument("--steps", type=int_in(1, MAX_STEPS), default=20, help="denoising steps")
    parser.add_argument(
        "--pilots", type=int_in(2, 4096), default=64, help="pilot generations per prompt"
    )
    parser.add_argument(
        "--pilot-seed", type=int_in(0, 2**62), default=10**9, help="seed of the pilot noise"
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for figure + table")
    parser.add_argument("--cache", type=Path, default=None, help="folder for finished cells")


def gallery_summaries(images: torch.Tensor, k: int, prompt: str, world) -> list[dict]:
    """attr_cov, scene_cov, alignment of each gallery of k in images [G * k, 3, s, s], as
    ``gallery_readout(...).summary()`` gives them, from one batched nearest-scene search."""
    from couplednoise.pipelines.lab.prompts import parse_prompt
    from couplednoise.pipelines.lab.readout import nearest_scenes
    from couplednoise.pipelines.lab.world import ATTRIBUTES, attribute_index, value_index

    constraints = parse_prompt(prompt)
    candidates = world.matching(constraints)
    index, _ = nearest_scenes(images, world)
    codes = world.codes[index].reshape(-1, k, len(ATTRIBUTES))
    aligned = torch.ones(codes.shape[:2], dtype=torch.bool)
    for name, value in constraints.items():
        aligned &= codes[..., attribute_index(name)] == value_index(name, value)
    scenes = index.reshape(-1, k)
    open_attributes = [a for a in ATTRIBUTES if a not in constraints]
    present = {
        a: int(world.codes[candidates, attribute_index(a)].unique().numel())
        for a in open_attributes
    }
    rows = []
    for g in range(codes.shape[0]):
        keep = aligned[g]
        fractions = [
            len(set(codes[g, keep, attribute_index(a)].tolist())) / min(k, present[a])
            for a in open_attributes
        ]
        rows.append(
            {
                "alignment": float(keep.double().mean()),
                "scene_cov": len(set(scenes[g, keep].tolist())) / min(k, len(candidates)),
                "attr_cov": sum(fractions) / len(fractions) if fractions else 1.0,
            }
        )
    return rows


def split_arm(arm: str) -> tuple[str, str]:
    """(predictor, variant) of a pool arm: "learned-pixels-pairs" -> ("learned-pixels", "pairs")."""
    for variant in VARIANTS[1:]:
        if arm.endswith(variant) and arm[: -len(variant)] in PREDICTOR_ARMS:
            return arm[: -len(variant)], variant[1:]
    return arm, ""


def build_arm(arm: str, k: int, predictors: dict):
    """The coupling of ``arm`` for galleries of k (pools of ``GROUPS`` groups)."""
    from couplednoise import Antithetic, Pool, Repulsive

    if arm in BASELINES:
        return arm
    name, variant = split_arm(arm)
    if variant == "pairs":  # antithetic pairs kept together: every gallery sums to zero
        return Pool(
            GROUPS * k, predictors[name], block_size=2, keep_blocks=True, coupling=Antithetic()
        )
    if variant == "zero-sum":  # zero-sum blocks of K, mixed freely by the rule
        return Pool(GROUPS * k, predictors[name], coupling=Repulsive())
    return Pool(GROUPS * k, predictors[name])


def fit_predictors(pipe, prompt: str, arms: list[str], args, index: int) -> tuple[dict, dict]:
    """(predictor name -> predictor, facts about each) for the arms' predictors on ``prompt``."""
    from couplednoise import DCTPredictor, cell_predictor_from_pilots
    from couplednoise.pipelines.lab.oracle import lab_oracle, readout_labels
    from couplednoise.pipelines.pool_pilots import run_pilots

    needed = sorted({split_arm(arm)[0] for arm in arms if arm not in BASELINES})
    predictors, facts = {}, {}
    runs = None
    for name in needed:
        start = time.perf_counter()
        if name == "oracle":
            predictors[name] = lab_oracle(pipe.world, prompt)
        elif name == "dct":
            predictors[name] = DCTPredictor()
        else:  # the learned ones share one set of pilot runs
            if runs is None:
                runs = run_pilots(
                    pipe,
                    prompt,
                    args.pilots,
                    seed=args.pilot_seed + index,
                    num_inference_steps=args.steps,
                )
            labels = readout_labels(pipe.world, prompt)(runs.outputs) if name == "learned" else None
            predictors[name] = cell_predictor_from_pilots(runs.noise, runs.outputs, labels=labels)
        metadata = getattr(predictors[name], "metadata", {})
        facts[name] = {
            "fit_seconds": time.perf_counter() - start,
            "network_evaluations": runs.network_evaluations if name.startswith("learned") else 0,
            **{key: v for key, v in metadata.items() if isinstance(v, (int, float, str))},
        }
    return predictors, facts


def run_cell(pipe, prompt: str, coupling, k: int, seeds: list[int], steps: int) -> dict:
    """Summaries of one gallery of k per seed, and the seconds spent on noise and on generation."""
    from couplednoise import latents_for

    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    start = time.perf_counter()
    latents = latents_for(
        pipe, coupling, num_images_per_prompt=k, num_prompts=len(seeds), generator=generators
    )
    noise_seconds = time.perf_counter() - start
    start = time.perf_counter()
    images = pipe(
        [prompt] * len(seeds),
        num_images_per_prompt=k,
        latents=latents,
        num_inference_steps=steps,
        output_type="pt",
    ).images
    generation_seconds = time.perf_counter() - start
    return {
        "rows": gallery_summaries(images, k, prompt, pipe.world),
        "noise_seconds": noise_seconds,
        "generation_seconds": generation_seconds,
    }


def cell_path(cache: Path, args, prompt: str, arm: str, k: int) -> Path:
    key = json.dumps(
        [args.model, prompt, arm, k, args.seeds, args.steps, args.pilots, args.pilot_seed]
    )
    return cache / f"{arm}_K{k}_{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def summarise(results: dict, arms: list[str], sizes: list[int]) -> list[dict]:
    """One record per (arm, K, metric): mean, CI, paired differences to independent / repulsive."""
    records = []
    for k in sizes:
        for arm in arms:
            rows = results[(arm, k)]["rows"]
            for metric in METRICS:
                values = torch.tensor([r[metric] for r in rows], dtype=torch.float64)
                mean, half = t_interval(values)
                record = {"arm": arm, "K": k, "metric": metric, "mean": mean, "ci": half}
                for base in BASELINES:
                    if base in arms and arm != base:
                        other = torch.tensor([r[metric] for r in results[(base, k)]["rows"]])
                        diff, diff_half = t_interval(values - other.double())
                        record[f"diff_{base}"], record[f"diff_{base}_ci"] = diff, diff_half
                if metric != "alignment" and "independent" in arms and arm != "independent":
                    base_mean = sum(r[metric] for r in results[("independent", k)]["rows"]) / len(
                        rows
                    )
                    gap = 1.0 - base_mean
                    if gap > 0:
                        record["gap_closed"] = record["diff_independent"] / gap
                        record["gap_closed_ci"] = record["diff_independent_ci"] / gap
                record["noise_ms_per_gallery"] = (
                    1e3 * results[(arm, k)]["noise_seconds"] / len(rows)
                )
                record["generation_ms_per_gallery"] = (
                    1e3 * results[(arm, k)]["generation_seconds"] / len(rows)
                )
                records.append(record)
    return records


def _cell(r: dict, key: str) -> str:
    return f"{r[key]:+.3f} ± {r[key + '_ci']:.3f}" if key in r else "-"


def markdown_table(records: list[dict], facts: dict, args: argparse.Namespace) -> str:
    by_key = {(r["arm"], r["K"], r["metric"]): r for r in records}
    lines = [
        f"Pool study: {len(args.seeds)} seeds x {len(args.prompts)} prompts per cell "
        f"({args.model}, {args.steps} steps, pools of {GROUPS} groups); mean ± 95% CI; "
        "limit = 1.000. Gap closed = (arm - independent) / (1 - independent), attribute coverage.",
        "",
        "| K | arm | attribute coverage | vs independent | gap closed | vs repulsive "
        "| scene coverage | vs independent | scene gap closed | alignment | noise ms / gallery |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in args.sizes:
        for arm in args.arms:
            a = by_key[(arm, k, "attr_cov")]
            s = by_key[(arm, k, "scene_cov")]
            al = by_key[(arm, k, "alignment")]
            gap = (
                f"{100 * a['gap_closed']:.0f}% ± {100 * a['gap_closed_ci']:.0f}%"
                if "gap_closed" in a
                else "-"
            )
            scene_gap = (
                f"{100 * s['gap_closed']:.0f}% ± {100 * s['gap_closed_ci']:.0f}%"
                if "gap_closed" in s
                else "-"
            )
            lines.append(
                f"| {k} | {arm} | {a['mean']:.3f} ± {a['ci']:.3f} | {_cell(a, 'diff_independent')}"
                f" | {gap} | {_cell(a, 'diff_repulsive')} | {s['mean']:.3f} ± {s['ci']:.3f} | "
                f"{_cell(s, 'diff_independent')} | {scene_gap} | {al['mean']:.3f} | "
                f"{a['noise_ms_per_gallery']:.1f} |"
            )
    lines += ["", "Predictors (per prompt; learned ones from the same pilot runs):", ""]
    lines += ["| prompt | predictor | pilot network evaluations | outcomes | in-sample accuracy |"]
    lines += ["|---|---|---|---|---|"]
    for prompt, per_prompt in facts.items():
        for name, fact in sorted(per_prompt.items()):
            accuracy = fact.get("in_sample_accuracy")
            lines.append(
                f"| {prompt} | {name} | {fact.get('network_evaluations', 0)} | "
                f"{fact.get('outcomes', '-')} | "
                f"{'-' if accuracy is None else f'{accuracy:.2f}'} |"
            )
    generation = [r["generation_ms_per_gallery"] for r in records if r["metric"] == "attr_cov"]
    lines += [
        "",
        f"Generation (batched, this machine): {min(generation):.1f}-{max(generation):.1f} ms per "
        f"gallery; a pilot run costs {args.steps} network evaluations per image.",
    ]
    return "\n".join(lines)


def figure(records: list[dict], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ("attr_cov", "gap", "scene_cov")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, panel in zip(axes, panels):
        metric = "attr_cov" if panel == "gap" else panel
        for i, arm in enumerate(args.arms):
            mine = sorted(
                (r for r in records if r["arm"] == arm and r["metric"] == metric),
                key=lambda r: r["K"],
            )
            if panel == "gap":
                mine = [r for r in mine if "gap_closed" in r]
                ys = [r["gap_closed"] for r in mine]
                errors = [r["gap_closed_ci"] for r in mine]
            else:
                ys, errors = [r["mean"] for r in mine], [r["ci"] for r in mine]
            if not mine:
                continue
            offset = 1 + 0.03 * (i - len(args.arms) / 2)  # small offsets: bars do not overlap
            ax.errorbar(
                [r["K"] * offset for r in mine], ys, yerr=errors, marker="o", capsize=3, label=arm
            )
        if panel != "gap":
            ax.axhline(1.0, color="gray", lw=1, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xticks(args.sizes, [str(k) for k in args.sizes])
        ax.set_xlabel("gallery size K")
        ax.set_title(TITLES[panel])
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"pool couplings on the lab: {len(args.seeds)} seeds x {len(args.prompts)} prompts"
    )
    fig.tight_layout()
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    from couplednoise.pipelines.lab import load_lab_pipeline

    pipe = load_lab_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    for prompt in args.prompts:
        if len(pipe.scenes_for(prompt)) < 2:
            raise ValueError(f"{prompt!r} matches fewer than 2 lab scenes: nothing to diversify")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cache is not None:
        args.cache.mkdir(parents=True, exist_ok=True)
    results = {
        (arm, k): {"rows": [], "noise_seconds": 0.0, "generation_seconds": 0.0}
        for arm in args.arms
        for k in args.sizes
    }
    facts = {}
    jobs = [(p, arm, k) for p in args.prompts for k in args.sizes for arm in args.arms]
    with tqdm(total=len(jobs), desc="pool study", unit="cell") as bar:
        for index, prompt in enumerate(args.prompts):
            predictors, facts[prompt] = fit_predictors(pipe, prompt, args.arms, args, index)
            for k in args.sizes:
                for arm in args.arms:
                    path = cell_path(args.cache, args, prompt, arm, k) if args.cache else None
                    if path is not None and path.is_file():
                        cell = json.loads(path.read_text())
                    else:
                        coupling = build_arm(arm, k, predictors)
                        cell = run_cell(pipe, prompt, coupling, k, list(args.seeds), args.steps)
                        if path is not None:
                            write_text(path, json.dumps(cell))
                    target = results[(arm, k)]
                    target["rows"] += cell["rows"]
                    target["noise_seconds"] += cell["noise_seconds"]
                    target["generation_seconds"] += cell["generation_seconds"]
                    bar.update()
    records = summarise(results, args.arms, args.sizes)
    table = markdown_table(records, facts, args)
    figure(records, args, args.out / "pool_study.png")
    write_text(args.out / "pool_study.md", table + "\n")
    write_text(
        args.out / "pool_study.json",
        json.dumps({"args": study_args(args), "records": records, "predictors": facts}, indent=1),
    )
    print(table)
    return 0
