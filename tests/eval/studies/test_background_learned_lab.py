"""The learned lab's fixed-object study: outputs, resuming, errors, and what the ground truth says
about sharing the inverted noise inside the object's mask."""

from __future__ import annotations

import json

import pytest

from couplednoise.eval.cli import build_parser, main
from couplednoise.eval.studies import background_learned_lab as study
from tests.pipelines.learned_lab.conftest import FIXTURE

STUDY = ["study", "background-learned-lab"]
TINY = ["--references", "2", "--shares", "0,1", "--dilations", "0,3", "--sdedit", "0.5"]
TINY += ["-n", "2", "--steps", "4"]


@pytest.fixture(autouse=True)
def fashion_mnist_fixture(monkeypatch):
    from couplednoise.pipelines.learned_lab.world import FMNIST_DIR_ENV

    monkeypatch.setenv(FMNIST_DIR_ENV, str(FIXTURE))


@pytest.fixture(scope="module")
def learned_pipe():
    from couplednoise.pipelines.learned_lab import load_learned_lab

    return load_learned_lab()


@pytest.fixture(scope="module")
def learned_classifier():
    from couplednoise.pipelines.learned_lab import load_classifier

    return load_classifier()


def parse_args(argv: list[str]):
    return build_parser([*STUDY, *argv])[0].parse_args([*STUDY, *argv])


def test_study_writes_table_figure_json_and_resumes_from_its_cache(tmp_path, monkeypatch):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = [*STUDY, *TINY, "--out", str(out), "--cache", str(cache)]
    assert main(argv) == 0
    data = json.loads((out / "background_learned_lab_study.json").read_text())
    labels = [
        "independent",
        "subspace:share=1,dilation=0",
        "subspace:share=1,dilation=3",
        "inversion",
        "sdedit:strength=0.5",
        "inpaint",
    ]
    summary = data["summaries"]["empty"]
    assert [r["label"] for r in summary["records"]] == labels
    assert summary["best_subspace"] in labels[1:3]
    for record in summary["records"]:
        for metric in study.METRICS:
            assert record[f"{metric}_ci"] is not None  # two references: an interval
        assert 0 <= record["object_kept"] <= 1 and 1 <= record["distinct_backgrounds"] <= 2
        paired = record["label"] != summary["best_subspace"]
        assert ("kept_on_new_background_diff" in record) == paired
    assert [r["seed"] for r in data["references"]] == [0, 1]
    assert len(data["per_reference"]) == 2 and set(data["per_reference"][0]) == {"empty"}
    by_label = {r["label"]: r for r in summary["records"]}
    assert by_label["inversion"]["distinct_backgrounds"] == 1  # one image, K times
    assert by_label["inpaint"]["masked_rms"] < 1e-5  # the blend keeps the object exactly
    assert (out / "background_learned_lab_study.png").stat().st_size > 10_000
    table = (out / "background_learned_lab_study.md").read_text()
    assert "| `subspace:share=1,dilation=3` |" in table and "**Prompt: empty**" in table
    assert len(list(cache.iterdir())) == 2

    # A rerun reads every reference from the cache: nothing is generated again.
    def no_work(*args, **kwargs):
        raise AssertionError("a cached reference was measured again")

    monkeypatch.setattr(study, "measure", no_work)
    assert main(argv) == 0
    again = json.loads((out / "background_learned_lab_study.json").read_text())
    assert again["summaries"] == data["summaries"]


def test_bad_arguments_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("couplednoise.pipelines.learned_lab.load_learned_lab", no_model)
    base = [*STUDY, "--out", str(tmp_path), "--cache", str(tmp_path / "c")]
    assert main([*base, "--sdedit", "0.01"]) == 2  # 0.01 x 25 steps: no step left
    assert "leaves no denoising step" in capsys.readouterr().err
    assert main([*base, "--prompts", "empty", "empty"]) == 2
    assert "repeats" in capsys.readouterr().err
    assert main([*base, "--dilations", "16"]) == 2  # the shared region covers everything
    assert "no background left" in capsys.readouterr().err
    assert main([*base, "--prompts", "a beach"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


def test_sharing_the_inverted_noise_in_a_dilated_mask_carries_the_reference_object(
    learned_pipe, learned_classifier
):
    """Ground truth over 6 held-out references (K = 4, 10 steps, empty prompt): share 1 in the
    object's mask dilated by 3 px brings the gallery's object pixels much closer to the
    reference's than independent noise (share 0), which never redraws the reference's object.
    (Whether the classifier then reads the same object, class + colour + position, is what the
    study measures: at this size the unconditional model mostly does not; docs/learned_lab.md.)"""
    from couplednoise.pipelines.inversion import matching_sampler
    from couplednoise.pipelines.learned_lab.editing import editing_pipelines

    args = parse_args(["--shares", "0,1", "--dilations", "3", "--sdedit", "0.5", "-n", "4"])
    args.steps = 10
    sampler = matching_sampler(learned_pipe)
    models = (learned_pipe, sampler, *editing_pipelines(sampler), learned_classifier)
    refs = study.references(6, seed=0)
    rows = [
        study.measure(models, ref, args, seed=i, kinds=["empty"])["prompts"]["empty"]
        for i, ref in enumerate(refs)
    ]

    def mean(label, metric):
        return sum(r[label][metric] for r in rows) / len(rows)

    shared = "subspace:share=1,dilation=3"
    assert mean(shared, "masked_rms") < mean("independent", "masked_rms") - 0.05
    assert mean("independent", "object_kept") <= 0.1
    assert mean("inpaint", "masked_rms") < 1e-5
    assert mean("inversion", "distinct_backgrounds") == 1


def test_object_not_bg_galleries_use_the_object_prompt_against_the_reference_background(
    learned_pipe, learned_classifier, monkeypatch
):
    """The ``object-not-bg`` kind samples every method with the object prompt and the reference's
    own background as the negative prompt; ``object`` has no negative prompt."""
    import couplednoise.pipelines.background as background
    from couplednoise.pipelines.inversion import matching_sampler
    from couplednoise.pipelines.learned_lab.editing import editing_pipelines
    from couplednoise.pipelines.learned_lab.world import describe

    calls = []

    class RecordingSampling(background.Sampling):
        def kwargs(self, task):
            calls.append(self.negative_prompt)
            return super().kwargs(task)

    monkeypatch.setattr(background, "Sampling", RecordingSampling)
    args = parse_args(["--shares", "0,1", "--dilations", "0", "--sdedit", "0.5", "-n", "2"])
    args.steps = 2
    sampler = matching_sampler(learned_pipe)
    models = (learned_pipe, sampler, *editing_pipelines(sampler), learned_classifier)
    ref = study.references(1, seed=3)[0]
    attributes = describe(ref.codes)[0]
    out = study.measure(models, ref, args, seed=0, kinds=["object", "object-not-bg"])
    methods = len(study.method_labels(args))
    assert set(out["prompts"]) == {"object", "object-not-bg"}
    assert set(out["prompts"]["object-not-bg"]) == set(study.method_labels(args))
    assert calls == [None] * methods + [f"a thing on {attributes['background']}"] * methods
