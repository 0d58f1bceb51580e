"""Command-line options shared by the subcommands that generate images (argparse only)."""

from __future__ import annotations

import argparse
from pathlib import Path

# The names pipelines.loading.DTYPES maps to torch dtypes, kept here so argument and config
# checks run without importing torch.
DTYPE_NAMES = ("fp32", "fp16", "bf16", "float32", "float16", "bfloat16")


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """--guidance, --negative-prompt, --height, --width, --dtype, --device."""
    parser.add_argument("--guidance", type=float, help="guidance scale (pipeline default)")
    parser.add_argument("--negative-prompt", help="negative prompt for every gallery")
    parser.add_argument("--height", type=int, help="pixels (pipeline default if unset)")
    parser.add_argument("--width", type=int, help="pixels (pipeline default if unset)")
    parser.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        help="fp32, fp16 or bf16 (or float32, ...); default fp16 on CUDA",
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu, ... (default cuda if available)")


def add_run_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """--out (required), --overwrite, --no-progress."""
    parser.add_argument("--out", type=Path, required=True, help="run folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
