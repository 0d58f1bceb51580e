"""The committed ground-truth classifier: it loads and reaches its recorded held-out accuracy on
fresh composites of held-out Fashion-MNIST images (the committed test sample) and texture rows."""

import math

import torch

from couplednoise.pipelines.learned_lab.classifier import accuracy, held_out_sample
from couplednoise.pipelines.learned_lab.load import classifier_accuracy
from couplednoise.pipelines.learned_lab.world import ATTRIBUTES

N = 400
# The target: >= 0.95 held-out accuracy per attribute (recorded on 4,000 composites).
FLOOR = {"object": 0.95, "colour": 0.95, "position": 0.95, "background": 0.95}


def test_classifier_reaches_its_accuracy_on_a_fresh_held_out_sample(learned_classifier):
    recorded = classifier_accuracy()
    images, codes = held_out_sample(N, seed=2024)  # a seed the recorded figure did not use
    measured = accuracy(learned_classifier, images, codes)
    for name in ATTRIBUTES:
        assert recorded[name] >= FLOOR[name], (name, recorded[name])
        # A binomial proportion over N images: 4 standard errors below the recorded accuracy.
        p = recorded[name]
        tolerance = 4 * math.sqrt(p * (1 - p) / N) + 1 / N
        assert measured[name] >= p - tolerance, (name, measured[name], p)


def test_predict_checks_its_input_and_is_batch_invariant(learned_classifier):
    images, _ = held_out_sample(10, seed=7)
    whole = learned_classifier.predict(images)
    parts = torch.cat(
        [learned_classifier.predict(images[i : i + 3], batch_size=2) for i in range(0, 10, 3)]
    )
    assert torch.equal(whole, parts) and whole.shape == (10, 4)
    try:
        learned_classifier.predict(images[:, :, :16])
    except ValueError as error:
        assert "[N, 3, 32, 32]" in str(error)
    else:
        raise AssertionError("a wrong image size must be refused")


def test_object_crops_hold_the_whole_object_at_every_position():
    from couplednoise.pipelines.learned_lab.classifier import OBJECT_CROP, object_crops
    from couplednoise.pipelines.learned_lab.world import sample_composites

    batch = sample_composites(64, "test", generator=torch.Generator().manual_seed(3))
    positions = batch.codes[:, 2]
    crops = object_crops(batch.masks[:, None].expand(-1, 3, -1, -1), positions)
    assert crops.shape == (64, 3, OBJECT_CROP, OBJECT_CROP)
    inside = crops[:, 0].sum((1, 2))
    torch.testing.assert_close(inside, batch.masks.sum((1, 2)))  # nothing of the object cut off
    # Pixel by pixel: a crop is the image (zero outside) from the position's corner on.
    image_crops = object_crops(batch.images, positions)
    padded = torch.nn.functional.pad(batch.images, (1, 1, 1, 1))
    i = int((positions == 1).nonzero()[0])  # "right": centre x 21, y 16 -> corner (9, 4)
    torch.testing.assert_close(image_crops[i], padded[i, :, 5:29, 10:34])


def test_the_crop_stage_leaves_the_whole_image_cnn_as_a_one_stage_run_trains_it(tmp_path):
    from couplednoise.pipelines.learned_lab.classifier import ClassifierConfig, train_classifier

    one = ClassifierConfig(steps=3, batch_size=4, width=4, eval_size=8)
    two = ClassifierConfig(
        steps=3,
        batch_size=4,
        width=4,
        eval_size=8,
        object_steps=2,
        object_width=4,
        object_batch_size=4,
    )
    plain = train_classifier(one, tmp_path / "one", progress=False)
    staged = train_classifier(two, tmp_path / "two", progress=False)
    assert staged.step == 5 and staged.model.object_net is not None
    base = plain.model.state_dict()
    for name, tensor in staged.model.state_dict().items():
        if not name.startswith("object_net."):
            assert torch.equal(tensor, base[name]), name
    # The object logits come from the crop CNN.
    images, _ = held_out_sample(6, seed=5)
    staged.model.eval()
    with torch.no_grad():
        crop_logits = staged.model(images)[0]
        base_logits = staged.model.base_logits(images)[0]
    assert crop_logits.shape == base_logits.shape == (6, 7)
    assert not torch.allclose(crop_logits, base_logits)
