"""Coupled noise against the noise-optimisation baselines, at their costs: ``couplednoise study baselines``.

    couplednoise study baselines                       # docs/baselines_study.{md,json,png}
    couplednoise study baselines --models learned-lab  # docs/baselines_study_learned-lab.*
    couplednoise study baselines --seeds 0-9 --sizes 4 --methods independent repulsive+cno

A method is "COUPLING[+GALLERY_METHOD]": the initial noise from a coupling spec, then plain
sampling, CNO or CADS ("repulsive+cno:iterations=10", "independent+cads:tau1=0.42,tau2=0.65").
For every model, prompt, gallery size K and method, gallery s comes from seed s (the same seeds for
every method: paired), and is read out against ground truth: attribute and scene coverage
(fractions of the best possible), alignment, pixel diversity (mean pairwise L2 in [0, 1] pixels),
and cost: denoiser evaluations per image (forward, backward; counted) and seconds per gallery
(measured, methods interleaved over chunks of seeds). Means with 95% t-intervals over galleries
(prompts x seeds), paired differences to independent noise, and the contrasts in ``CONTRASTS``.

Models: ``--models`` names built-in models with a ground-truth readout in ``STUDY_MODELS``: the
closed-form lab (``lab``, the default) and the learned lab (``learned-lab``, read out by its
classifiers; its "scene" coverage counts distinct attribute combinations). Work is saved after
every cell to OUT/STEM.partial.json and a rerun with the same arguments resumes.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from couplednoise.eval.cli.options import (
    MAX_IMAGES,
    MAX_STEPS,
    float_in,
    int_in,
    int_list,
    seed_list,
)
from couplednoise.eval.runs.atomic import save_figure, write_text
from couplednoise.eval.runs.stats import t_interval
from couplednoise.eval.studies.common import study_args

# Gallery methods at the paper's settings, and CADS with its window moved to the labs' schedule
# (both labs: DDPM's linear betas 1e-4 .. 0.02): SD's t = 0.6 and 0.9 have the signal-to-noise
# ratio that schedule has at t = 0.42 and 0.65 (alpha-bar 0.162 and 0.014).
CADS_LAB_WINDOW = "cads:tau1=0.42,tau2=0.65"
DEFAULT_METHODS = (
    "independent",
    "repulsive",
    "independent+cno",
    "repulsive+cno",
    "independent+cads",
    "repulsive+cads",
    f"independent+{CADS_LAB_WINDOW}",
    f"repulsive+{CADS_LAB_WINDOW}",
)
# The pool coupling (issue 18) joins the defaults as soon as it is registered in COUPLINGS.
POOL_METHODS = ("pool", "pool+cno")
METRICS = ("attr_cov", "scene_cov", "alignment", "l2_diversity")
COSTS = ("forward", "backward", "seconds")
TITLES = {
    "attr_cov": "attribute coverage / limit",
    "scene_cov": "scene coverage / limit",
    "alignment": "alignment",
    "l2_diversity": "pixel diversity (mean pairwise L2)",
}
# (a, b): the paired difference a - b is reported when both are run.
CONTRASTS = (
    ("repulsive", "independent"),
    ("repulsive", "independent+cno"),
    ("independent+cno", "independent"),
    ("repulsive+cno", "independent+cno"),
    ("repulsive+cno", "repulsive"),
    ("independent+cads", "independent"),
    ("repulsive+cads", "repulsive"),
    (f"independent+{CADS_LAB_WINDOW}", "independent"),
    (f"repulsive+{CADS_LAB_WINDOW}", "repulsive"),
    ("pool", "repulsive"),
    ("pool+cno", "pool"),
)
SEED_CHUNK = 25  # galleries per batched call; methods are interleaved chunk by chunk


@dataclass(frozen=True)
class StudyModel:
    """A model the study can read out: ``readout(pipe, images [K, 3, H, W], prompt)`` -> the
    per-gallery numbers (``METRICS`` but l2_diversity), ``check(pipe, prompt)`` (ValueError for a
    prompt the model does not know) and default prompts."""

    readout: Callable[..., dict[str, float]]
    check: Callable[..., object]
    prompts: tuple[str, ...]


def lab_readout(pipe, images: torch.Tensor, prompt: str) -> dict[str, float]:
    """Coverage and alignment, and in detail: the coverage of each attribute the prompt leaves
    open ("cov:background", ...) and the RMS pixel distance to the nearest scene ("scene_rms",
    fidelity: ~0 for an image that is a world scene)."""
    from couplednoise.pipelines.lab.readout import gallery_readout, nearest_scenes

    readout = gallery_readout(images, prompt, pipe.world)
    summary = readout.summary()
    row = {key: summary[key] for key in ("attr_cov", "scene_cov", "alignment")}
    row.update({f"cov:{n}": c.fraction for n, c in readout.attribute_coverage.items()})
    _, distance = nearest_scenes(images, pipe.world)
    row["scene_rms"] = float((distance / images[0].numel() ** 0.5).mean())
    return row


@functools.cache
def _learned_lab_classifier():
    from couplednoise.pipelines.learned_lab import load_classifier

    return load_classifier()


def learned_lab_readout(pipe, images: torch.Tensor, prompt: str) -> dict[str, float]:
    """The learned lab's classifiers as ground truth: attribute coverage and alignment as in its
    own study; "scene" coverage = distinct attribute combinations (object, colour, position,
    background) among the aligned images over the best possible, min(K, #combinations the
    prompt allows); and the coverage of each open attribute ("cov:object", ...)."""
    from couplednoise.pipelines.learned_lab.readout import gallery_readout, matches
    from couplednoise.pipelines.learned_lab.world import ATTRIBUTES

    readout = gallery_readout(images, prompt, _learned_lab_classifier())
    constraints = readout_constraints(prompt)
    combinations = math.prod(len(v) for n, v in ATTRIBUTES.items() if n not in constraints)
    aligned = {tuple(a.values()) for a in readout.attributes if matches(a, constraints)}
    row = {
        "attr_cov": readout.mean_attribute_coverage,
        "scene_cov": len(aligned) / min(len(readout.attributes), combinations),
        "alignment": readout.alignment,
    }
    row.update({f"cov:{n}": c.fraction for n, c in readout.attribute_coverage.items()})
    return row


def readout_constraints(prompt: str) -> dict[str, str]:
    from couplednoise.pipelines.learned_lab.prompts import parse_prompt

    return parse_prompt(prompt)


# Built-in model name -> how to read it out.
STUDY_MODELS: dict[str, StudyModel] = {
    "lab": StudyModel(
        lab_readout,
        lambda pipe, prompt: pipe.check_request(prompt),
        (
            "a red circle on a white background",
            "a large square on the left",
            "a small green triangle",
        ),
    ),
    "learned-lab": StudyModel(
        learned_lab_readout,
        lambda pipe, prompt: readout_constraints(prompt),
        ("a red sneaker", "a bag on brick", "a white thing on the left"),
    ),
}


def parse_method(label: str) -> tuple[str, str]:
    """ "repulsive+cno:iterations=3" -> ("repulsive", "cno:iterations=3"); no "+": plain."""
    coupling, plus, method = label.partition("+")
    return coupling.strip(), method.strip() if plus else "plain"


def default_methods() -> list[str]:
    from couplednoise import COUPLINGS

    pool = [m for m in POOL_METHODS if "pool" in COUPLINGS]
    return [*DEFAULT_METHODS, *pool]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models", nargs="+", default=["lab"], help=f"built-in models: {', '.join(STUDY_MODELS)}"
    )
    parser.add_argument("--prompts", nargs="+", help="prompts (default: the model's own three)")
    parser.add_argument(
        "--methods",
        nargs="+",
        help="COUPLING[+METHOD] labels (default: independent, repulsive, each + cno and + cads)",
    )
    parser.add_argument(
        "--sizes", type=int_list(2, MAX_IMAGES), default=[4, 8], help="gallery sizes K"
    )
    parser.add_argument(
        "--seeds", type=seed_list, default=seed_list("0-99"), help="gallery seeds (default 0-99)"
    )
    parser.add_argument("--steps", type=int_in(1, MAX_STEPS), help="denoising steps (model's)")
    parser.add_argument("--guidance", type=float_in(0.0, 100.0), help="guidance (model's)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the outputs")


def check_arguments(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Validate models, methods and prompts before anything loads; the (coupling, method) pairs."""
    from couplednoise import get_coupling
    from couplednoise.pipelines.baselines import get_gallery_method
    from couplednoise.pipelines.builtin import builtin_model, spec_name

    for model in args.models:
        if spec_name(model) not in STUDY_MODELS or builtin_model(model) is None:
            raise ValueError(
                f"model {model!r} has no ground-truth readout; known: {', '.join(STUDY_MODELS)}"
            )
        builtin_model(model).check(model)
    args.methods = list(args.methods or default_methods())
    if len(set(args.methods)) != len(args.methods):
        raise ValueError("--methods repeats a method")
    if "independent" not in args.methods:
        raise ValueError("--methods must include 'independent', the paired baseline")
    pairs = []
    for label in args.methods:
        coupling, method = parse_method(label)
        get_coupling(coupling)
        get_gallery_method(method)
        pairs.append((coupling, method))
    return pairs


