"""Small pieces every study shares."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from couplednoise.eval.runs.atomic import write_text
from couplednoise.eval.runs.stats import t_interval


def claim_work_folder(folder: Path, provenance: dict) -> None:
    """Make ``folder`` a study's resumable work folder for one setup: the first run writes
    ``provenance`` (what decides the numbers besides the cell) to study.json; a later run with
    another setup gets a ValueError before any work, so results of two setups never mix."""
    provenance = json.loads(json.dumps(provenance))  # tuples as lists, as read back
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "study.json"
    if meta.is_file():
        earlier = json.loads(meta.read_text())
        if earlier != provenance:
            raise ValueError(
                f"--work {folder} holds results of another setup ({earlier}); "
                f"this run is {provenance}: pick another --work folder"
            )
    else:
        write_text(meta, json.dumps(provenance, indent=1))


def study_args(args: argparse.Namespace) -> dict[str, Any]:
    """A study's arguments as JSON-able data (paths as strings), for its .json output."""
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key not in ("command", "study")
    }


def add_grid_arguments(
    parser: argparse.ArgumentParser,
    *,
    model: str,
    model_help: str,
    prompts: tuple[str, ...],
    couplings: tuple[str, ...],
    seeds: str,
) -> None:
    """The options of a coupling x K x seed grid on one model: --model, --prompts, --couplings,
    --sizes, --seeds and --out (a study adds its own sampling options)."""
    from couplednoise.eval.cli.options import MAX_IMAGES, int_list, seed_list

    parser.add_argument("--model", default=model, help=model_help)
    parser.add_argument("--prompts", nargs="+", default=list(prompts))
    parser.add_argument("--couplings", nargs="+", default=list(couplings))
    parser.add_argument(
        "--sizes", type=int_list(2, MAX_IMAGES), default=[2, 4, 8, 16], help="gallery sizes K"
    )
    parser.add_argument(
        "--seeds", type=seed_list, default=seed_list(seeds), help=f"gallery seeds (default {seeds})"
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for figure + table")


def summarise_cells(
    results: dict, couplings: list[str], sizes: list[int], metrics: tuple[str, ...]
) -> list[dict]:
    """One record per (coupling, K, metric) from ``results[(coupling, K)]`` = per-gallery rows
    (gallery i of every coupling drawn from the same seed): mean and 95% CI, the paired
    difference to independent, and ``expected_independent`` when the rows carry
    ``expected_<metric>``."""
    records = []
    for k in sizes:
        base = results[("independent", k)] if "independent" in couplings else None
        for coupling in couplings:
            rows = results[(coupling, k)]
            for metric in metrics:
                values = torch.tensor([r[metric] for r in rows])
                mean, half = t_interval(values)
                record = {"coupling": coupling, "K": k, "metric": metric, "mean": mean, "ci": half}
                if base is not None and coupling != "independent":
                    diff = values - torch.tensor([r[metric] for r in base])
                    record["diff"], record["diff_ci"] = t_interval(diff)
                expected_key = f"expected_{metric}"
                if expected_key in rows[0]:
                    record["expected_independent"] = sum(r[expected_key] for r in rows) / len(rows)
                records.append(record)
    return records
