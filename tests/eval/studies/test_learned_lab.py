"""`couplednoise study learned-lab` runs end to end with small settings on the committed model,
keeps its galleries per cell and resumes from them."""

from __future__ import annotations

import json

from couplednoise.eval.cli import main
from tests.eval.cli.contract import fails_cleanly


def _args(tmp_path, seeds="0-1", steps="2"):
    args = ["study", "learned-lab", "--seeds", seeds, "--sizes", "2,4", "--steps", steps]
    args += ["--prompts", "a red sneaker", "--couplings", "independent", "repulsive"]
    return [*args, "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]


def test_learned_lab_study_writes_figure_table_and_records(tmp_path, monkeypatch):
    assert main(_args(tmp_path)) == 0
    out = tmp_path / "out"
    assert (out / "learned_lab_study.png").stat().st_size > 10_000
    table = (out / "learned_lab_study.md").read_text()
    assert "| 4 | repulsive |" in table and "| 2 | independent |" in table
    data = json.loads((out / "learned_lab_study.json").read_text())
    records = data["records"]
    cells = {(r["coupling"], r["K"], r["metric"]) for r in records}
    assert len(cells) == 2 * 2 * 5
    assert set(data["classifier_accuracy"]) >= {"object", "colour", "position", "background"}
    paired = [r for r in records if r["coupling"] == "repulsive"]
    assert all("diff" in r for r in paired)
    for r in records:
        if r["metric"] in ("attr_cov", "alignment"):
            assert 0.0 <= r["mean"] <= 1.0
        if r["metric"].startswith("vendi"):
            assert 1.0 <= r["mean"] <= r["K"] + 1e-6
    # A rerun finds every gallery in --work: it generates nothing and reports the same figures.
    import couplednoise.pipelines.learned_lab as learned_lab

    def no_generation(*args, **kwargs):
        raise AssertionError("a finished study must not generate again")

    monkeypatch.setattr(learned_lab, "load_learned_lab", no_generation)
    assert main(_args(tmp_path)) == 0
    again = json.loads((out / "learned_lab_study.json").read_text())["records"]
    assert again == records


def test_a_work_folder_of_another_setup_is_refused_before_work(tmp_path, capsys):
    assert main(_args(tmp_path, seeds="0")) == 0
    fails_cleanly(capsys, _args(tmp_path, seeds="0", steps="3"), "holds results of another setup")


def test_stored_galleries_are_the_ones_a_fresh_run_draws(tmp_path):
    """Seeds added later land in the same cell files, and each stored gallery is exactly what a
    run with only that seed stores (galleries depend on their seed alone)."""
    import torch

    from couplednoise.eval.studies.learned_lab import Cell, GalleryStore, provenance

    assert main(_args(tmp_path, seeds="0")) == 0
    assert main(_args(tmp_path, seeds="0-1")) == 0
    alone = tmp_path / "alone"
    assert main(_args(alone, seeds="1")) == 0
    meta = json.loads((tmp_path / "work" / "study.json").read_text())
    cell = Cell("a red sneaker", "repulsive", 4)
    both = torch.load(GalleryStore(tmp_path / "work", meta).path(cell), weights_only=True)
    single = torch.load(GalleryStore(alone / "work", meta).path(cell), weights_only=True)
    assert sorted(both["galleries"]) == [0, 1] and both["cell"]["k"] == 4
    assert torch.equal(both["galleries"][1]["images"], single["galleries"][1]["images"])
    assert both["galleries"][1]["images"].dtype == torch.uint8
    assert both["galleries"][1]["images"].shape == (4, 3, 32, 32)
    assert provenance  # the store's setup record is the study's own