def run_cell(pipe, readout, prompt, coupling, method, k, seeds, steps, guidance) -> dict:
    """One batched call: the galleries of ``seeds`` (gallery s from seed s); rows and costs."""
    from couplednoise import latents_for
    from couplednoise.eval.metrics.pairwise import pairwise_l2
    from couplednoise.pipelines.baselines import count_evaluations, sample_gallery

    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    start = time.perf_counter()
    with count_evaluations(pipe) as count:
        latents = latents_for(
            pipe, coupling, num_images_per_prompt=k, num_prompts=len(seeds), generator=generators
        )
        images = sample_gallery(
            pipe,
            [prompt] * len(seeds),
            latents,
            method,
            num_images_per_prompt=k,
            generator=generators,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="pt",
        ).images
    seconds = time.perf_counter() - start
    rows = []
    for s in range(len(seeds)):
        gallery = images[s * k : (s + 1) * k].float().cpu()
        rows.append({**readout(pipe, gallery, prompt), "l2_diversity": float(pairwise_l2(gallery))})
    cost = {**count.per_image(len(seeds) * k), "seconds": seconds / len(seeds)}
    return {"rows": rows, "cost": cost}


def cell_key(model: str, k: int, label: str, prompt: str, chunk: list[int]) -> str:
    return json.dumps([model, k, label, prompt, chunk[0], chunk[-1], len(chunk)])


