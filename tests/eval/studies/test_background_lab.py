"""The lab's fixed-object study: outputs, and what the ground truth says about dilation."""

from __future__ import annotations

import json

import pytest

from couplednoise.eval.cli import build_parser, main
from couplednoise.eval.cli.errors import UsageError
from couplednoise.eval.studies.background_lab import measure, reference_scenes
from couplednoise.pipelines.lab import load_lab_pipeline

STUDY = ["study", "background-lab"]


def parse_args(argv: list[str]):
    return build_parser([*STUDY, *argv])[0].parse_args([*STUDY, *argv])


def test_study_writes_table_figure_and_json(tmp_path):
    argv = ["--references", "2", "--dilations", "0,2", "--shares", "0,1", "-n", "2"]
    assert main([*STUDY, *argv, "--steps", "5", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "background_lab_study.json").read_text())
    assert [(r["dilation"], r["share"]) for r in data["records"]] == [
        (0, 0.0),
        (0, 1.0),
        (2, 0.0),
        (2, 1.0),
    ]
    assert len(data["references"]) == 2
    assert (tmp_path / "background_lab_study.png").stat().st_size > 10_000
    assert "| 2 | 1 |" in (tmp_path / "background_lab_study.md").read_text()


def test_bad_study_arguments_are_refused(capsys):
    with pytest.raises(UsageError, match="not a number in"):
        parse_args(["--shares", "0,2"])
    with pytest.raises(UsageError, match="repeats"):
        parse_args(["--dilations", "0,0"])
    assert main([*STUDY, "--shares", "0,nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("couplednoise study: error:") and "\n" not in err


def test_dilation_trades_backgrounds_for_the_object():
    """Ground truth over 12 references (K = 4, share 1): growing the shared region by 4 px keeps
    the object clearly more often than the bare footprint, and leaves fewer backgrounds."""
    pipe = load_lab_pipeline("lab")
    pipe.set_progress_bar_config(disable=True)
    args = parse_args(["--dilations", "0,4", "--shares", "1", "-n", "4"])
    scenes = reference_scenes(pipe.world, 12, seed=0)
    results = [measure(pipe, s, args, seed=i) for i, s in enumerate(scenes)]

    def mean(key, metric):
        return sum(r[key][metric] for r in results) / len(results)

    assert mean((4, 1.0), "object_kept") >= mean((0, 1.0), "object_kept") + 0.2
    assert mean((4, 1.0), "distinct_backgrounds") < mean((0, 1.0), "distinct_backgrounds")
