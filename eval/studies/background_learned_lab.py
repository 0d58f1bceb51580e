"""The fixed-object task on the learned lab: subspace coupling vs SDEdit and blended inpainting.

    couplednoise study background-learned-lab     # docs/background_learned_lab_study.{md,json,png}
    couplednoise study background-learned-lab --references 48 --prompts empty object

References are held-out composites (Fashion-MNIST test images, held-out texture rows): reference
i is ``sample_composites(1, "test")`` drawn from seed ``--reference-seed`` + i; its attributes are
the codes it was rendered from (ground truth, not a classifier's reading) and its object mask is
the object's opacity > 0.5. Each reference is DDIM-inverted (``invert``: guidance 1, ``--steps``
steps) once per gallery prompt, conditioned on that prompt (``--inversion-prompt matched``): of
the reference's full description, its object prompt and the empty prompt, the matched one
reconstructs the object region best under each gallery prompt (docs/learned_lab.md).

For each gallery prompt (``empty``: every attribute open; ``object``: the reference's object,
colour and position named, the background open; ``object-not-bg``: the object prompt with the
reference's background as the negative prompt, "a thing on brick") and reference, K-image galleries, every method
from the same seed (``--seed`` + i: paired across methods):
- ``subspace``: ``Subspace(mask dilated by d px, share, shared=x_T)`` for each share x dilation
  (share 0 is plain independent noise whatever the dilation: run once, ``independent``);
- ``inversion``: the reconstruction from x_T with the gallery prompt (one image, K times);
- ``sdedit``: ``LearnedLabImg2ImgPipeline`` at each ``--sdedit`` strength;
- ``inpaint``: ``LearnedLabInpaintPipeline`` with the base model, the background repainted
  (strength 1), the object region blended from the reference.
Readout by the committed classifiers against the reference's true attributes: object kept
(object, colour, position), kept on a new background, distinct backgrounds (all K images),
``goal`` (1 if a gallery keeps the object on a new background in >= 80% of its images AND
shows >= 3 backgrounds) and masked fidelity (pixel RMS in [0, 1] inside the object mask against
the reference, mean over the gallery). Means with 95% t-intervals over references, and paired
differences of every method to the best subspace setting (highest mean kept-on-new-background)
on the same references.

Resumable: each reference's readout is written (atomically) to ``--cache`` as it finishes and
reused by a rerun with the same settings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from couplednoise.eval.cli.options import (
    MAX_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    float_in,
    float_list,
    int_in,
    int_list,
)
from couplednoise.eval.runs.atomic import save_figure, write_text
from couplednoise.eval.runs.stats import t_interval
from couplednoise.eval.runs.tables import format_pm
from couplednoise.eval.runs.tables import markdown_table as md_table
from couplednoise.eval.studies.common import study_args
from couplednoise.pipelines.learned_lab.world import ATTRIBUTES

NAME = "background_learned_lab_study"
METRICS = ("object_kept", "kept_on_new_background", "distinct_backgrounds", "goal", "masked_rms")
TITLES = {
    "object_kept": "object kept",
    "kept_on_new_background": "kept on a new background",
    "distinct_backgrounds": "distinct backgrounds",
    "goal": "goal met (>= 80% kept on new bg, >= 3 bgs)",
    "masked_rms": "masked pixel RMS",
}
PROMPT_KINDS = ("empty", "object", "object-not-bg")
PROMPT_MEANING = {
    "empty": "every attribute open",
    "object": "the reference's object, colour and position named, the background open",
    "object-not-bg": "the object prompt, with the reference's background as the negative prompt",
}
GALLERY_PROMPT = {"empty": "empty", "object": "object", "object-not-bg": "object"}
NEGATIVE_PROMPT = {"object-not-bg": "background"}  # the other kinds: no negative prompt
INVERSION_PROMPTS = ("matched", "full", "object", "empty")
MASK_THRESHOLD = 0.5  # object mask = opacity > this
GOAL_KEPT, GOAL_BACKGROUNDS = 0.8, 3
DILATION_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:cyan", "tab:olive", "tab:brown")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="learned-lab", help="learned-lab spec")
    parser.add_argument(
        "--references", type=int_in(2, 100_000), default=32, help="held-out references"
    )
    parser.add_argument(
        "--reference-seed", type=int_in(0, MAX_SEED), default=0, help="seed of reference 0"
    )
    parser.add_argument(
        "--shares", type=float_list(0.0, 1.0), default=[0.0, 0.5, 0.9, 1.0], help="share lambdas"
    )
    parser.add_argument(
        "--dilations", type=int_list(0, 16), default=[0, 1, 3], help="dilations in pixels"
    )
    parser.add_argument(
        "--sdedit", type=float_list(0.0, 1.0), default=[0.5, 0.8], help="SDEdit strengths"
    )
    parser.add_argument(
        "--prompts",
        nargs="+",
        choices=PROMPT_KINDS,
        default=["empty"],
        help="gallery prompts: empty (all open), object (object, colour, position named), "
        "object-not-bg (the object prompt, the reference's background as negative prompt)",
    )
    parser.add_argument(
        "--inversion-prompt",
        choices=INVERSION_PROMPTS,
        default="matched",
        help="what the inversion is conditioned on: the gallery's prompt (matched, default), the "
        "reference's full description, its object, or nothing",
    )
    parser.add_argument(
        "-n", "--num-images", type=int_in(2, MAX_IMAGES), default=8, help="images per gallery"
    )
    parser.add_argument(
        "--seed", type=int_in(0, MAX_SEED), default=0, help="gallery seed of reference 0"
    )
    parser.add_argument(
        "--steps", type=int_in(1, MAX_STEPS), default=25, help="sampling and inversion steps"
    )
    parser.add_argument(
        "--guidance",
        type=float_in(0.0, 100.0),
        default=5.0,
        help="guidance of the object prompt (the empty prompt is unguided: cond = uncond)",
    )
    parser.add_argument(
        "--threads",
        type=int_in(1, 256),
        default=1,
        help="torch CPU threads (1: on a loaded machine two were 3-15x slower)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the outputs")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("runs/background-learned-lab"),
        help="folder of per-reference results (resume)",
    )


# --- references ---------------------------------------------------------------------------------


def references(count: int, seed: int) -> list:
    """``count`` held-out composites, reference i drawn from seed ``seed + i`` (so a larger
    count keeps the first ones)."""
    from couplednoise.pipelines.learned_lab.world import sample_composites

    return [
        sample_composites(1, "test", generator=torch.Generator().manual_seed(seed + i))
        for i in range(count)
    ]


def reference_prompts(attributes: dict[str, str]) -> dict[str, str]:
    """The prompts of one reference: full description, object only, empty, and its background
    alone ("a thing on brick", a negative prompt)."""
    from couplednoise.pipelines.learned_lab.prompts import prompt_of
    from couplednoise.pipelines.learned_lab.world import OBJECT_ATTRIBUTES

    return {
        "full": prompt_of(attributes),
        "object": prompt_of({k: attributes[k] for k in OBJECT_ATTRIBUTES}),
        "empty": "",
        "background": prompt_of({"background": attributes["background"]}),
    }


def method_labels(args: argparse.Namespace) -> list[str]:
    """Every gallery of a (reference, prompt), in table order."""
    labels = ["independent"] if 0.0 in args.shares else []
    labels += [
        f"subspace:share={s:g},dilation={d}" for s in args.shares if s > 0 for d in args.dilations
    ]
    labels.append("inversion")
    labels += [f"sdedit:strength={s:g}" for s in args.sdedit]
    return [*labels, "inpaint"]


def check_args(args: argparse.Namespace, refs: list) -> None:
    """Everything that can be wrong, before the model loads: strengths vs steps, masks."""
    from couplednoise.pipelines.background import make_task
    from couplednoise.pipelines.learned_lab.editing import check_strength
    from couplednoise.pipelines.learned_lab.world import SIZE

    for strength in args.sdedit:
        check_strength(strength, args.steps)
    for i, ref in enumerate(refs):
        mask = (ref.masks[0] > MASK_THRESHOLD).float()
        for d in args.dilations:
            try:
                make_task(ref.images, mask, (SIZE, SIZE), (SIZE, SIZE), dilate=d)
            except ValueError as error:
                raise ValueError(f"reference {i}: {error}") from None


def cache_key(args: argparse.Namespace) -> str:
    """A digest of every setting a reference's readout depends on, the weights (denoiser and
    classifier) included."""
    from couplednoise.pipelines.learned_lab.load import weights_fingerprint

    keep = ("model", "reference_seed", "shares", "dilations", "sdedit", "inversion_prompt")
    keep += ("num_images", "seed", "steps", "guidance")
    settings = {k: getattr(args, k) for k in keep}
    data = json.dumps({**settings, "weights": weights_fingerprint(args.model)}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


# --- one reference ------------------------------------------------------------------------------


def gallery_metrics(images: torch.Tensor, ref, attributes: dict, classifier) -> dict[str, float]:
    """The readout of one gallery [K, 3, 32, 32] against its reference."""
    from couplednoise.pipelines.learned_lab.readout import fixed_object_readout

    readout = fixed_object_readout(images, classifier, reference=attributes)
    inside = (ref.masks[0] > MASK_THRESHOLD).bool()
    error = (images - ref.images).pow(2)[:, :, inside]  # [K, 3, M]
    rms = error.flatten(1).mean(1).sqrt().mean()
    new, distinct = readout.kept_on_new_background, readout.distinct_backgrounds
    return {
        "object_kept": readout.object_kept,
        "kept_on_new_background": new,
        "distinct_backgrounds": float(distinct),
        "goal": float(new >= GOAL_KEPT and distinct >= GOAL_BACKGROUNDS),
        "masked_rms": float(rms),
    }


def measure(models, ref, args: argparse.Namespace, seed: int, kinds) -> dict:
    """{prompt kind: {label: metrics}} of one reference, and its inversion's reconstruction."""
    from couplednoise.pipelines.background import (
        Sampling,
        inpaint_gallery,
        make_task,
        reconstruction_gallery,
        sdedit_gallery,
        subspace_gallery,
    )
    from couplednoise.pipelines.inversion import invert
    from couplednoise.pipelines.learned_lab.world import SIZE, describe

    pipe, sampler, img2img, inpaint, classifier = models
    attributes = describe(ref.codes)[0]
    prompts = reference_prompts(attributes)
    mask = (ref.masks[0] > MASK_THRESHOLD).float()
    grid = (SIZE, SIZE)
    tasks = {d: make_task(ref.images, mask, grid, grid, dilate=d) for d in {0, *args.dilations}}
    noises = {}
    out: dict = {"attributes": attributes, "prompts": {}}
    for kind in kinds:
        prompt = prompts[GALLERY_PROMPT[kind]]
        inversion = args.inversion_prompt
        source = prompts[GALLERY_PROMPT[kind] if inversion == "matched" else inversion]
        if source not in noises:
            noises[source] = invert(
                pipe, ref.images, prompt=source, num_inference_steps=args.steps, progress=False
            )
        noise = noises[source]
        # The empty prompt against the empty negative prompt: guidance changes nothing.
        guidance = args.guidance if prompt else 1.0
        negative = prompts[NEGATIVE_PROMPT[kind]] if kind in NEGATIVE_PROMPT else None
        sampling = Sampling(args.steps, guidance, negative_prompt=negative)
        common = {"num_images": args.num_images, "seed": seed, "sampling": sampling}
        rows = {}
        for label in method_labels(args):
            method, _, setting = label.partition(":")
            values = dict(item.split("=") for item in setting.split(",")) if setting else {}
            if method == "independent":
                gallery = subspace_gallery(sampler, tasks[0], noise, prompt, share=0.0, **common)
            elif method == "subspace":
                task = tasks[int(values["dilation"])]
                share = float(values["share"])
                gallery = subspace_gallery(sampler, task, noise, prompt, share=share, **common)
            elif method == "inversion":
                gallery = reconstruction_gallery(sampler, tasks[0], noise, prompt, **common)
            elif method == "sdedit":
                strength = float(values["strength"])
                gallery = sdedit_gallery(img2img, tasks[0], prompt, strength=strength, **common)
            else:
                gallery = inpaint_gallery(inpaint, tasks[0], prompt, **common)
            rows[label] = gallery_metrics(gallery.images, ref, attributes, classifier)
        out["prompts"][kind] = rows
    return out