def load_partial(path: Path, config: dict) -> dict:
    """Finished cells of an earlier run with the same configuration (else none)."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("config") == config:
            return saved["cells"]
    return {}


def summarise(results: dict, args: argparse.Namespace) -> list[dict]:
    """Records per (model, K, method, metric): mean, CI, paired difference to independent; and
    per (model, K, method) the costs."""
    records = []
    for model in args.models:
        for k in args.sizes:
            base = results[(model, k, "independent")]
            for label in args.methods:
                rows, costs = results[(model, k, label)]
                for metric in METRICS:
                    values = torch.tensor([r[metric] for r in rows], dtype=torch.float64)
                    mean, half = t_interval(values)
                    record = {"model": model, "K": k, "method": label, "metric": metric}
                    record.update(mean=mean, ci=half)
                    if label != "independent":
                        diff = values - torch.tensor(
                            [r[metric] for r in base[0]], dtype=torch.float64
                        )
                        record["diff"], record["diff_ci"] = t_interval(diff)
                    records.append(record)
                cost = {key: sum(c[key] for c in costs) / len(costs) for key in COSTS}
                records.append({"model": model, "K": k, "method": label, "metric": "cost", **cost})
                records.extend(detail_records(rows, base[0], model, k, label))
    return records


def detail_keys(rows: list[dict]) -> list[str]:
    """The readout's numbers beyond ``METRICS`` (per-attribute coverage, fidelity), in order."""
    return list(dict.fromkeys(key for row in rows for key in row if key not in METRICS))


def detail_records(rows: list[dict], base: list[dict], model: str, k: int, label: str):
    """Mean, CI and paired difference to independent of each detail, over the galleries that
    have it (an attribute's coverage exists only where the prompt leaves it open)."""
    for key in detail_keys(rows):
        pairs = [(r[key], b[key]) for r, b in zip(rows, base) if key in r and key in b]
        mean, half = t_interval([a for a, _ in pairs])
        record = {"model": model, "K": k, "method": label, "metric": key, "mean": mean, "ci": half}
        if label != "independent":
            record["diff"], record["diff_ci"] = t_interval([a - b for a, b in pairs])
        yield record


def contrasts(results: dict, args: argparse.Namespace) -> list[dict]:
    """The paired differences a - b of ``CONTRASTS`` that were run, per model, K and metric."""
    out = []
    for model in args.models:
        for k in args.sizes:
            for a, b in CONTRASTS:
                if (model, k, a) not in results or (model, k, b) not in results:
                    continue
                for metric in METRICS:
                    left = [r[metric] for r in results[(model, k, a)][0]]
                    right = [r[metric] for r in results[(model, k, b)][0]]
                    diff, half = t_interval([x - y for x, y in zip(left, right)])
                    out.append(
                        {"model": model, "K": k, "a": a, "b": b, "metric": metric}
                        | {"diff": diff, "ci": half}
                    )
    return out


