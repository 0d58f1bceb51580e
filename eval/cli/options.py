"""Options shared by the subcommands, declared once with their checks (argparse ``type=`` functions).

    parser.add_argument("--steps", type=int_in(1, MAX_STEPS))
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0"))
    add_sampling_arguments(parser); add_run_folder_arguments(parser)

Every check raises ``argparse.ArgumentTypeError`` with the bound, so a bad value is reported as one
line by the CLI's error contract before anything loads. The seed grammar is the same everywhere:
"0", "0-3", "0,5,7-8" (distinct, non-negative, at most ``MAX_SEEDS``).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path

# The names pipelines.loading.DTYPES maps to torch dtypes, kept here so argument and config
# checks run without importing torch.
DTYPE_NAMES = ("fp32", "fp16", "bf16", "float32", "float16", "bfloat16")
MAX_SEEDS = 100_000  # galleries per command line; more is a typo (and would exhaust memory)
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed accepts [0, 2**63)
MAX_STEPS = 1000  # diffusers schedulers have 1,000 training timesteps
MAX_IMAGES = 1024  # images in one gallery
MAX_SIDE = 8192  # pixels


def bounded(convert: Callable[[str], float], low: float, high: float) -> Callable[[str], float]:
    """An argparse type: ``convert(text)`` (int or float) within [low, high]; NaN and inf never
    pass, and the message names the value and the bound."""
    kind = "a whole number" if convert is int else "a number"

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not {kind} in [{low}, {high}]")
        return value

    return parse


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an int in [low, high]."""
    return bounded(int, low, high)


def float_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a finite float in [low, high] (NaN and inf are refused)."""
    return bounded(float, low, high)


def comma_list(one: Callable[[str], float]) -> Callable[[str], list]:
    """An argparse type: a comma list of distinct values, each parsed and checked by ``one``."""

    def parse(text: str) -> list:
        values = [one(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} holds no number")
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{text!r} repeats a value")
        return values

    return parse


def int_list(low: int, high: int) -> Callable[[str], list[int]]:
    """An argparse type: a comma list of distinct ints in [low, high], e.g. "2,4,8,16"."""
    return comma_list(int_in(low, high))


def float_list(low: float, high: float) -> Callable[[str], list[float]]:
    """An argparse type: a comma list of distinct finite floats in [low, high], e.g. "0,0.5,1"."""
    return comma_list(float_in(low, high))


def parse_seeds(text: str) -> list[int]:
    """ "0-3" -> [0, 1, 2, 3]; "0,5,7-8" -> [0, 5, 7, 8]; ValueError for anything else.

    Seeds are distinct ints in [0, 2**63); at most ``MAX_SEEDS`` of them (checked before the list
    is built, so a huge range fails at once).
    """
    ranges: list[tuple[int, int]] = []
    total = 0
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"seed {part!r} in {text!r} is not N or N-M (non-negative ints)")
        start, end = int(match[1]), int(match[2] or match[1])
        if end < start:
            raise ValueError(f"seed range {part!r} is descending")
        if end > MAX_SEED:
            raise ValueError(f"seed {end} is too large (seeds are < 2**63)")
        total += end - start + 1
        if total > MAX_SEEDS:
            raise ValueError(f"seeds {text!r} name more than {MAX_SEEDS:,} seeds")
        ranges.append((start, end))
    if not ranges:
        raise ValueError(f"no seeds in {text!r}")
    seeds = [s for start, end in ranges for s in range(start, end + 1)]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {text!r} repeat a seed")
    return seeds


def seed_list(text: str) -> list[int]:
    """An argparse type for ``parse_seeds``."""
    try:
        return parse_seeds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """--guidance, --negative-prompt, --height, --width, --dtype, --device."""
    parser.add_argument(
        "--guidance", type=float_in(0.0, 100.0), help="guidance scale (pipeline default)"
    )
    parser.add_argument("--negative-prompt", help="negative prompt for every gallery")
    parser.add_argument(
        "--height", type=int_in(1, MAX_SIDE), help="pixels (pipeline default if unset)"
    )
    parser.add_argument(
        "--width", type=int_in(1, MAX_SIDE), help="pixels (pipeline default if unset)"
    )
    add_device_arguments(parser)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--dtype, --device."""
    parser.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        help="fp32, fp16 or bf16 (or float32, ...); default fp16 on CUDA",
    )
    parser.add_argument(
        "--device", type=device_name, help="cuda, cuda:1, cpu, mps (default cuda if available)"
    )


def device_name(text: str) -> str:
    """An argparse type: a torch device name of a kind that computes (cpu, cuda[:i], mps, xpu)."""
    if not re.fullmatch(r"(cpu|mps|(cuda|xpu)(:\d+)?)", text.strip().lower()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda, cuda:1 or mps")
    return text.strip().lower()


def add_run_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """--out (required), --overwrite, --no-progress."""
    parser.add_argument("--out", type=Path, required=True, help="run folder to create")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out if it is an earlier run of ours"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
