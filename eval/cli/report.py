"""Tables and figures from a batch run's rows; works while the run is still going.

    couplednoise report runs/sd15_coco [--out DIR] [--reference independent] [--max-grids 4]

Writes summary.md (means with 95% CIs per model and coupling, paired differences to the
reference coupling), summary.csv and PNG figures into RUN/report (or --out).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from couplednoise.eval.cli.options import int_in


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's options."""
    parser.add_argument("run_dir", type=Path, help="a batch run folder (couplednoise eval)")
    parser.add_argument("--out", type=Path, help="report folder (default RUN/report)")
    parser.add_argument(
        "--reference",
        help="coupling spec the paired differences are taken against "
        "(default: the run's reference, usually independent)",
    )
    parser.add_argument(
        "--max-grids", type=int_in(0, 10_000), default=4, help="gallery figures per model"
    )


def check_report_folder(out: Path) -> None:
    """ValueError unless ``out`` is new, empty, or an earlier report (its summary.md is ours)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    summary = out / "summary.md"
    try:
        ours = summary.read_text(encoding="utf-8").startswith("# Batch report")
    except (OSError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise ValueError(
            f"--out {out} is a non-empty folder that holds no earlier batch report; choose a new "
            "or empty folder"
        )


def run(args: argparse.Namespace) -> int:
    """Build the report (a user error, e.g. a folder with no rows, exits 2)."""
    from couplednoise.eval.batch.report import build_report

    reference = args.reference
    if reference is not None:
        from couplednoise import get_coupling

        try:
            reference = get_coupling(reference).spec
        except ValueError as error:
            raise ValueError(f"--reference: {error}") from None
    out = args.out if args.out is not None else args.run_dir / "report"
    check_report_folder(out)
    out = build_report(args.run_dir, out, reference=reference, max_grids=args.max_grids)
    print((out / "summary.md").read_text())
    print(f"report -> {out}")
    return 0
