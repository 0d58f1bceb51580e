"""`couplednoise study learned-lab` runs end to end with small settings on the committed model."""

from __future__ import annotations

import json

from couplednoise.eval.cli import main


def test_learned_lab_study_writes_figure_table_and_records(tmp_path):
    args = ["study", "learned-lab", "--seeds", "0-1", "--sizes", "2,4", "--steps", "2"]
    args += ["--prompts", "a red sneaker", "--couplings", "independent", "repulsive"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "learned_lab_study.png").stat().st_size > 10_000
    table = (tmp_path / "learned_lab_study.md").read_text()
    assert "| 4 | repulsive |" in table and "| 2 | independent |" in table
    records = json.loads((tmp_path / "learned_lab_study.json").read_text())["records"]
    cells = {(r["coupling"], r["K"], r["metric"]) for r in records}
    assert len(cells) == 2 * 2 * 3
    paired = [r for r in records if r["coupling"] == "repulsive"]
    assert all("diff" in r for r in paired)
    for r in records:
        if r["metric"] in ("attr_cov", "alignment"):
            assert 0.0 <= r["mean"] <= 1.0
