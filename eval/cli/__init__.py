"""The ``couplednoise`` command: one registry of subcommands, shared options, one error contract.

Each subcommand is a module here exposing ``add_arguments(parser)`` and ``run(args) -> int``;
``couplednoise study NAME`` dispatches the same way to the studies registered in
``couplednoise.eval.studies.STUDIES``. Modules are imported only when their subcommand is chosen,
so ``couplednoise --help`` stays fast. Errors follow ``errors.py``: a user error is one line on
stderr and exit code 2, Ctrl-C is 130, a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from couplednoise.eval.cli.errors import UsageError, run_guarded

PROG = "couplednoise"

# name -> (module implementing it, one-line summary for --help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "couplednoise.eval.cli.demo",
        "the main job: coupled vs independent galleries on the lab model (or --model)",
    ),
    "generate": ("couplednoise.eval.cli.generate", "coupled galleries from any model"),
    "score": (
        "couplednoise.eval.cli.score",
        "diversity / alignment metrics of folders of galleries",
    ),
    "eval": ("couplednoise.eval.cli.batch", "a configured, resumable batch experiment"),
    "report": ("couplednoise.eval.cli.report", "tables and figures from a batch run's rows"),
    "background": (
        "couplednoise.eval.cli.background",
        "fixed-object background generation with subspace coupling",
    ),
    "study": ("couplednoise.eval.cli.study", "the studies behind the documentation's tables"),
    "learned-lab": ("couplednoise.eval.cli.learned_lab", "train, export and check the learned lab"),
}


class Parser(argparse.ArgumentParser):
    """argparse with the error contract: a bad argument raises UsageError (one line, exit 2)
    instead of printing the usage block."""

    def error(self, message: str):
        raise UsageError(message)


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, str | None]:
    """The parser, with only the chosen subcommand's module imported; and that subcommand."""
    parser = Parser(prog=PROG, description="Coupled initial noise for diffusion galleries.")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module_name, summary) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        if name == command:
            importlib.import_module(module_name).add_arguments(sub_parser)
    return parser, command


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code (see errors.py)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    prog = f"{PROG} {command}" if command else PROG

    def run() -> int:
        parser, _ = build_parser(argv)
        args = parser.parse_args(argv)
        return importlib.import_module(SUBCOMMANDS[args.command][0]).run(args)

    return run_guarded(prog, run)


if __name__ == "__main__":
    raise SystemExit(main())
