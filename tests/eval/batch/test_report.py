"""Batch reports: confidence intervals against scipy, paired differences, runs still in progress."""

from __future__ import annotations

import argparse
import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from couplednoise.eval.batch.report import build_report, summarise
from couplednoise.eval.batch.run import part_path
from couplednoise.eval.cli import report as report_cli
from couplednoise.eval.runs.stats import mean_ci
from tests.eval.cli.contract import fails_cleanly


def make_rows(values: dict[str, list[list[float]]]) -> list[dict]:
    """Rows of one model: values[coupling][prompt][seed] -> metric "l2" (and "clip_score")."""
    rows = []
    for coupling, per_prompt in values.items():
        for prompt, seeds in enumerate(per_prompt):
            for seed_index, value in enumerate(seeds):
                seed = 10 * prompt + seed_index
                rows.append(
                    {
                        "id": f"m|p{prompt}|s{seed}|{coupling}",
                        "index": len(rows),
                        "model": "m",
                        "prompt_index": prompt,
                        "prompt": f"prompt {prompt}",
                        "seed": seed,
                        "coupling": coupling,
                        "metrics": {"l2": value, "clip_score": 30.0 - value / 10},
                        "files": {},
                    }
                )
    return rows


def test_mean_ci_matches_scipy_t_interval():
    values = [1.0, 2.5, 2.0, 4.0, 3.5]
    mean, low, high = mean_ci(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(ref)
    single = mean_ci([2.0])
    assert single[0] == 2.0 and math.isnan(single[1]) and math.isnan(single[2])


def test_prompts_are_the_unit_and_differences_are_paired():
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0, 10, size=12)  # large between-prompt spread
    independent = [[p + rng.normal(0, 0.1), p + rng.normal(0, 0.1)] for p in prompt_effect]
    repulsive = [[v + 1.0 + rng.normal(0, 0.1) for v in seeds] for seeds in independent]
    records = summarise(
        make_rows({"independent": independent, "repulsive": repulsive}), "independent"
    )
    rec = {(r["coupling"], r["metric"]): r for r in records}
    l2 = rec["repulsive", "l2"]
    per_prompt = [np.mean(s) for s in repulsive]
    assert l2["prompts"] == 12 and l2["galleries"] == 24 and l2["pairs"] == 24
    assert (l2["ci_low"], l2["ci_high"]) == pytest.approx(
        stats.t.interval(0.95, 11, loc=np.mean(per_prompt), scale=stats.sem(per_prompt))
    )
    diffs = [np.mean(np.subtract(r, i)) for r, i in zip(repulsive, independent)]
    assert l2["diff"] == pytest.approx(1.0, abs=0.1)
    assert (l2["diff_low"], l2["diff_high"]) == pytest.approx(
        stats.t.interval(0.95, 11, loc=np.mean(diffs), scale=stats.sem(diffs))
    )
    # pairing removes the prompt spread: the difference's interval is far tighter than the means'
    assert l2["diff_high"] - l2["diff_low"] < (l2["ci_high"] - l2["ci_low"]) / 20
    assert l2["diff_low"] > 0
    assert rec["independent", "l2"]["diff"] is None


def test_report_of_a_run_in_progress_reads_parts_and_skips_a_torn_line(tmp_path):
    rows = make_rows({"independent": [[1.0], [2.0], [3.0]], "repulsive": [[1.5], [2.5]]})
    run = tmp_path / "run"
    part = part_path(run, 1)
    part.parent.mkdir(parents=True)
    part.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "m|p2|s20|repu')
    (run / "config.json").write_text(
        json.dumps({"items": 6, "config": {"reference": "independent"}})
    )
    out = build_report(run)
    summary = (out / "summary.md").read_text()
    assert "5 of 6 galleries: run in progress" in summary
    assert "| repulsive | 2 | 2 |" in summary
    with (out / "summary.csv").open() as file:
        table = list(csv.DictReader(file))
    repulsive_l2 = next(r for r in table if r["coupling"] == "repulsive" and r["metric"] == "l2")
    assert float(repulsive_l2["diff"]) == pytest.approx(0.5) and repulsive_l2["pairs"] == "2"
    for name in ("metrics_m.png", "tradeoff_m.png"):
        assert (out / name).stat().st_size > 1000


def test_report_cli_errors_on_an_empty_run_and_rebuilds_with_another_reference(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    report_cli.add_arguments(parser)
    fails_cleanly(capsys, ["report", str(tmp_path)], "no finished rows")
    fails_cleanly(capsys, ["report", str(tmp_path), "--reference", "nope"], "--reference")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.md").write_text("my notes")
    fails_cleanly(capsys, ["report", str(tmp_path), "--out", str(mine)], "no earlier batch")
    rows = make_rows({"independent": [[1.0], [2.0]], "repulsive": [[1.5], [2.0]]})
    part_path(tmp_path, 0).parent.mkdir(parents=True)
    part_path(tmp_path, 0).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "config.json").write_text("[1, 2]")
    fails_cleanly(capsys, ["report", str(tmp_path)], "not the config.json of a batch run")
    (tmp_path / "config.json").unlink()
    args = parser.parse_args(
        [str(tmp_path), "--reference", "repulsive", "--out", str(tmp_path / "r")]
    )
    assert report_cli.run(args) == 0
    assert "Paired difference to repulsive" in (tmp_path / "r" / "summary.md").read_text()
