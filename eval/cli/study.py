"""``couplednoise study NAME``: run one of the studies behind the documentation's tables.

Each study is a module registered in ``couplednoise.eval.studies.STUDIES`` with
``add_arguments(parser)`` and ``run(args) -> int``; it writes its tables and figures to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib

from couplednoise.eval.studies import STUDIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="study", metavar="NAME", required=True, parser_class=type(parser)
    )
    for name, (module_name, summary) in STUDIES.items():
        study = sub.add_parser(name, help=summary, description=summary)
        importlib.import_module(module_name).add_arguments(study)


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(STUDIES[args.study][0]).run(args)
