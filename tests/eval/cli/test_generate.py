"""`couplednoise generate` end to end on a tiny pipeline saved to a temporary folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from couplednoise.eval.cli import main
from couplednoise.eval.cli.generate import parse_seeds
from couplednoise.pipelines.generation import generate_gallery
from couplednoise.pipelines.images import from_pil


def test_generate_writes_a_reproducible_run_folder(tiny_pipeline_dir, sd15_pipe, tmp_path):
    out = tmp_path / "run"
    argv = ["generate", "--model", str(tiny_pipeline_dir("sd15")), "--prompt", "a cat"]
    argv += ["--prompt", "a dog", "--coupling", "repulsive", "-n", "2", "--seeds", "0-1"]
    argv += ["--compare", "--steps", "1", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    entries = json.loads((out / "galleries.json").read_text())
    assert [(e["prompt"], e["seed"], e["coupling"]) for e in entries] == [
        (p, s, c) for p in ("a cat", "a dog") for s in (0, 1) for c in ("independent", "repulsive")
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "sd15" and config["seeds"] == [0, 1]
    assert config["couplings"] == ["independent", "repulsive"] and "diffusers" in config["versions"]
    assert sorted(p.name for p in out.glob("grid*.png")) == [
        "grid.png",
        *(f"grid_compare_p00{p}_s{s}.png" for p in (0, 1) for s in (0, 1)),
    ]
    # A gallery regenerated from its recorded seed matches the saved PNGs to 8-bit rounding.
    entry = entries[3]  # a cat, seed 1, repulsive
    again = generate_gallery(
        sd15_pipe, "a cat", "repulsive", num_images=2, seed=1, num_inference_steps=1
    )
    saved = torch.stack([from_pil(Image.open(out / f)) for f in entry["files"]])
    assert saved.shape == (2, 3, 64, 64)
    assert (saved - again.images).abs().max() <= 0.5 / 255 + 1e-4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]  # staging removed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "3-1"], "descending"),
        (["--coupling", "nope"], "unknown coupling"),
        (["-n", "0"], "num-images"),
        (["--model", "someone/absent", "--local-files-only"], "Hugging Face cache"),
        (["--height", "60"], "multiple of 8"),
    ],
)
def test_bad_requests_exit_2_with_a_message(tiny_pipeline_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    argv = ["generate", "--model", str(tiny_pipeline_dir("sd15")), "--prompt", "a cat"]
    argv += ["--out", str(out), "--steps", "1", "--no-progress", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_refuses_a_non_empty_out_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["generate", "--model", "lab", "--prompt", "x", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0,5,7-8") == [0, 5, 7, 8]
    for bad in ("", "a", "-1", "1,1", "2-0"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_console_entry_point_in_a_subprocess(tmp_path):
    out = tmp_path / "lab"
    command = [sys.executable, "-m", "couplednoise", "generate", "--model", "lab", "--prompt"]
    command += ["a red circle", "-n", "2", "--steps", "3", "--out", str(out), "--no-progress"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    entries = json.loads((out / "galleries.json").read_text())
    assert len(entries) == 1 and len(entries[0]["files"]) == 2
    assert all((out / f).is_file() for f in entries[0]["files"])
