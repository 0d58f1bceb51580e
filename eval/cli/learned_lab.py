"""``couplednoise learned-lab``: train and export the learned lab (a small diffusion model).

    couplednoise learned-lab train --out runs/learned_lab            # resumes after a kill
    couplednoise learned-lab classifiers --out runs/learned_lab_cls
    couplednoise learned-lab export --run runs/learned_lab --classifiers runs/learned_lab_cls
    couplednoise learned-lab export --classifiers runs/learned_lab_cls   # a new classifier only
    couplednoise learned-lab check --guidance 5                      # quality bar, memorisation

Training is seeded and resumable: rerunning the same command continues from the last checkpoint
to the bit-identical state an uninterrupted run reaches (same thread count).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from couplednoise.eval.cli.options import float_in, int_in, seed_list

MAX_TRAIN_STEPS = 10_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=type(parser)
    )
    train = sub.add_parser("train", help="train (or resume) the denoiser")
    train.add_argument("--out", type=Path, required=True, help="run folder (checkpoint.pt)")
    train.add_argument("--steps", type=int_in(1, MAX_TRAIN_STEPS), default=6000)
    train.add_argument("--batch-size", type=int_in(1, 4096), default=32)
    train.add_argument("--lr", type=float_in(1e-7, 1.0), default=5e-4)
    train.add_argument("--seed", type=int_in(0, 2**63 - 1), default=0)
    train.add_argument("--checkpoint-every", type=int_in(1, MAX_TRAIN_STEPS), default=200)
    _add_common(train)

    classifiers = sub.add_parser("classifiers", help="train the ground-truth classifiers")
    classifiers.add_argument("--out", type=Path, required=True, help="run folder")
    classifiers.add_argument("--steps", type=int_in(1, MAX_TRAIN_STEPS), default=5000)
    classifiers.add_argument("--width", type=int_in(4, 512), default=48, help="CNN base width")
    classifiers.add_argument("--batch-size", type=int_in(1, 4096), default=64)
    classifiers.add_argument(
        "--object-steps",
        type=int_in(0, MAX_TRAIN_STEPS),
        default=6000,
        help="steps of the object-crop CNN after the whole-image CNN (0: none)",
    )
    classifiers.add_argument("--object-width", type=int_in(4, 512), default=32)
    classifiers.add_argument("--object-batch-size", type=int_in(1, 4096), default=128)
    classifiers.add_argument("--seed", type=int_in(0, 2**63 - 1), default=0)
    _add_common(classifiers)

    export = sub.add_parser("export", help="write the committed weights from finished runs")
    export.add_argument(
        "--run", type=Path, help="denoiser run folder (omit it to replace only the classifier)"
    )
    export.add_argument("--classifiers", type=Path, required=True, help="classifier run folder")
    export.add_argument("--weights", type=Path, help="target folder (default: the package's)")
    export.add_argument("--check", type=Path, help="a `check --json` file for the model card")

    check = sub.add_parser("check", help="measure the quality bar and the memorisation check")
    check.add_argument("--weights", type=Path, help="weights folder (default: the package's)")
    check.add_argument("--guidance", type=float_in(0.0, 100.0), default=None)
    check.add_argument("--steps", type=int_in(1, 1000), default=None, help="DDIM steps")
    check.add_argument("--prompts", type=int_in(1, 100_000), default=200)
    check.add_argument("--images-per-prompt", type=int_in(1, 64), default=4)
    check.add_argument("--seeds", type=seed_list, default=seed_list("0"))
    check.add_argument("--json", type=Path, help="write the figures here")
    _add_common(check)

    figures = sub.add_parser("figures", help="training curve and sample grids for the docs")
    figures.add_argument("--weights", type=Path, help="weights folder (default: the package's)")
    figures.add_argument("--guidance", type=float_in(0.0, 100.0), default=None)
    figures.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs")
    figures.add_argument("--seed", type=int_in(0, 2**63 - 1), default=0)
    _add_common(figures)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int_in(1, 256),
        default=2,
        help="torch CPU threads (on a busy machine 1 can be several times faster than 2)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    if hasattr(args, "threads"):
        torch.set_num_threads(args.threads)
    actions = {
        "train": _train,
        "classifiers": _classifiers,
        "export": _export,
        "check": _check,
        "figures": _figures,
    }
    return actions[args.action](args)


def _train(args: argparse.Namespace) -> int:
    from couplednoise.pipelines.learned_lab.train import TrainConfig, train_denoiser

    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        log_every=min(25, args.checkpoint_every),
    )
    state = train_denoiser(config, args.out, progress=not args.no_progress)
    last = state.losses[-1]["loss"] if state.losses else float("nan")
    print(f"trained to step {state.step} (loss {last:.4f}): {args.out}")
    return 0


def _classifiers(args: argparse.Namespace) -> int:
    from couplednoise.pipelines.learned_lab.classifier import ClassifierConfig, train_classifier

    config = ClassifierConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        width=args.width,
        object_steps=args.object_steps,
        object_width=args.object_width,
        object_batch_size=args.object_batch_size,
    )
    state = train_classifier(config, args.out, progress=not args.no_progress)
    print(json.dumps({"step": state.step, "test_accuracy": state.accuracy}, indent=1))
    return 0


def _export(args: argparse.Namespace) -> int:
    from couplednoise.pipelines.learned_lab.load import export_weights

    check = json.loads(args.check.read_text()) if args.check else None
    target = export_weights(args.run, args.classifiers, args.weights, check=check)
    print(f"wrote {target}")
    return 0


def _check(args: argparse.Namespace) -> int:
    import torch

    from couplednoise.eval.runs.stats import mean_ci
    from couplednoise.pipelines.learned_lab.load import (
        classifier_accuracy,
        load_classifier,
        load_learned_lab,
        training_record,
    )
    from couplednoise.pipelines.learned_lab.quality import (
        prompt_alignment,
        random_prompts,
        training_bank,
    )
    from couplednoise.pipelines.learned_lab.readout import nearest_distances
    from couplednoise.pipelines.learned_lab.train import TrainConfig
    from couplednoise.pipelines.learned_lab.world import ATTRIBUTES, sample_composites

    spec = f"learned-lab:weights={args.weights}" if args.weights else "learned-lab"
    pipe = load_learned_lab(spec)
    pipe.set_progress_bar_config(disable=args.no_progress)
    classifier = load_classifier(args.weights)
    rows, samples = [], []
    for seed in args.seeds:
        prompts = random_prompts(args.prompts, seed=seed)
        part, images = prompt_alignment(
            pipe, classifier, prompts, images_per_prompt=args.images_per_prompt,
            seed=seed * 1_000_003, guidance_scale=args.guidance,
            num_inference_steps=args.steps,
        )  # fmt: skip
        rows += part
        samples.append(images)
    samples = torch.cat(samples)

    def ci(values):
        if not values:
            return None
        mean, low, high = mean_ci(values)
        return {"mean": mean, "low": low, "high": high, "n": len(values)}

    report = {
        "guidance": args.guidance if args.guidance is not None else pipe_default("guidance"),
        "steps": args.steps if args.steps is not None else pipe_default("steps"),
        "prompts": len(rows),
        "images": int(samples.shape[0]),
        "aligned_all_named": ci([r["aligned"] for r in rows]),
        "per_attribute": {name: ci([r[name] for r in rows if name in r]) for name in ATTRIBUTES},
        "classifier_accuracy": classifier_accuracy(args.weights),
    }
    config = TrainConfig.from_dict(training_record(args.weights)["denoiser"]["config"])
    every = max(1, config.steps * config.batch_size // 20_000)
    bank = training_bank(config, every=every)
    heldout = sample_composites(
        samples.shape[0], "test", generator=torch.Generator().manual_seed(12345)
    ).images
    d_samples = nearest_distances(samples, bank)
    d_heldout = nearest_distances(heldout, bank)
    threshold = float(d_heldout.quantile(0.01))
    report["memorisation"] = {
        "bank": int(bank.shape[0]),
        "sample_nn_distance": ci(d_samples.tolist()),
        "heldout_nn_distance": ci(d_heldout.tolist()),
        "heldout_p01": threshold,
        "samples_below_heldout_p01": float((d_samples < threshold).double().mean()),
        "sample_min": float(d_samples.min()),
        "heldout_min": float(d_heldout.min()),
    }
    text = json.dumps(report, indent=1)
    if args.json is not None:
        from couplednoise.eval.runs.atomic import write_text

        write_text(args.json, text + "\n")
    print(text)
    return 0


def pipe_default(name: str) -> float:
    from couplednoise.pipelines.learned_lab.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS

    return {"guidance": DEFAULT_GUIDANCE, "steps": DEFAULT_STEPS}[name]


def _figures(args: argparse.Namespace) -> int:
    """docs/learned_lab_training.png (the loss curve) and learned_lab_samples.png (one row per
    prompt: two held-out composites, then six samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from couplednoise.eval.runs.atomic import save_figure
    from couplednoise.eval.runs.images import image_grid, save_image
    from couplednoise.pipelines.learned_lab.load import load_learned_lab, training_record
    from couplednoise.pipelines.learned_lab.prompts import parse_prompt, prompt_of
    from couplednoise.pipelines.learned_lab.world import ATTRIBUTES, render

    record = training_record(args.weights)["denoiser"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r["step"] for r in record["losses"]], [r["loss"] for r in record["losses"]])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("min-SNR weighted v loss")
    ax.set_title(f"learned lab: training loss (batch {record['config']['batch_size']})")
    fig.tight_layout()
    save_figure(fig, args.out / "learned_lab_training.png")

    spec = f"learned-lab:weights={args.weights}" if args.weights else "learned-lab"
    pipe = load_learned_lab(spec)
    call = {} if args.guidance is None else {"guidance_scale": args.guidance}
    g = torch.Generator().manual_seed(args.seed)
    rows, labels = [], []
    for j in range(6):
        codes = torch.tensor([[j % 7, j % 6, j % 4, (j + 2) % 6]])
        constraints = {n: ATTRIBUTES[n][c] for n, c in zip(ATTRIBUTES, codes[0].tolist())}
        prompt = prompt_of(constraints)
        parse_prompt(prompt)
        real = render(codes.expand(2, -1), "test", generator=g).images
        fake = pipe(prompt, num_images_per_prompt=6, generator=g, output_type="pt", **call).images
        rows.append(torch.nn.functional.interpolate(torch.cat([real, fake]), scale_factor=3))
        labels.append(f"{prompt}: 2 training composites (held-out split), 6 samples")
    save_image(image_grid(rows, labels=labels), args.out / "learned_lab_samples.png")
    print(f"wrote {args.out / 'learned_lab_training.png'}, {args.out / 'learned_lab_samples.png'}")
    return 0
