"""The terrain study: a tiny grid end to end on the real weights, resumable, paired on seeds."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from tests.real_weights import require

require("terrain_diffusion", "onnxruntime", "efficientnet_lite_pytorch")

from couplednoise.eval.cli import main  # noqa: E402
from couplednoise.eval.runs.stats import t_interval  # noqa: E402
from couplednoise.eval.studies import terrain, terrain_report  # noqa: E402
from couplednoise.eval.studies.terrain import Cell, CellStore  # noqa: E402

TINY = [
    "study",
    "terrain",
    "--difficulties",
    "50",
    "--sizes",
    "2",
    "--steps",
    "1,2",
    "--multistep-sizes",
    "2",
    "--seeds",
    "0-1",
    "--couplings",
    "independent",
    "antithetic",
    "--multistep-couplings",
    "independent",
    "--renoise-couplings",
    "antithetic",
    "--picture-seeds",
    "0",
    "--picture-size",
    "2",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny grid run once: (argv, work folder, out folder)."""
    root = tmp_path_factory.mktemp("terrain_study")
    argv = [*TINY, "--work", str(root / "work"), "--out", str(root / "docs")]
    assert main(argv) == 0
    return argv, root / "work", root / "docs"


def parsed(argv):
    parser = argparse.ArgumentParser()
    terrain.add_arguments(parser)
    return parser.parse_args(argv[2:])


