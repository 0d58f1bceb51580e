"""`couplednoise study pool` runs end to end with small settings, resumes from its cache, and its
batched readout equals the lab's gallery readout."""

from __future__ import annotations

import json

import torch

from couplednoise.eval.cli import main
from couplednoise.eval.studies.pool import gallery_summaries, split_arm
from couplednoise.pipelines.lab import load_lab_pipeline
from couplednoise.pipelines.lab.readout import gallery_readout


def test_pool_study_writes_figure_table_records_and_resumes(tmp_path):
    args = [
        "study",
        "pool",
        "--seeds",
        "0-1",
        "--sizes",
        "4",
        "--steps",
        "3",
        "--pilots",
        "8",
        "--prompts",
        "a red circle on a white background",
        "--arms",
        "independent",
        "repulsive",
        "oracle",
        "learned-pixels",
        "dct-pairs",
        "--out",
        str(tmp_path),
        "--cache",
        str(tmp_path / "cells"),
    ]
    assert main(args) == 0
    assert (tmp_path / "pool_study.png").stat().st_size > 10_000
    table = (tmp_path / "pool_study.md").read_text()
    assert "| 4 | oracle |" in table and "| 4 | dct-pairs |" in table
    data = json.loads((tmp_path / "pool_study.json").read_text())
    records = data["records"]
    assert len(records) == 5 * 3  # arms x metrics
    for r in records:
        assert 0 <= r["mean"] <= 1 and r["ci"] >= 0
        if r["arm"] not in ("independent", "repulsive") and r["metric"] == "attr_cov":
            assert "gap_closed" in r and "diff_repulsive" in r
    learned = data["predictors"]["a red circle on a white background"]["learned-pixels"]
    assert learned["network_evaluations"] == 8 * 3
    cells = sorted((tmp_path / "cells").iterdir())
    assert len(cells) == 5
    stamps = [c.stat().st_mtime_ns for c in cells]
    assert main(args) == 0  # every cell comes from the cache: nothing is redone
    assert [c.stat().st_mtime_ns for c in cells] == stamps
    assert json.loads((tmp_path / "pool_study.json").read_text())["records"] == records


def test_batched_readout_equals_the_gallery_readout():
    pipe = load_lab_pipeline("lab")
    pipe.set_progress_bar_config(disable=True)
    prompt = "a large square on the left"
    images = pipe(
        prompt,
        num_images_per_prompt=12,
        num_inference_steps=4,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    rows = gallery_summaries(images, 4, prompt, pipe.world)
    for g, row in enumerate(rows):
        summary = gallery_readout(images[4 * g : 4 * g + 4], prompt, pipe.world).summary()
        assert row == {key: summary[key] for key in row}


def test_arm_names_split_into_predictor_and_variant():
    assert split_arm("learned-pixels-pairs") == ("learned-pixels", "pairs")
    assert split_arm("oracle-zero-sum") == ("oracle", "zero-sum")
    assert split_arm("dct") == ("dct", "")
