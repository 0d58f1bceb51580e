"""`couplednoise study lab` runs end to end with small settings and writes its figure and table."""

from __future__ import annotations

import json

from couplednoise.eval.cli import main
from couplednoise.eval.runs.stats import t_interval


def test_t_interval_matches_scipy():
    import scipy.stats
    import torch

    values = torch.tensor([0.5, 0.75, 1.0, 0.75, 0.5], dtype=torch.float64)
    mean, half = t_interval(values)
    low, high = scipy.stats.t.interval(
        0.95, 4, loc=values.mean().item(), scale=scipy.stats.sem(values.numpy())
    )
    assert abs(mean - 0.7) < 1e-12
    assert abs((mean - half) - low) < 1e-9 and abs((mean + half) - high) < 1e-9


def test_lab_study_writes_figure_table_and_records(tmp_path):
    args = [
        "study",
        "lab",
        "--seeds",
        "0-2",
        "--sizes",
        "2,4",
        "--steps",
        "4",
        "--prompts",
        "a red circle on a white background",
    ]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "lab_study.png").stat().st_size > 10_000
    table = (tmp_path / "lab_study.md").read_text()
    assert "| 4 | repulsive |" in table and "| 2 | orthogonal |" in table
    records = json.loads((tmp_path / "lab_study.json").read_text())["records"]
    assert len(records) == 2 * 3 * 3  # sizes x couplings x metrics
    for r in records:
        assert 0 <= r["mean"] <= 1 and r["ci"] >= 0
        if r["metric"] == "alignment":
            assert r["mean"] == 1.0
    expected = {r["K"]: r["expected_independent"] for r in records if r["metric"] == "scene_cov"}
    assert abs(expected[2] - (20 * (1 - (19 / 20) ** 2)) / 2) < 1e-9  # 20 matching scenes