# --- summary ------------------------------------------------------------------------------------


def goal_ceiling(k: int, backgrounds: int, draws: int = 200_000) -> dict[str, float]:
    """What a perfect object keeper scores when each image's background is an independent
    uniform draw (the training law): the mean kept-on-new-background fraction (1 - 1/#values)
    and the probability that a gallery meets the goal (Monte Carlo, seeded)."""
    draw = torch.randint(backgrounds, (draws, k), generator=torch.Generator().manual_seed(0))
    new = (draw != 0).float().mean(1)  # background 0 plays the reference's
    distinct = torch.zeros(draws, backgrounds).scatter_(1, draw, 1.0).sum(1)
    met = (new >= GOAL_KEPT) & (distinct >= GOAL_BACKGROUNDS)
    return {"kept_on_new_background": 1 - 1 / backgrounds, "goal": float(met.float().mean())}


def best_subspace(rows: dict, labels: list[str]) -> str:
    """The subspace setting with the highest mean kept-on-new-background (then more
    backgrounds), the reference every method is paired against."""
    candidates = [label for label in labels if label.startswith("subspace")]
    if not candidates:
        candidates = labels

    def score(label):
        return tuple(
            sum(r[label][m] for r in rows) / len(rows)
            for m in ("kept_on_new_background", "distinct_backgrounds")
        )

    return max(candidates, key=score)


