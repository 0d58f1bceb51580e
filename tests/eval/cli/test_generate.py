"""`couplednoise generate` end to end on a tiny pipeline saved to a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from couplednoise.eval.cli import main
from couplednoise.eval.cli.options import parse_seeds
from couplednoise.pipelines.generation import generate_gallery
from couplednoise.pipelines.images import from_pil
from tests.eval.cli.contract import fails_cleanly


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
        (["--prompt", "a cat"], "prompts repeat"),
        (["--model", "someone/absent", "--local-files-only"], "Hugging Face cache"),
        (["--height", "60"], "multiple of 8"),
    ],
)
def test_bad_requests_exit_2_with_a_message(tiny_pipeline_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    argv = ["generate", "--model", str(tiny_pipeline_dir("sd15")), "--prompt", "a cat"]
    argv += ["--out", str(out), "--steps", "1", "--no-progress", *extra]
    fails_cleanly(capsys, argv, message, before_work=False)
    assert not out.exists()


def test_refuses_a_non_empty_out_folder_even_with_overwrite(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    argv = ["generate", "--model", "lab", "--prompt", "a circle", "--out", str(tmp_path)]
    fails_cleanly(capsys, argv, "not a couplednoise run")
    fails_cleanly(capsys, [*argv, "--overwrite"], "not a couplednoise run")
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_only_an_earlier_generate_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["generate", "--model", "lab", "--prompt", "a circle", "-n", "2", "--steps", "2"]
    argv += ["--out", str(out), "--no-progress"]
    assert main(argv) == 0
    fails_cleanly(capsys, argv, "pass --overwrite")
    assert main([*argv, "--overwrite", "--seeds", "5"]) == 0
    assert json.loads((out / "config.json").read_text())["seeds"] == [5]
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "config.json").write_text(json.dumps({"command": "demo"}))
    fails_cleanly(
        capsys, [*argv[:-3], "--out", str(demo), "--overwrite"], "is a demo run, not a generate"
    )
    assert (demo / "config.json").is_file()


def test_an_unwritable_out_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import couplednoise.pipelines.loading as loading

    def never(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(loading, "load_pipeline", never)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a path under a file
            (tmp_path / "file").write_text("")
            target = tmp_path / "file" / "run"
        else:
            target = locked / "run"
        argv = ["generate", "--model", "lab", "--prompt", "a circle", "--out", str(target)]
        fails_cleanly(capsys, argv, "cannot be created: .* is not (a folder|writable)")
    finally:
        locked.chmod(0o700)


def test_non_finite_and_out_of_range_numbers_are_refused(tmp_path, capsys):
    base = ["generate", "--model", "lab", "--prompt", "a circle", "--out", str(tmp_path / "r")]
    fails_cleanly(capsys, [*base, "--guidance", "nan"], "--guidance")
    fails_cleanly(capsys, [*base, "--guidance", "inf"], "--guidance")
    fails_cleanly(capsys, [*base, "--steps", "1001"], "--steps")
    fails_cleanly(capsys, [*base, "-n", "1000000"], "--num-images")
    fails_cleanly(capsys, [*base, "--seeds", "0-99999999999"], "more than")
    fails_cleanly(capsys, [*base, "--device", "meta"], "not a device")
    fails_cleanly(capsys, [*base, "--coupling", "equicorrelated:rho=-0.5", "-n", "4"], "rho")
    assert not (tmp_path / "r").exists()


def test_couplings_are_checked_at_the_models_latent_shape_before_loading(
    tiny_pipeline_dir, tmp_path, capsys
):
    model = str(tiny_pipeline_dir("sd15"))  # 4 x 8 x 8 latents: 256 dimensions
    argv = ["generate", "--model", model, "--prompt", "a cat", "--out", str(tmp_path / "r")]
    fails_cleanly(capsys, [*argv, "--coupling", "orthogonal", "-n", "300"], "n <= dim")
    assert not (tmp_path / "r").exists()


def test_paths_outside_the_basic_multilingual_plane_survive(tmp_path):
    out = tmp_path / "runs" / "\U0001f3b2"
    argv = ["generate", "--model", "lab", "--prompt", "a circle", "-n", "2", "--steps", "1"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["\U0001f3b2"]


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


def test_gallery_methods_run_beside_the_coupling_and_are_recorded(tmp_path):
    out = tmp_path / "run"
    argv = ["generate", "--model", "lab", "--prompt", "a circle", "-n", "3", "--steps", "3"]
    argv += ["--method", "plain", "--method", "cno:iterations=1", "--method", "cads"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    entries = json.loads((out / "galleries.json").read_text())
    assert [e.get("method", "plain").split(":")[0] for e in entries] == ["plain", "cno", "cads"]
    assert entries[1]["metadata"]["method"]["settings"]["iterations"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["methods"][0] == "plain" and config["methods"][1].startswith("cno:iterations=1")
    plain = torch.stack([from_pil(Image.open(out / f)) for f in entries[0]["files"]])
    cno = torch.stack([from_pil(Image.open(out / f)) for f in entries[1]["files"]])
    assert not torch.equal(plain, cno)  # the optimised noise gives other images


def test_a_bad_gallery_method_is_refused_before_loading(tmp_path, capsys):
    argv = ["generate", "--model", "lab", "--prompt", "a circle", "--out", str(tmp_path / "r")]
    fails_cleanly(capsys, [*argv, "--method", "cno:lr=-1"], "lr must be > 0")
    fails_cleanly(capsys, [*argv, "--method", "bogus"], "unknown gallery method")
