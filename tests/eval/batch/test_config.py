"""Batch configs and prompt sources: parsing, overrides, sampling, and clear errors before any work."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from couplednoise.eval.batch.config import (
    apply_overrides,
    load_config,
    read_config_file,
    validate_config,
)
from couplednoise.eval.batch.prompts import load_prompts, sample_prompts
from couplednoise.eval.batch.run import build_items, check_compatible, write_run_config
from couplednoise.eval.cli import batch as batch_cli
from tests.eval.cli.contract import fails_cleanly


def lab_config(out: Path, **sections) -> dict:
    data = {
        "models": ["lab"],
        "couplings": ["independent", "repulsive:strength=0.5"],
        "prompts": {"source": "builtin:lab", "n": 5, "seed": 1},
        "generation": {"num_images": 3, "seeds_per_prompt": 2, "steps": 5},
        "output": {"dir": str(out)},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values} if isinstance(values, dict) else values
    return data


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- prompt sources


def test_text_file_skips_blank_comment_and_duplicate_lines(tmp_path):
    path = write_toml(tmp_path / "p.txt", "# my prompts\na cat\n\na dog\na cat\n  a bird  \n")
    assert load_prompts(str(path)) == ["a cat", "a dog", "a bird"]


def test_coco_captions_json(tmp_path):
    data = {
        "images": [{"id": 1}],
        "annotations": [
            {"image_id": 1, "id": 10, "caption": "A man riding a wave. "},
            {"image_id": 1, "id": 11, "caption": "A surfer on a board."},
        ],
    }
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(data))
    assert load_prompts(str(path)) == ["A man riding a wave.", "A surfer on a board."]
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a COCO captions file"):
        load_prompts(str(tmp_path / "bad.json"))


def test_partiprompts_tsv_and_drawbench_csv(tmp_path):
    tsv = tmp_path / "PartiPrompts.tsv"
    tsv.write_text("Prompt\tCategory\tChallenge\nbond\tAbstract\tBasic\na red apple\tFood\tBasic\n")
    assert load_prompts(str(tsv)) == ["bond", "a red apple"]
    csv_path = tmp_path / "drawbench.csv"
    csv_path.write_text('Prompts,Category\n"a cat, sitting",Animals\na dog,Animals\n')
    assert load_prompts(str(csv_path)) == ["a cat, sitting", "a dog"]
    assert load_prompts(str(csv_path), column="Category") == ["Animals"]
    other = tmp_path / "other.csv"
    other.write_text("id,description\n1,a cat\n")
    with pytest.raises(ValueError, match=r"no prompt column.*\['id', 'description'\]"):
        load_prompts(str(other))


def test_sampling_is_reproducible_and_keeps_source_indices():
    prompts = load_prompts("builtin")
    assert len(prompts) >= 40
    first = sample_prompts(prompts, 10, seed=3)
    assert first == sample_prompts(prompts, 10, seed=3)
    assert first != sample_prompts(prompts, 10, seed=4)
    assert all(prompts[i] == p for i, p in first)
    assert [i for i, _ in first] == sorted(i for i, _ in first)
    assert sample_prompts(prompts, None, seed=0) == list(enumerate(prompts))
    with pytest.raises(ValueError, match=r"prompts.n must be in 1\.\.48"):
        sample_prompts(prompts, 49, seed=0)


def test_missing_prompt_file_names_the_path(tmp_path):
    with pytest.raises(
        ValueError, match=r"prompt file not found: .*nope\.txt.*Nothing is downloaded"
    ):
        load_prompts(str(tmp_path / "nope.txt"))
    with pytest.raises(ValueError, match="unknown builtin prompt set"):
        load_prompts("builtin:coco")


# ---------------------------------------------------------------- configs


def test_valid_config_resolves_defaults_seeds_and_items(tmp_path):
    config = validate_config(lab_config(tmp_path / "run"))
    assert config.couplings == ("independent", "repulsive:strength=0.5")
    assert config.reference == "independent"
    assert [m.steps for m in config.models] == [5]
    assert config.metrics.names == ("l2", "ms_ssim", "vendi_pixel")
    assert len(config.prompts) == 5
    # seeds depend on the prompt's index in the source, not on its position in the sample
    index = config.prompts[2][0]
    assert config.seeds_for(index) == [2 * index, 2 * index + 1]
    items = build_items(config)
    assert len(items) == 5 * 2 * 2
    assert len({i.id for i in items}) == len(items)
    # every coupling of a (prompt, seed) group has the same seed: paired galleries
    groups = {}
    for item in items:
        groups.setdefault((item.prompt_index, item.seed), []).append(item.coupling)
    assert all(c == list(config.couplings) for c in groups.values())


def test_toml_and_yaml_configs_give_the_same_experiment(tmp_path):
    toml = write_toml(
        tmp_path / "c.toml",
        f'models = ["lab"]\ncouplings = ["independent", "orthogonal"]\n'
        f'[prompts]\nsource = "builtin:lab"\nn = 3\n[output]\ndir = "{tmp_path / "r"}"\n',
    )
    yaml = write_toml(
        tmp_path / "c.yaml",
        f"models: [lab]\ncouplings: [independent, orthogonal]\n"
        f"prompts: {{source: 'builtin:lab', n: 3}}\noutput: {{dir: '{tmp_path / 'r'}'}}\n",
    )
    assert load_config(toml).fingerprint() == load_config(yaml).fingerprint()


def test_cli_flags_and_set_override_config_entries(tmp_path):
    path = write_toml(tmp_path / "c.yaml", json.dumps(lab_config(tmp_path / "run")))
    parser = argparse.ArgumentParser()
    batch_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            str(path),
            "--steps",
            "7",
            "--couplings",
            "independent,orthogonal",
            "--n-prompts",
            "2",
            "--output",
            str(tmp_path / "other"),
            "--save-images",
            "--set",
            "metrics.vendi_q=2",
            "--set",
            "generation.guidance=1.5",
        ]
    )
    config = load_config(path, batch_cli.overrides_from(args))
    assert config.models[0].steps == 7 and config.models[0].guidance == 1.5
    assert config.couplings == ("independent", "orthogonal")
    assert len(config.prompts) == 2
    assert config.output == tmp_path / "other"
    assert config.save_images is True
    assert config.metrics.vendi_q == 2.0


def test_model_table_overrides_generation_defaults(tmp_path):
    data = lab_config(
        tmp_path / "run",
        models=[
            {"path": "lab", "name": "lab-fast", "steps": 3},
            {"path": "lab:size=64", "name": "lab64"},
        ],
    )
    config = validate_config(data)
    assert [(m.name, m.steps) for m in config.models] == [("lab-fast", 3), ("lab64", 5)]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"couplings": ["independent", "repulsve"]},
            ValueError,
            r"couplings\[1\] = 'repulsve': unknown coupling",
        ),
        ({"couplings": ["independent", "repulsive:strenght=1"]}, ValueError, "unknown parameter"),
        ({"prompts": {"source": "missing/prompts.txt"}}, ValueError, "prompt file not found"),
        (
            {"generation": {"steps": "twenty"}},
            TypeError,
            r"generation.steps must be an integer, got 'twenty'",
        ),
        ({"generation": {"num_images": 1}}, ValueError, r"generation.num_images must be >= 2"),
        (
            {"generation": {"stpes": 3}},
            ValueError,
            r"unknown key generation.'stpes' \(did you mean 'steps'\?\)",
        ),
        ({"metrics": {"names": ["l2", "fid"]}}, ValueError, "unknown metric 'fid'"),
        (
            {"prompts": {"source": "builtin"}},
            ValueError,
            "prompt .* cannot run on the lab model: unknown word",
        ),
        ({"models": ["/no/such/model"]}, ValueError, "no such local folder"),
        ({"models": ["lab:scheduler=heun"]}, ValueError, "unknown lab scheduler"),
        (
            {"reference": "orthogonal"},
            ValueError,
            "reference 'orthogonal' is not one of the couplings",
        ),
        ({"output": {"dir": None, "grids": 2}}, ValueError, "output.dir is required"),
        ({"colours": ["red"]}, ValueError, r"unknown key 'colours'"),
        ({"save_images": True}, ValueError, r"unknown key 'save_images'"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path, change, error, message):
    data = lab_config(tmp_path / "run", **change)
    if change.get("output", {}).get("dir", "") is None:
        del data["output"]["dir"]
    with pytest.raises(error, match=message):
        validate_config(data)


def test_metric_lab_needs_lab_models(tmp_path, tiny_pipeline_dir):
    data = lab_config(
        tmp_path / "run",
        models=[str(tiny_pipeline_dir("sd15"))],
        metrics={"names": ["l2", "lab"]},
        prompts={"source": "builtin"},
    )
    with pytest.raises(ValueError, match="needs lab models only"):
        validate_config(data)


def test_cli_reports_a_bad_config_before_any_work(tmp_path, capsys):
    data = lab_config(tmp_path / "run", couplings=["independent", "nope"])
    path = write_toml(tmp_path / "c.yaml", json.dumps(data))
    fails_cleanly(capsys, ["eval", str(path)], "unknown coupling 'nope'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"generation": {"steps": 1001}}, r"generation.steps must be <= 1000"),
        ({"--set": "generation.guidance=nan"}, "guidance must be a finite number"),
        ({"--set": "models=[{path = 'lab', guidance = inf}]"}, "guidance must be a finite"),
        ({"generation": {"num_images": 10**6}}, "num_images must be <= 1024"),
        ({"couplings": ["equicorrelated:rho=-0.9"]}, "cannot draw galleries of 3"),
        ({"models": ["lab:size=48"]}, r"lab size must be one of \(32, 64\)"),
        ({"models": ["lab:smoothing=nan"]}, "smoothing"),
        ({"generation": {"seeds_per_prompt": 10**9}}, "seeds_per_prompt must be <="),
        ({"metrics": {"vendi_q": -1}}, "vendi_q must be >= 0"),
    ],
)
def test_what_cannot_run_is_refused_before_any_folder(tmp_path, capsys, change, message):
    data = lab_config(tmp_path / "run", generation={"num_images": 3})
    extra = ["--set", change.pop("--set")] if "--set" in change else []
    for key, value in change.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = write_toml(tmp_path / "c.yaml", json.dumps(data))  # JSON is YAML
    fails_cleanly(capsys, ["eval", str(path), *extra], message)
    assert not (tmp_path / "run").exists()


def test_eval_never_writes_into_a_folder_that_is_not_a_batch_run(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "summary.md").write_text("a user's notes")
    path = write_toml(tmp_path / "c.yaml", json.dumps(lab_config(out)))
    fails_cleanly(capsys, ["eval", str(path)], "not empty and holds no batch run")
    (out / "config.json").write_text("[1, 2]")
    fails_cleanly(capsys, ["eval", str(path)], "not a batch run")
    assert (out / "summary.md").read_text() == "a user's notes"


def test_a_failed_start_does_not_block_the_corrected_config(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    first = validate_config(lab_config(out))
    write_run_config(out, first, len(build_items(first)))  # started, then failed: no rows
    corrected = validate_config(lab_config(out, generation={"steps": 6}))
    assert check_compatible(out, corrected)["replaces"]


def test_a_changed_config_is_refused_naming_the_change(tmp_path):
    out = tmp_path / "run"
    config = validate_config(lab_config(out))
    assert check_compatible(out, config) is None
    out.mkdir()
    write_run_config(out, config, len(build_items(config)))
    (out / "rows.jsonl").write_text(json.dumps({"id": build_items(config)[0].id}) + "\n")
    assert check_compatible(out, config)["fingerprint"] == config.fingerprint()
    # output-only settings may change between sessions
    assert check_compatible(out, validate_config(lab_config(out, output={"grids": 0})))
    changed = validate_config(lab_config(out, generation={"steps": 6}))
    with pytest.raises(ValueError, match=r"different config.*models\.0\.steps: 5 -> 6"):
        check_compatible(out, changed)
    swapped = validate_config(lab_config(out, couplings=["independent", "orthogonal"]))
    with pytest.raises(ValueError, match=r"couplings.*adding couplings or models"):
        check_compatible(out, swapped)
    # adding a coupling or a model extends the run; anything else about the old rows must hold
    more = ["independent", "orthogonal", "repulsive:strength=0.5"]
    assert check_compatible(out, validate_config(lab_config(out, couplings=more)))["extends"]
    two_models = validate_config(lab_config(out, models=["lab", "lab:scheduler=euler"]))
    assert check_compatible(out, two_models)["extends"]
    fewer_seeds = validate_config(
        lab_config(out, couplings=more, generation={"seeds_per_prompt": 1})
    )
    with pytest.raises(ValueError, match="seeds_per_prompt: 2 -> 1"):
        check_compatible(out, fewer_seeds)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[3] / "configs").glob("*.*")))
def test_example_configs_are_valid_apart_from_weights_and_data(path, tmp_path):
    """Every documented config passes the schema once its models, data and weights are local."""
    local = [
        'models=["lab"]',
        'prompts.source="builtin:lab"',
        "prompts.n=3",
        'prompts.column=""',
        f'output.dir="{tmp_path}"',
        'metrics.names=["l2"]',
        "metrics.lpips_trunks={}",
    ]
    data = apply_overrides(read_config_file(path), local)
    del data["prompts"]["column"]
    config = validate_config(data)
    assert config.couplings[0] == "independent" and config.num_images >= 2