def summarise(per_ref: list[dict], args: argparse.Namespace, kind: str) -> dict:
    """Records of every method for one prompt kind: mean and CI of each metric, and the paired
    difference to the best subspace setting."""
    rows = [r["prompts"][kind] for r in per_ref]
    labels = method_labels(args)
    best = best_subspace(rows, labels)
    records = []
    for label in labels:
        method, _, setting = label.partition(":")
        record = {"label": label, "method": method}
        record.update({k: float(v) for k, v in (i.split("=") for i in setting.split(",") if i)})
        for metric in METRICS:
            values = torch.tensor([r[label][metric] for r in rows])
            record[metric], record[f"{metric}_ci"] = t_interval(values)
            if label != best:
                diff = values - torch.tensor([r[best][metric] for r in rows])
                record[f"{metric}_diff"], record[f"{metric}_diff_ci"] = t_interval(diff)
        records.append(record)
    return {"best_subspace": best, "records": records}


def _cell(mean: float, half: float, decimals: int, signed: bool = False) -> str:
    return format_pm(mean, half, decimals, signed=signed)


def markdown(
    summaries: dict, args: argparse.Namespace, n: int, seconds: list, ceiling: dict
) -> str:
    known = [t for t in seconds if t is not None]
    timing = (
        f"Compute time {sum(known) / 60:.0f} min ({sum(known) / len(known):.0f} s a reference)."
        if known and len(known) == len(seconds)
        else "Compute time: not recorded for every reference (see the study's log)."
    )
    parts = [
        f"Learned-lab fixed-object study: {n} held-out references (reference seeds "
        f"{args.reference_seed}..{args.reference_seed + n - 1}), K = {args.num_images}, "
        f"{args.steps} DDIM steps, inversion ({args.steps} steps, guidance 1) conditioned on the "
        f"{args.inversion_prompt} prompt, object prompt at guidance {args.guidance:g}; gallery seeds "
        f"{args.seed}..{args.seed + n - 1} (paired across methods). Mean ± 95% t-interval over "
        f"references; Δ = paired difference to the best subspace setting. {timing} "
        f"A perfect object keeper whose backgrounds are independent "
        f"uniform draws scores {ceiling['kept_on_new_background']:.3f} kept on a new background "
        f"and meets the goal in {ceiling['goal']:.3f} of its galleries."
    ]
    for kind, summary in summaries.items():
        best = summary["best_subspace"]
        what = PROMPT_MEANING[kind]
        parts.append(f"**Prompt: {kind}** ({what}); best subspace setting: `{best}`.")
        headers = ["method", "object kept", "kept on new bg", "Δ", "distinct bgs", "Δ"]
        headers += ["goal met", "masked RMS", "Δ"]
        table = []
        for r in summary["records"]:

            def diff(m, d, r=r):
                key = f"{m}_diff"
                return _cell(r[key], r[f"{key}_ci"], d, signed=True) if key in r else "-"

            table.append(
                [
                    f"`{r['label']}`",
                    _cell(r["object_kept"], r["object_kept_ci"], 2),
                    _cell(r["kept_on_new_background"], r["kept_on_new_background_ci"], 2),
                    diff("kept_on_new_background", 2),
                    _cell(r["distinct_backgrounds"], r["distinct_backgrounds_ci"], 2),
                    diff("distinct_backgrounds", 2),
                    _cell(r["goal"], r["goal_ci"], 2),
                    _cell(r["masked_rms"], r["masked_rms_ci"], 3),
                    diff("masked_rms", 3),
                ]
            )
        parts.append(md_table(headers, table))
    return "\n\n".join(parts)


