"""Run a configured batch experiment: galleries x couplings x prompts, scored, resumable.

    couplednoise eval configs/lab_quick.toml
    couplednoise eval configs/sd15_coco.toml --output runs/sd15 --n-prompts 200 --set generation.steps=30
    accelerate launch --multi_gpu --num_processes 8 -m couplednoise eval configs/sd15_coco.toml

The same command resumes an interrupted run. Flags override config entries (``--set`` any
``section.key=value``). Exit codes: 0 done, 2 bad config (nothing ran).
"""

from __future__ import annotations

import argparse
import json

from couplednoise.eval.cli.options import (
    DTYPE_NAMES,
    MAX_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    float_in,
    int_in,
)

# flag -> config key; list-valued flags take comma-separated values.
FLAG_KEYS = {
    "output": "output.dir",
    "prompts": "prompts.source",
    "n_prompts": "prompts.n",
    "num_images": "generation.num_images",
    "seeds_per_prompt": "generation.seeds_per_prompt",
    "seed": "generation.seed",
    "steps": "generation.steps",
    "guidance": "generation.guidance",
    "dtype": "generation.dtype",
    "grids": "output.grids",
    "save_images": "output.save_images",
    "random_weights": "metrics.random_weights",
    "report": "run.report",
}
LIST_FLAGS = {"models": "models", "couplings": "couplings", "metrics": "metrics.names"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``eval`` subcommand's options."""
    parser.add_argument("config", help="experiment config (.toml / .yaml); see configs/")
    parser.add_argument("--output", help="run folder (output.dir)")
    parser.add_argument("--models", help="comma-separated models (local folders, hub ids, lab)")
    parser.add_argument("--couplings", help="comma-separated coupling specs")
    parser.add_argument("--metrics", help="comma-separated metric names (metrics.names)")
    parser.add_argument("--prompts", help="prompt source: builtin, builtin:lab or a file")
    parser.add_argument(
        "--n-prompts", type=int_in(1, 1_000_000), help="prompts sampled from the source"
    )
    parser.add_argument("--num-images", type=int_in(2, MAX_IMAGES), help="images per gallery")
    parser.add_argument(
        "--seeds-per-prompt", type=int_in(1, 10_000), help="galleries per prompt and coupling"
    )
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), help="base seed of the galleries")
    parser.add_argument("--steps", type=int_in(1, MAX_STEPS), help="denoising steps (all models)")
    parser.add_argument("--guidance", type=float_in(0.0, 100.0), help="guidance scale (all models)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES)
    parser.add_argument(
        "--grids", type=int_in(0, 100_000), help="prompts per model whose gallery grids are saved"
    )
    parser.add_argument(
        "--save-images", action=argparse.BooleanOptionalAction, help="save every image"
    )
    parser.add_argument(
        "--random-weights",
        action=argparse.BooleanOptionalAction,
        help="random metric backbones (smoke runs only: the numbers are meaningless)",
    )
    parser.add_argument(
        "--report", action=argparse.BooleanOptionalAction, help="build the report at the end"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config entry (value in TOML syntax), e.g. --set metrics.vendi_q=2",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and count items, no run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def overrides_from(args: argparse.Namespace) -> list[str]:
    """ "key=value" overrides (TOML values) from the flags, then ``--set`` entries."""
    overrides = []
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    for flag, key in LIST_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            entries = [v.strip() for v in value.split(",") if v.strip()]
            overrides.append(f"{key}={json.dumps(entries)}")
    return [*overrides, *args.set]


def run(args: argparse.Namespace) -> int:
    """Validate the config (every check before any model loads), then run or resume it."""
    from couplednoise.eval.batch.config import load_config
    from couplednoise.eval.batch.run import build_items, check_compatible, run_batch

    try:
        config = load_config(args.config, overrides_from(args))
    except TypeError as error:  # a config entry of the wrong type: the user's to fix
        raise ValueError(str(error)) from error
    check_compatible(config.output, config)
    if args.dry_run:
        print(f"config OK: {len(build_items(config))} galleries -> {config.output}")
        return 0
    counts = run_batch(config, progress=not args.no_progress)
    print(
        f"{counts['items']} galleries in {config.output} ({counts['done_before']} done before, "
        f"{counts['computed_here']} computed by this process)"
    )
    return 0
