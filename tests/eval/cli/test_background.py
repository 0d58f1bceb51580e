"""`couplednoise background`: run folders on a tiny SD1.5 and on the lab (ground truth)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from couplednoise.eval.background.scoring import dataset_pairs
from couplednoise.eval.cli import main
from tests.eval.cli.contract import fails_cleanly
from tests.pipelines.test_background import reference, square_mask

FAST = ["--steps", "2", "-n", "2", "--no-progress", "--clip", "none"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    reference().save(folder / "ref.png")
    Image.fromarray(square_mask(128)).save(folder / "mask.png")
    return folder / "ref.png", folder / "mask.png"


def test_run_folder_with_sweep_and_baselines(tiny_pipeline_dir, pair, tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "background",
            "--model",
            str(tiny_pipeline_dir("sd15")),
            "--image",
            str(pair[0]),
            "--mask",
            str(pair[1]),
            "--prompt",
            "a beach",
            "--share",
            "0,1",
            "--sdedit",
            "0.6",
            "--paste-back",
            "--random-backbones",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["shares"] == [0.0, 1.0] and config["seed"] == 0 and config["family"] == "sd15"
    metrics = json.loads((out / "metrics.json").read_text())
    labels = {(s["label"], s["view"]) for s in metrics["summary"]}
    for label in (
        "subspace:share=0",
        "subspace:share=1",
        "inversion",
        "sdedit:strength=0.6",
        "inpaint:strength=1",
    ):
        assert {(label, "raw"), (label, "pasted")} <= labels
    row = metrics["summary"][0]
    assert {"fg_psnr", "fg_ssim", "fg_lpips", "bg_l2", "bg_lpips", "tradeoff"} <= set(row)
    pasted = next(s for s in metrics["summary"] if s["view"] == "pasted")
    assert pasted["fg_psnr"] > 60  # the object pixels are the reference's (up to 8-bit rounding)
    assert (out / "tradeoff.png").is_file() and (out / "tradeoff_pasted.png").is_file()
    assert (out / "images" / "ref" / "subspace_share_1" / "p000" / "1.png").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]


def test_dataset_mode(tiny_pipeline_dir, tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for name in ("a", "b"):
        reference(96).save(data / "images" / f"{name}.jpg")
        Image.fromarray(square_mask(96)).save(data / "masks" / f"{name}.png")
    out = tmp_path / "run"
    code = main(
        [
            "background",
            "--model",
            str(tiny_pipeline_dir("sd15")),
            "--dataset",
            str(data),
            "--prompt",
            "a room",
            "--share",
            "1",
            "--no-baselines",
            "--lpips",
            "none",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted({r["image"] for r in metrics["rows"]}) == ["a", "b"]
    assert metrics["summary"][0]["count"] == 2
    assert (out / "tradeoff.png").is_file()


def test_dataset_without_masks_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    reference().save(tmp_path / "images" / "lonely.png")
    with pytest.raises(ValueError, match="no mask"):
        dataset_pairs(tmp_path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image", "x.png"], "--image and --mask go together"),
        (
            ["--lab-scene", "3", "--model", "lab", "--share", "1.5"],
            r"--share: 1.5 is not .* \[0.0, 1.0\]",
        ),
        (
            ["--lab-scene", "3", "--model", "lab", "-n", "1"],
            r"-n/--num-images: 1 is not a whole number in \[2,",
        ),
        (["--dataset", "d", "--lab-scene", "1", "--model", "lab"], "exactly one reference"),
        (
            ["--lab-scene", "3", "--model", "lab", "--dilate", "-2"],
            r"--dilate: -2 is not a whole number in",
        ),
        (
            ["--lab-scene", "3", "--model", "lab", "--sdedit", "0,0.5"],
            r"--sdedit strengths must be in \(0, 1\]",
        ),
        (["--lab-scene", "3", "--model", "lab:size=48"], r"lab size must be one of"),
    ],
)
def test_bad_arguments_exit_2_before_loading(extra, message, tmp_path, capsys):
    argv = ["background", "--out", str(tmp_path / "o"), *extra]
    if "--model" not in extra:
        argv += ["--model", "/nonexistent"]
    fails_cleanly(capsys, argv, message)


def test_bad_mask_reports_before_generation(tiny_pipeline_dir, pair, tmp_path, capsys):
    soft = tmp_path / "soft.png"
    Image.fromarray(np.full((64, 64), 100, np.uint8)).save(soft)
    code = main(
        [
            "background",
            "--model",
            str(tiny_pipeline_dir("sd15")),
            "--image",
            str(pair[0]),
            "--mask",
            str(soft),
            "--prompt",
            "x",
            "--out",
            str(tmp_path / "o"),
            *FAST,
        ]
    )
    assert code == 2 and "not binary" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_lab_ground_truth_tradeoff(tmp_path):
    """The lab's exact readout: share 1 keeps the reference object far more often than share 0
    (independent noise, which essentially never reproduces all four object attributes), while
    the backgrounds still vary."""
    from couplednoise.pipelines.lab import build_world

    world = build_world(32)
    scene = int(
        world.matching(
            {
                "shape": "circle",
                "colour": "red",
                "size": "large",
                "position": "center",
                "background": "white",
            }
        )[0]
    )
    out = tmp_path / "lab"
    code = main(
        [
            "background",
            "--model",
            "lab",
            "--lab-scene",
            str(scene),
            "--share",
            "0,1",
            "-n",
            "8",
            "--steps",
            "20",
            "--lpips",
            "none",
            "--clip",
            "none",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = {s["label"]: s for s in json.loads((out / "metrics.json").read_text())["summary"]}
    assert summary["subspace:share=1"]["object_kept"] >= 0.25
    assert summary["subspace:share=0"]["object_kept"] <= 0.125
    assert summary["subspace:share=1"]["distinct_backgrounds"] >= 2
    assert summary["inversion"]["object_kept"] == 1.0  # the reconstruction is the reference
    assert (out / "tradeoff.png").is_file()
