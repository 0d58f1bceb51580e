"""`couplednoise demo` end to end with small settings: lab model and a tiny SD checkpoint."""

from __future__ import annotations

import csv
import json

from PIL import Image

from couplednoise.eval.cli import main
from couplednoise.eval.runs.galleries import find_galleries
from tests.eval.cli.contract import fails_cleanly

SMALL = ["--num-images", "3", "--steps", "4", "--seeds", "0-1"]


def test_demo_on_the_lab_writes_grids_table_and_a_scoreable_run(tmp_path, capsys):
    out = tmp_path / "demo"
    prompts = ["a red circle", "a square on a blue background"]
    assert main(["demo", "--out", str(out), "--prompts", *prompts, *SMALL]) == 0
    printed = capsys.readouterr().out
    for coupling in ("independent", "repulsive", "orthogonal", "subspace"):
        assert f"| {coupling} |" in printed
    assert "scenes/limit" in printed and "MS-SSIM" in printed

    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "demo" and config["seeds"] == [0, 1]
    assert config["pipeline"]["scheduler"] == "DDIMScheduler"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 * 2 * 4  # prompts x seeds x couplings
    for row in rows:
        assert float(row["alignment"]) == 1.0  # the exact posterior never leaves the prompt
        assert 0 < float(row["attr_cov"]) <= 1 and 0 < float(row["scene_cov"]) <= 1
        assert float(row["l2"]) > 0
    # Same seed, same prompt: the independent and subspace galleries share their reference.
    assert {r["object_kept"] for r in rows} <= {str(i / 3) for i in range(4)}
    for row in rows:  # kept on a new background implies kept
        assert 0 <= float(row["kept_new_background"]) <= float(row["object_kept"])

    galleries = find_galleries(out)  # the layout `couplednoise score` reads
    assert len(galleries) == 16 and all(len(g.files) == 3 for g in galleries)
    assert Image.open(galleries[0].files[0]).size == (32, 32)
    grid = Image.open(out / "grid_0.png")
    assert grid.width > 3 * 96 and grid.height > 8 * 96  # 8 labelled rows of 3 upscaled images
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    table = (out / "table.md").read_text()
    assert "Paired difference to independent on the same 4 sets" in table

    # Rerunning into an earlier demo run replaces it.
    assert (
        main(["demo", "--out", str(out), "--prompts", "a circle", *SMALL[:4], "--seeds", "0"]) == 0
    )
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 4


def test_demo_rejects_bad_requests_before_writing(tmp_path, capsys):
    out = tmp_path / "demo"
    fails_cleanly(
        capsys,
        ["demo", "--out", str(out), "--prompts", "a red dog", *SMALL],
        r"'dog'.*shape: circle",
    )
    fails_cleanly(
        capsys,
        ["demo", "--out", str(out), "--couplings", "independent", "bogus", *SMALL],
        "unknown coupling",
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    fails_cleanly(
        capsys,
        ["demo", "--out", str(tmp_path / "mine"), *SMALL],
        "not a couplednoise run, not a demo run",
    )
    assert not out.exists()
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_demo_runs_on_a_checkpoint(tmp_path, tiny_pipeline_dir, capsys):
    model = tiny_pipeline_dir("sd15")
    out = tmp_path / "sd"
    args = ["demo", "--out", str(out), "--model", str(model), "--prompts", "a cat"]
    assert (
        main([*args, "--num-images", "2", "--steps", "2", "--device", "cpu", "--seeds", "0"]) == 0
    )
    printed = capsys.readouterr().out
    assert "| subspace |" in printed and "scenes/limit" not in printed  # no ground truth here
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 4 and "alignment" not in rows[0]
    assert json.loads((out / "config.json").read_text())["pipeline"]["family"] == "sd15"
