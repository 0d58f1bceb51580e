"""``export_weights``: a full export loads as a pipeline; a classifier-only export replaces the
classifier and leaves the denoiser and its training record as they were."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from couplednoise.pipelines.learned_lab.classifier import ClassifierConfig, train_classifier
from couplednoise.pipelines.learned_lab.load import (
    DENOISER_FILES,
    WEIGHTS_DIR,
    export_weights,
    load_classifier,
    load_learned_lab,
    training_record,
    weights_fingerprint,
)
from couplednoise.pipelines.learned_lab.train import train_denoiser
from tests.pipelines.learned_lab.test_train import _config

TINY_CLASSIFIER = ClassifierConfig(
    steps=2, batch_size=4, width=4, eval_size=8, object_steps=2, object_width=4, object_batch_size=4
)


def test_a_full_export_loads_as_the_pipeline_and_classifier(tmp_path):
    train_denoiser(_config(steps=2), tmp_path / "run", progress=False)
    trained = train_classifier(TINY_CLASSIFIER, tmp_path / "cls", progress=False)
    target = export_weights(tmp_path / "run", tmp_path / "cls", tmp_path / "weights")
    pipe = load_learned_lab(f"learned-lab:weights={target}")
    images = pipe("a red sneaker", num_inference_steps=2, output_type="pt").images
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()
    classifier = load_classifier(target)
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(classifier.state_dict()[name], tensor), name
    record = training_record(target)
    assert record["denoiser"]["step"] == 2 and record["classifier"]["step"] == 2 + 2
    card = (target / "MODEL_CARD.md").read_text()
    assert "width 4" in card and "2 of 2 planned steps" in card
    assert "object-crop CNN (width 4" in card and "--object-steps 2" in card


def test_a_classifier_only_export_keeps_the_denoiser(tmp_path):
    target = shutil.copytree(WEIGHTS_DIR, tmp_path / "weights")
    before = {p.relative_to(target): p.read_bytes() for p in (target / "unet").rglob("*")}
    denoiser = training_record(target)["denoiser"]
    spec = f"learned-lab:weights={target}"
    fingerprints = weights_fingerprint(spec), weights_fingerprint(spec, DENOISER_FILES)
    assert fingerprints == (weights_fingerprint(), weights_fingerprint(files=DENOISER_FILES))
    train_classifier(TINY_CLASSIFIER, tmp_path / "cls", progress=False)
    export_weights(None, tmp_path / "cls", target)
    # Caches keyed on the weights see the new classifier; the denoiser's key stays.
    assert weights_fingerprint(spec) != fingerprints[0]
    assert weights_fingerprint(spec, DENOISER_FILES) == fingerprints[1]
    after = {p.relative_to(target): p.read_bytes() for p in (target / "unet").rglob("*")}
    assert after == before
    assert training_record(target)["denoiser"] == denoiser
    meta = json.loads((target / "classifier.json").read_text())
    assert meta["width"] == 4 and meta["object_width"] == 4
    assert load_classifier(target).predict(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


def test_a_classifier_only_export_needs_a_complete_target(tmp_path):
    train_classifier(TINY_CLASSIFIER, tmp_path / "cls", progress=False)
    with pytest.raises(FileNotFoundError, match=r"lacks unet/config\.json"):
        export_weights(None, tmp_path / "cls", tmp_path / "empty")
    assert not (tmp_path / "empty" / "classifier.safetensors").exists()