def test_the_grid_writes_tables_figures_and_one_file_per_cell(finished):
    argv, work, out = finished
    cells = terrain.grid(parsed(argv))
    assert [c.key for c in cells] == [
        "d50_steps1_K2_independent",
        "d50_steps1_K2_antithetic",
        "d50_steps2_K2_independent",
        "d50_steps2_K2_antithetic_renoise-antithetic",
    ]
    for cell in cells:
        rows = json.loads((work / f"{cell.key}.json").read_text())["galleries"]
        assert sorted(rows) == ["0", "1"] and set(rows["0"]) == set(terrain.METRICS)
    for name in ("terrain_study.md", "terrain_study.json", "terrain_study.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "terrain_study.md").read_text()
    assert "**difficulty 50, 2 steps**" in table and "antithetic + coupled re-noise" in table


def test_a_study_gallery_is_the_gallery_its_seed_gives_alone(finished):
    """Batched study galleries equal generate_gallery(seed) one at a time: pairing is exact."""
    from couplednoise.eval.backbones.efficientnet import load_efficientnet_lite0
    from couplednoise.pipelines.generation import generate_gallery
    from couplednoise.pipelines.loading import load_pipeline

    _, work, _ = finished
    pipe = load_pipeline("terrain", device="cpu")
    embedder = load_efficientnet_lite0()
    store = CellStore(work, terrain.provenance(parsed(TINY)))
    for cell in (Cell(50.0, 1, "antithetic", 2), Cell(50.0, 2, "antithetic", 2, "antithetic")):
        images = generate_gallery(
            pipe,
            cell.prompt,
            cell.coupling,
            num_images=2,
            seed=1,
            num_inference_steps=cell.steps,
            renoise_coupling=cell.renoise,
        ).images
        expected = terrain.gallery_scores(images, embedder.embed_images(images))
        assert store.load(cell)[1] == expected


def test_a_finished_grid_resumes_without_work_and_a_lost_cell_is_redone(finished, capsys):
    argv, work, _ = finished
    lost = work / "d50_steps1_K2_antithetic.json"
    kept = work / "d50_steps1_K2_independent.json"
    before, stamp = lost.read_text(), kept.stat().st_mtime_ns
    lost.unlink()
    capsys.readouterr()
    assert main([*argv, "--plan"]) == 0
    plan = capsys.readouterr().out
    assert "d50_steps1_K2_antithetic: 0/2 galleries" in plan
    assert "4 cells, 4 network evaluations left" in plan
    assert main([*argv, "--no-report"]) == 0
    assert lost.read_text() == before and kept.stat().st_mtime_ns == stamp


def test_report_only_tables_every_finished_cell_and_needs_one(finished, tmp_path, capsys):
    argv, work, out = finished
    extra = Cell(50.0, 1, "orthogonal", 2)  # a finished cell outside the requested grid
    store = CellStore(work, terrain.provenance(parsed(TINY)))
    store.save(extra, store.load(Cell(50.0, 1, "antithetic", 2)))
    try:
        assert main([*argv, "--report-only", "--couplings", "independent"]) == 0
        table = (out / "terrain_study.md").read_text()
        assert "| 2 | orthogonal |" in table and "| 2 | antithetic |" in table
    finally:
        store.path(extra).unlink()
    empty = [*argv[: argv.index("--work")], "--work", str(tmp_path / "w"), "--report-only"]
    assert main(empty) == 2
    assert "holds no cell with all 2 seeds yet" in capsys.readouterr().err


def test_a_work_folder_of_another_setup_is_refused(finished, capsys):
    argv, _, _ = finished
    other = [*argv[: argv.index("--out")], "--model", "terrain:floor=20", "--plan"]
    assert main(other) == 2
    assert "holds results of another setup" in capsys.readouterr().err


def test_paired_differences_are_per_seed():
    a, b = Cell(50.0, 1, "independent", 2), Cell(50.0, 1, "repulsive", 2)
    metrics = dict.fromkeys(terrain.METRICS, 0.0)
    results = {
        a: {s: {**metrics, "l2": 10.0 + s} for s in range(3)},
        b: {s: {**metrics, "l2": 10.0 + s + (1, 2, 4)[s]} for s in range(3)},
    }
    records = terrain_report.summarise(results, [a, b], [0, 1, 2])
    (l2,) = [r for r in records if r["coupling"] == "repulsive" and r["metric"] == "l2"]
    mean, half = t_interval(torch.tensor([1.0, 2.0, 4.0]))
    assert l2["diff"] == pytest.approx(mean) and l2["diff_ci"] == pytest.approx(half)
    assert l2["mean"] == pytest.approx(40 / 3)


def test_grey_ms_ssim_is_the_projects_pairwise_ms_ssim_on_grey_images():
    from couplednoise.eval.metrics.ms_ssim import pairwise_ms_ssim

    grey = torch.rand(5, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    grey[1:3] = (grey[0] * 0.7 + grey[1:3] * 0.3).clamp(0, 1)  # some similar pairs too
    images = grey.expand(-1, 3, -1, -1)
    torch.testing.assert_close(
        terrain.grey_ms_ssim(images), pairwise_ms_ssim(images), rtol=1e-6, atol=1e-7
    )
    with pytest.raises(ValueError, match="three channels are equal"):
        terrain.grey_ms_ssim(torch.rand(2, 3, 16, 16))


def test_saving_a_cell_keeps_seeds_another_run_added(tmp_path):
    store = CellStore(tmp_path, {"setup": 1})
    cell = Cell(50.0, 1, "repulsive", 2)
    store.save(cell, {0: {"l2": 1.0}})
    CellStore(tmp_path, {"setup": 1}).save(cell, {1: {"l2": 2.0}})  # a second run, seed 1
    assert store.load(cell) == {0: {"l2": 1.0}, 1: {"l2": 2.0}}


def test_an_arm_keeps_its_colour_when_another_row_lacks_an_arm(monkeypatch, tmp_path):
    """Orthogonal is run at one difficulty only; antithetic must not take its colour elsewhere."""
    figures = []
    monkeypatch.setattr(terrain_report, "save_figure", lambda fig, path: figures.append(fig))
    records = [
        {"difficulty": d, "steps": 1, "arm": arm, "metric": m, "k": k, "diff": 1.0, "diff_ci": 0.1}
        for d, arms in ((50.0, ("repulsive", "orthogonal", "antithetic")), (90.0, ("antithetic",)))
        for arm in arms
        for m in ("l2", "ms_ssim", "vendi_pixel", "vendi_effnet")
        for k in (2, 4)
    ]
    terrain_report.figure(records, tmp_path / "f.png")
    axes = figures[0].axes
    first_row = {bars.get_label(): bars.lines[0].get_color() for bars in axes[0].containers}
    second_row = {bars.get_label(): bars.lines[0].get_color() for bars in axes[4].containers}
    assert second_row["antithetic"] == first_row["antithetic"] != first_row["orthogonal"]