def figure(summaries: dict, args: argparse.Namespace, n: int, path: Path) -> None:
    """Kept on a new background (y) vs distinct backgrounds (x), one point per method, one
    panel per prompt; the goal's region shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(summaries)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.6 * len(kinds) + 2.4, 4.8), squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        records = summaries[kind]["records"]

        def point(r, axis=axis, **style):
            axis.errorbar(
                r["distinct_backgrounds"],
                r["kept_on_new_background"],
                xerr=r["distinct_backgrounds_ci"],
                yerr=r["kept_on_new_background_ci"],
                capsize=2,
                **style,
            )

        for j, d in enumerate(args.dilations):
            colour = DILATION_COLOURS[j % len(DILATION_COLOURS)]
            mine = [r for r in records if r["method"] == "subspace" and r["dilation"] == d]
            mine.sort(key=lambda r: r["share"])
            axis.plot(
                [r["distinct_backgrounds"] for r in mine],
                [r["kept_on_new_background"] for r in mine],
                "-",
                alpha=0.5,
                color=colour,
            )
            for i, r in enumerate(mine):
                point(r, marker="o", color=colour, label=f"subspace, dilation {d} px"
                      if i == 0 else None)  # fmt: skip
                axis.annotate(f"{r['share']:g}", (r["distinct_backgrounds"],
                              r["kept_on_new_background"]), xytext=(4, 3),
                              textcoords="offset points", fontsize=7)  # fmt: skip
        styles = {
            "independent": {"marker": "s", "color": "gray"},
            "inversion": {"marker": "*", "color": "black", "markersize": 10},
            "sdedit": {"marker": "^", "color": "tab:red"},  # no dilation colour is red
            "inpaint": {"marker": "D", "color": "tab:purple"},
        }
        for method, style in styles.items():
            mine = [r for r in records if r["method"] == method]
            for j, r in enumerate(mine):
                point(r, label=method if j == 0 else None, **style)
                if method == "sdedit":
                    axis.annotate(f"{r['strength']:g}", (r["distinct_backgrounds"],
                                  r["kept_on_new_background"]), xytext=(4, -9),
                                  textcoords="offset points", fontsize=7)  # fmt: skip
        axis.fill_between(
            [GOAL_BACKGROUNDS, 6.3], GOAL_KEPT, 1.03, color="green", alpha=0.12, label="goal"
        )
        ideal = 1 - 1 / len(ATTRIBUTES["background"])
        axis.axhline(ideal, color="gray", ls=":", lw=1, label="perfect keeper, uniform bgs")
        axis.set_xlim(0.7, 6.3)
        axis.set_ylim(-0.03, 1.03)
        axis.set_xlabel(f"distinct backgrounds in a gallery of {args.num_images} (of 6)")
        axis.set_ylabel("object kept on a new background (fraction)")
        axis.set_title(f"prompt: {kind}; labels = share / strength")
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"learned-lab fixed-object task: {n} held-out references, mean and 95% CI")
    fig.tight_layout()
    save_figure(fig, path)


# --- run ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from couplednoise.pipelines.inversion import matching_sampler
    from couplednoise.pipelines.learned_lab import load_classifier, load_learned_lab
    from couplednoise.pipelines.learned_lab.editing import editing_pipelines

    if len(set(args.prompts)) != len(args.prompts):
        raise ValueError(f"--prompts repeats a kind: {args.prompts}")
    torch.set_num_threads(args.threads)
    refs = references(args.references, args.reference_seed)  # no Fashion-MNIST: an error here
    check_args(args, refs)
    pipe = load_learned_lab(args.model)
    sampler = matching_sampler(pipe)
    img2img, inpaint = editing_pipelines(sampler)
    models = (pipe, sampler, img2img, inpaint, load_classifier())
    key = cache_key(args)
    args.cache.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    start, computed = time.perf_counter(), 0.0
    per_ref = []
    for i, ref in enumerate(tqdm(refs, desc="references", unit="ref")):
        path = args.cache / f"{key}_ref{args.reference_seed + i}.json"
        cached = json.loads(path.read_text()) if path.is_file() else {"prompts": {}}
        missing = [k for k in args.prompts if k not in cached["prompts"]]
        if missing:
            began = time.perf_counter()
            fresh = measure(models, ref, args, seed=args.seed + i, kinds=missing)
            seconds = time.perf_counter() - began
            computed += seconds
            prompts = {**cached["prompts"], **fresh["prompts"]}
            cached = {**fresh, "prompts": prompts, "seconds": cached.get("seconds", 0) + seconds}
            write_text(path, json.dumps(cached, indent=1))
        per_ref.append(cached)
    wall = time.perf_counter() - start
    summaries = {kind: summarise(per_ref, args, kind) for kind in args.prompts}
    n = len(refs)
    ceiling = goal_ceiling(args.num_images, len(ATTRIBUTES["background"]))
    table = markdown(summaries, args, n, [r.get("seconds") for r in per_ref], ceiling)
    figure(summaries, args, n, args.out / f"{NAME}.png")
    write_text(args.out / f"{NAME}.md", table + "\n")
    data = {
        "args": study_args(args),
        "wall_seconds_this_run": wall,
        "compute_seconds_this_run": computed,
        "mask": f"object opacity > {MASK_THRESHOLD}",
        "goal": {"kept_on_new_background": GOAL_KEPT, "distinct_backgrounds": GOAL_BACKGROUNDS},
        "ceiling_iid_uniform_backgrounds": ceiling,
        "references": [
            {"seed": args.reference_seed + i, "attributes": r["attributes"]}
            for i, r in enumerate(per_ref)
        ],
        "seconds_per_reference": [r.get("seconds") for r in per_ref],  # None: not recorded
        "summaries": summaries,
        "per_reference": [r["prompts"] for r in per_ref],
    }
    write_text(args.out / f"{NAME}.json", json.dumps(_finite(data), indent=1))
    print(table)
    return 0


def _finite(data):
    """NaN -> None for strict JSON."""
    if isinstance(data, float):
        return None if math.isnan(data) else data
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    return data
