"""The `couplednoise` command: one entry point dispatching to subcommands.

Each subcommand lives next to the code it runs, as a module exposing
``add_arguments(parser)`` and ``run(args) -> int``; its docstring's first line is its help.
Modules are imported only when their subcommand is chosen, so ``couplednoise --help`` stays fast
and a subcommand's heavy imports (diffusers, open_clip, gradio) happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module implementing it. Registered here, defined beside the code they drive.
SUBCOMMANDS: dict[str, str] = {
    "generate": "couplednoise.eval.cli.generate",
    "demo": "couplednoise.eval.cli.demo",
    "score": "couplednoise.eval.cli.score",
    "eval": "couplednoise.eval.cli.batch",
    "report": "couplednoise.eval.cli.report",
    "background": "couplednoise.eval.cli.background",
}

SUMMARIES: dict[str, str] = {
    "generate": "coupled galleries from a Stable Diffusion checkpoint",
    "demo": "the main job: coupled vs independent galleries on the lab model (or --model)",
    "score": "diversity / alignment metrics of folders of galleries",
    "eval": "a configured, resumable batch experiment",
    "report": "tables and figures from a batch run's rows",
    "background": "fixed-object background generation with subspace coupling",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported for its arguments."""
    parser = argparse.ArgumentParser(
        prog="couplednoise",
        description="Coupled initial noise for diffusion galleries.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=SUMMARIES[name], description=SUMMARIES[name])
        if name == command:
            importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    args = build_parser(command).parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