def _cell(record: dict, digits: int = 3) -> str:
    return f"{record['mean']:.{digits}f} ± {record['ci']:.{digits}f}"


def _diff(record: dict, digits: int = 3) -> str:
    return (
        f"{record['diff']:+.{digits}f} ± {record['diff_ci']:.{digits}f}"
        if "diff" in record
        else "-"
    )


def markdown(
    records: list[dict], pairs: list[dict], args: argparse.Namespace, settings: dict
) -> str:
    lines = [
        f"Baselines study: {len(args.seeds)} seeds x {len(args.prompts)} prompts per cell; "
        "mean ± 95% CI, paired differences to independent noise (same seeds). Coverage: "
        "fraction of the best possible (1.0). Cost: denoiser evaluations per image, forward / "
        "backward (a guided step counts 2), and seconds per gallery (measured on a shared CPU).",
    ]
    by_key = {(r["model"], r["K"], r["method"], r["metric"]): r for r in records}
    for model in args.models:
        steps, guidance = settings[model]["steps"], settings[model]["guidance"]
        for k in args.sizes:
            lines += [
                "",
                f"**{model}, K = {k}** ({steps} steps, guidance {guidance})",
                "",
                "| method | evaluations fwd / bwd | s / gallery | attribute coverage | vs indep. "
                "| scene coverage | vs indep. | alignment | pixel diversity | vs indep. |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for label in args.methods:
                cost = by_key[(model, k, label, "cost")]
                cells = [
                    f"{cost['forward']:.0f} / {cost['backward']:.0f}",
                    f"{cost['seconds']:.3f}",
                ]
                for metric in METRICS:
                    record = by_key[(model, k, label, metric)]
                    cells.append(_cell(record))
                    if metric != "alignment":
                        cells.append(_diff(record))
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += detail_tables(records, args)
    if pairs:
        lines += [
            "",
            "Paired contrasts a - b (same seeds and prompts), mean ± 95% CI:",
            "",
            "| model | K | a | b | attribute coverage | scene coverage | pixel diversity |",
            "|---|---|---|---|---|---|---|",
        ]
        by_pair = {(p["model"], p["K"], p["a"], p["b"], p["metric"]): p for p in pairs}
        seen = dict.fromkeys((p["model"], p["K"], p["a"], p["b"]) for p in pairs)
        for model, k, a, b in seen:
            cells = [
                f"{by_pair[(model, k, a, b, m)]['diff']:+.3f} ± {by_pair[(model, k, a, b, m)]['ci']:.3f}"
                for m in ("attr_cov", "scene_cov", "l2_diversity")
            ]
            lines.append(f"| {model} | {k} | {a} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_tables(records: list[dict], args: argparse.Namespace) -> list[str]:
    """Per model and K: each detail (per-attribute coverage, fidelity) by method, and vs indep."""
    by_key = {(r["model"], r["K"], r["method"], r["metric"]): r for r in records}
    lines = []
    for model in args.models:
        for k in args.sizes:
            keys = [
                r["metric"]
                for r in records
                if (r["model"], r["K"], r["method"]) == (model, k, "independent")
                and r["metric"] not in (*METRICS, "cost")
            ]
            if not keys:
                continue
            lines += [
                "",
                f"Details, {model}, K = {k}: mean ± CI (paired difference to independent ± CI)",
                "",
                "| method | " + " | ".join(keys) + " |",
                "|---|" + "---|" * len(keys),
            ]
            for label in args.methods:
                cells = []
                for key in keys:
                    record = by_key[(model, k, label, key)]
                    cell = _cell(record, 4 if key == "scene_rms" else 3)
                    if "diff" in record:
                        cell += f" ({_diff(record, 4 if key == 'scene_rms' else 3)})"
                    cells.append(cell)
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def short_label(label: str) -> str:
    """A method label for the figure ("independent+cads:tau1=0.42,tau2=0.65" is long)."""
    return label.replace(CADS_LAB_WINDOW, "cads[lab window]").replace("independent", "indep.")


def figure(records: list[dict], args: argparse.Namespace, path: Path) -> None:
    """Per model and K: coverage and diversity by method, and coverage against cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = [(m, k) for m in args.models for k in args.sizes]
    fig, axes = plt.subplots(len(blocks), 4, figsize=(19, 4.4 * len(blocks)), squeeze=False)
    by_key = {(r["model"], r["K"], r["method"], r["metric"]): r for r in records}
    labels = [short_label(label) for label in args.methods]
    colours = [f"C{i % 10}" for i in range(len(args.methods))]
    x = list(range(len(args.methods)))
    for row, (model, k) in zip(axes, blocks):
        for ax, metric in zip(row[:3], ("attr_cov", "scene_cov", "l2_diversity")):
            values = [by_key[(model, k, label, metric)] for label in args.methods]
            ax.bar(
                x,
                [v["mean"] for v in values],
                yerr=[v["ci"] for v in values],
                capsize=3,
                color=colours,
            )
            low = min(v["mean"] - v["ci"] for v in values)
            high = max(v["mean"] + v["ci"] for v in values)
            ax.set_ylim(low - 0.15 * (high - low), high + 0.15 * (high - low))
            ax.set_xticks(x, labels, rotation=55, ha="right", fontsize=7)
            ax.set_title(f"{model}, K={k}: {TITLES[metric]}", fontsize=9)
        ax = row[3]
        for i, label in enumerate(args.methods):
            cost = by_key[(model, k, label, "cost")]
            cov = by_key[(model, k, label, "attr_cov")]
            evaluations = cost["forward"] + cost["backward"] + 0.15 * (i - len(x) / 2)  # jitter
            ax.errorbar(
                evaluations,
                cov["mean"],
                yerr=cov["ci"],
                marker="o",
                capsize=3,
                color=colours[i],
                label=labels[i],
            )
        ax.set_xlabel("denoiser evaluations per image, forward + backward (jittered)")
        ax.set_title(f"{model}, K={k}: attribute coverage vs cost", fontsize=9)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"{len(args.seeds)} seeds x {len(args.prompts)} prompts, mean and 95% CI")
    fig.tight_layout()
    save_figure(fig, path)


def output_stem(models: list[str]) -> str:
    """File stem of a run's outputs: baselines_study for the lab alone (the documented table),
    else suffixed by the models ("baselines_study_learned-lab")."""
    if models == ["lab"]:
        return "baselines_study"
    return "baselines_study_" + "+".join(re.sub(r"[^\w.=-]+", "_", m) for m in models)


def run(args: argparse.Namespace) -> int:
    from couplednoise.pipelines.builtin import builtin_model, spec_name

    pairs = check_arguments(args)
    first = STUDY_MODELS[spec_name(args.models[0])]
    args.prompts = list(args.prompts or first.prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = output_stem(args.models)
    partial_path = args.out / f"{stem}.partial.json"
    config = study_args(args)
    cells = load_partial(partial_path, config)
    results: dict = {}
    settings: dict = {}
    chunks = [args.seeds[i : i + SEED_CHUNK] for i in range(0, len(args.seeds), SEED_CHUNK)]
    for model in args.models:
        entry = builtin_model(model)
        study_model = STUDY_MODELS[spec_name(model)]
        pipe = entry.load(model)
        pipe.set_progress_bar_config(disable=True)
        for prompt in args.prompts:
            study_model.check(pipe, prompt)
        steps = args.steps or int(entry.defaults["steps"])
        guidance = args.guidance if args.guidance is not None else entry.defaults["guidance"]
        settings[model] = {"steps": steps, "guidance": guidance}
        for coupling, method in pairs:  # warm caches (scene banks, kernels) before any timing
            run_cell(
                pipe, study_model.readout, args.prompts[0], coupling, method, 2, [0], 2, guidance
            )
        jobs = [
            (k, prompt, chunk, label, pair)
            for k in args.sizes
            for prompt in args.prompts
            for chunk in chunks
            for label, pair in zip(args.methods, pairs)
        ]
        for k, prompt, chunk, label, (coupling, method) in tqdm(
            jobs, desc=f"baselines study ({model})", unit="cell"
        ):
            key = cell_key(model, k, label, prompt, chunk)
            if key not in cells:
                cells[key] = run_cell(
                    pipe, study_model.readout, prompt, coupling, method, k, chunk, steps, guidance
                )
                write_text(partial_path, json.dumps({"config": config, "cells": cells}))
            rows, costs = results.setdefault((model, k, label), ([], []))
            rows.extend(cells[key]["rows"])
            costs.append(cells[key]["cost"])
    records = summarise(results, args)
    pair_records = contrasts(results, args)
    table = markdown(records, pair_records, args, settings)
    figure(records, args, args.out / f"{stem}.png")
    write_text(args.out / f"{stem}.md", table + "\n")
    write_text(
        args.out / f"{stem}.json",
        json.dumps(
            {
                "args": study_args(args),
                "settings": settings,
                "records": records,
                "contrasts": pair_records,
            },
            indent=1,
        ),
    )
    partial_path.unlink(missing_ok=True)
    print(table)
    return 0
