"""Tables and figures from a batch run's rows; works while the run is still going.

    couplednoise report runs/sd15_coco [--out DIR] [--reference independent] [--max-grids 4]

Writes summary.md (means with 95% CIs per model and coupling, paired differences to the
reference coupling), summary.csv and PNG figures into RUN/report (or --out).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's options."""
    parser.add_argument("run_dir", type=Path, help="a batch run folder (couplednoise eval)")
    parser.add_argument("--out", type=Path, help="report folder (default RUN/report)")
    parser.add_argument(
        "--reference",
        help="coupling spec the paired differences are taken against "
        "(default: the run's reference, usually independent)",
    )
    parser.add_argument("--max-grids", type=int, default=4, help="gallery figures per model")


def run(args: argparse.Namespace) -> int:
    """Build the report; 2 when the folder has no rows."""
    from couplednoise.eval.batch.report import build_report

    reference = args.reference
    if reference is not None:
        from couplednoise import get_coupling

        try:
            reference = get_coupling(reference).spec
        except ValueError as error:
            print(f"error: --reference: {error}")
            return 2
    try:
        out = build_report(args.run_dir, args.out, reference=reference, max_grids=args.max_grids)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    print((out / "summary.md").read_text())
    print(f"report -> {out}")
    return 0
