"""The learned lab wherever a model is named: `generate`, an `eval` config, `demo`, the web demo's
engine, each end to end with the committed weights (a few steps, tiny galleries)."""

from __future__ import annotations

import json

from couplednoise.eval.batch.config import validate_config
from couplednoise.eval.batch.run import read_jsonl, run_batch
from couplednoise.eval.cli import main
from couplednoise.eval.demo.engine import Models
from couplednoise.pipelines.builtin import example_prompts
from couplednoise.pipelines.learned_lab.prompts import parse_prompt


def test_generate_writes_a_coupled_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["generate", "--model", "learned-lab", "--prompt", "a red sneaker", "--coupling"]
    argv += ["repulsive", "-n", "2", "--seeds", "0", "--steps", "3", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    galleries = json.loads((out / "galleries.json").read_text())
    assert [g["coupling"] for g in galleries] == ["repulsive"]
    assert all((out / f).is_file() for f in galleries[0]["files"])
    assert json.loads((out / "config.json").read_text())["pipeline"] == "LearnedLabPipeline"
    capsys.readouterr()
    bad = [*argv[:4], "a red car", *argv[5:-1], str(tmp_path / "bad"), "--no-progress"]
    assert main(bad) == 2
    assert "car" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_an_eval_config_runs_the_learned_lab(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red sneaker\na bag on brick\n")
    data = {
        "models": ["learned-lab"],
        "couplings": ["independent", "repulsive"],
        "prompts": {"source": str(prompts), "n": 2, "seed": 0},
        "generation": {"num_images": 2, "steps": 3},
        "metrics": {"names": ["l2", "vendi_pixel"]},
        "output": {"dir": str(tmp_path / "out"), "grids": 0},
    }
    counts = run_batch(validate_config(data), progress=False)
    rows = read_jsonl(tmp_path / "out" / "rows.jsonl")
    assert counts["items"] == counts["computed_here"] == len(rows) == 4
    assert {r["coupling"] for r in rows} == {"independent", "repulsive"}
    assert all(r["metrics"]["l2"] > 0 for r in rows)


def test_demo_uses_the_models_own_prompts(tmp_path, capsys):
    assert all(parse_prompt(p) for p in example_prompts("learned-lab"))
    out = tmp_path / "demo"
    argv = ["demo", "--model", "learned-lab", "--out", str(out), "--num-images", "2"]
    assert main([*argv, "--seeds", "0", "--steps", "2", "--couplings", "repulsive"]) == 0
    assert "Paired difference to independent" in (out / "table.md").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["prompts"] == list(example_prompts("learned-lab"))


def test_the_web_demo_engine_offers_and_loads_it():
    models = Models(["learned-lab"])
    assert "learned-lab" in models.names
    with models.lease("learned-lab", None) as pipe:
        assert type(pipe).__name__ == "LearnedLabPipeline"


def test_background_keeps_a_held_out_object_through_inversion(tmp_path, capsys):
    import torch
    from PIL import Image

    from couplednoise.pipelines.learned_lab.world import sample_composites

    ref = sample_composites(1, "test", generator=torch.Generator().manual_seed(3))
    Image.fromarray((ref.images[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(
        tmp_path / "ref.png"
    )
    Image.fromarray(((ref.masks[0] > 0.5) * 255).byte().numpy()).save(tmp_path / "mask.png")
    out = tmp_path / "bg"
    argv = ["background", "--model", "learned-lab", "--image", str(tmp_path / "ref.png")]
    argv += ["--mask", str(tmp_path / "mask.png"), "--prompt", "a thing on brick", "-n", "2"]
    argv += ["--share", "1", "--steps", "4", "--lpips", "none", "--clip", "none"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    galleries = json.loads((out / "galleries.json").read_text())
    # the learned lab has its own SDEdit and blended-inpainting baselines (editing.py)
    assert {g["method"] for g in galleries} == {"subspace", "inversion", "sdedit", "inpaint"}
