"""`couplednoise study baselines` end to end with small settings: outputs, costs, pairing, resume."""

from __future__ import annotations

import json

import pytest
import torch

from couplednoise.eval.cli import main
from couplednoise.eval.studies import baselines

STEPS = 3
METHODS = ["independent", "repulsive", "independent+cno:iterations=1", "repulsive+cads"]
ARGS = ["study", "baselines", "--seeds", "0-2", "--sizes", "2", "--steps", str(STEPS)]
ARGS += ["--prompts", "a red circle", "--methods", *METHODS]


def test_baselines_study_writes_table_records_and_costs(tmp_path):
    assert main([*ARGS, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "baselines_study.png").stat().st_size > 10_000
    assert not (tmp_path / "baselines_study.partial.json").exists()
    table = (tmp_path / "baselines_study.md").read_text()
    assert "| independent+cno:iterations=1 | 5 / 1 |" in table  # 3 steps + reference + 1 step
    data = json.loads((tmp_path / "baselines_study.json").read_text())
    assert data["settings"] == {"lab": {"steps": STEPS, "guidance": 1.0}}
    records = {(r["method"], r["metric"]): r for r in data["records"]}
    for method, forward, backward in [
        ("independent", 3, 0),
        ("repulsive", 3, 0),
        ("repulsive+cads", 3, 0),
        ("independent+cno:iterations=1", 5, 1),
    ]:
        cost = records[(method, "cost")]
        assert (cost["forward"], cost["backward"]) == (forward, backward)
        assert cost["seconds"] > 0
        assert records[(method, "alignment")]["mean"] <= 1
    for metric in baselines.METRICS:  # a paired mean difference is the difference of the means
        base, coupled = records[("independent", metric)], records[("repulsive", metric)]
        assert coupled["diff"] == pytest.approx(coupled["mean"] - base["mean"], abs=1e-12)
    # Details: every attribute "a red circle" leaves open, and the distance to the nearest scene.
    assert {"cov:size", "cov:position", "cov:background", "scene_rms"} <= {m for _, m in records}
    assert "cov:shape" not in {m for _, m in records}
    assert "| method | cov:size | cov:position | cov:background | scene_rms |" in table
    assert records[("independent", "scene_rms")]["mean"] >= 0
    contrasts = {(c["a"], c["b"], c["metric"]) for c in data["contrasts"]}
    assert ("repulsive", "independent", "attr_cov") in contrasts
    assert ("repulsive+cads", "repulsive", "l2_diversity") in contrasts


def test_an_interrupted_study_resumes_without_redoing_cells(tmp_path, monkeypatch):
    calls = []
    original = baselines.run_cell

    def failing_cell(*args, **kwargs):
        calls.append(args[3:5])  # (coupling, method)
        if len(calls) == len(METHODS) + 3:  # the third real cell, after the warm-up
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(baselines, "run_cell", failing_cell)
    assert main([*ARGS, "--out", str(tmp_path)]) == 130
    partial = json.loads((tmp_path / "baselines_study.partial.json").read_text())
    assert len(partial["cells"]) == 2
    calls.clear()
    monkeypatch.setattr(
        baselines, "run_cell", lambda *a, **k: calls.append(a[3:5]) or original(*a, **k)
    )
    assert main([*ARGS, "--out", str(tmp_path)]) == 0
    assert len(calls) == len(METHODS) + len(METHODS) - 2  # warm-up + the cells not done before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--models", "sd15"], "model 'sd15' has no ground-truth readout; known: lab"),
        (["--methods", "repulsive"], "must include 'independent'"),
        (["--methods", "independent", "blue"], "unknown coupling 'blue'"),
        (["--methods", "independent", "repulsive+dpo"], "unknown gallery method 'dpo'"),
        (["--prompts", "a red cat"], "unknown word"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    args = ["study", "baselines", "--seeds", "0", "--sizes", "2", "--steps", "2", *extra]
    with torch.no_grad():
        assert main([*args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_the_learned_lab_joins_with_its_classifier_readout(tmp_path):
    window = "independent+cads:tau1=0.42,tau2=0.65"
    methods = ["independent", "repulsive", "independent+cno:iterations=1", window]
    args = ["study", "baselines", "--models", "learned-lab", "--seeds", "0-1", "--sizes", "2"]
    args += ["--steps", "2", "--prompts", "a red sneaker", "--methods", *methods]
    assert main([*args, "--out", str(tmp_path)]) == 0
    stem = tmp_path / "baselines_study_learned-lab"
    assert not (tmp_path / "baselines_study.json").exists()
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data["settings"] == {"learned-lab": {"steps": 2, "guidance": 5.0}}
    records = {(r["method"], r["metric"]): r for r in data["records"]}
    costs = {
        m: (records[(m, "cost")]["forward"], records[(m, "cost")]["backward"]) for m in methods
    }
    # guided: 2 evaluations a step; CNO adds the reference and one iteration, forward and backward
    assert costs == {
        "independent": (4, 0),
        "repulsive": (4, 0),
        "independent+cno:iterations=1": (8, 2),
        window: (4, 0),
    }
    for method in methods:
        for metric in ("attr_cov", "scene_cov", "alignment"):
            assert 0 <= records[(method, metric)]["mean"] <= 1
    # "a red sneaker" leaves position and background open; object and colour are named
    details = {m for _, m in records if m.startswith("cov:")}
    assert details == {"cov:position", "cov:background"}
    assert "**learned-lab, K = 2** (2 steps, guidance 5.0)" in stem.with_suffix(".md").read_text()
