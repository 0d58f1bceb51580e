import pytest
import torch

from couplednoise.pipelines.learned_lab import world
from couplednoise.pipelines.learned_lab.world import (
    ATTRIBUTES,
    MissingDataError,
    render,
    sample_codes,
    sample_composites,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_composites_are_reproducible_from_a_seed_and_differ_across_seeds():
    a = sample_composites(16, "train", generator=_gen(3))
    b = sample_composites(16, "train", generator=_gen(3))
    c = sample_composites(16, "train", generator=_gen(4))
    assert torch.equal(a.images, b.images) and torch.equal(a.codes, b.codes)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (16, 3, 32, 32) and a.masks.shape == (16, 32, 32)
    assert a.images.min() >= 0 and a.images.max() <= 1


def test_render_draws_what_the_codes_say():
    # Every attribute value, against a plain black background: the object's colour and position
    # are visible in the pixels (mean colour of the masked pixels, centre of mass of the mask).
    codes = torch.tensor([[o, c, p, 3] for o in range(7) for c in range(6) for p in range(4)])
    batch = render(codes, "test", generator=_gen())
    mask = batch.masks > 0.9
    assert bool(mask.flatten(1).any(1).all()), "every composite shows its object"
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    weight = mask.float()
    cx = (weight * xs).sum((1, 2)) / weight.sum((1, 2))
    cy = (weight * ys).sum((1, 2)) / weight.sum((1, 2))
    position = codes[:, 2]
    assert bool((cx[position == 0] < 15).all()) and bool((cx[position == 1] > 16).all())
    assert bool((cy[position == 2] < 15).all()) and bool((cy[position == 3] > 16).all())
    red = codes[:, 1] == 0
    rgb = (batch.images * weight[:, None]).sum((2, 3)) / weight.sum((1, 2))[:, None]
    assert bool((rgb[red, 0] > 2 * rgb[red, 1]).all()), "red objects are red"


def test_splits_use_disjoint_sources():
    train_images, _ = world.fashion_mnist("train")
    test_images, _ = world.fashion_mnist("test")
    flat_train = {bytes(x.numpy()) for x in train_images}
    assert not any(bytes(x.numpy()) in flat_train for x in test_images)
    # Texture crops: the train split reads rows [0, 192) of each texture, test rows [192, 256).
    # Find each crop's corner 4 x 4 patch among all windows of the tinted texture (and its mirror).
    plane = world.textures()[0]
    tint = torch.tensor([0.62, 0.32, 0.24])[:, None, None]
    kind = torch.zeros(12, dtype=torch.int64)  # brick
    for split, rows in (("train", range(0, 192 - 31)), ("test", range(192, 256 - 31))):
        crops = world._backgrounds(kind, split, _gen(5))
        for crop in crops:
            tops = set()
            for texture in (plane, plane.flip(-1)):
                windows = (tint * (1 + 0.35 * texture)).clamp(0, 1).unfold(1, 4, 1).unfold(2, 4, 1)
                hit = (windows == crop[:, :4, :4][:, None, None]).flatten(3).all(3).all(0)
                tops |= {int(y) for y in hit.nonzero()[:, 0]}
            assert tops and tops <= set(rows), (split, sorted(tops))


def test_bad_codes_and_splits_are_clear_errors():
    with pytest.raises(ValueError, match="split"):
        sample_composites(2, "val", generator=_gen())
    with pytest.raises(ValueError, match=r"codes\[:, 1\]"):
        render(torch.tensor([[0, 6, 0, 0]]), "train", generator=_gen())
    with pytest.raises(ValueError, match="codes must be"):
        render(torch.zeros(2, 3, dtype=torch.int64), "train", generator=_gen())


def test_missing_fashion_mnist_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv(world.FMNIST_DIR_ENV, str(tmp_path))
    with pytest.raises(MissingDataError, match="apt-get install dataset-fashion-mnist"):
        world.fashion_mnist("train")


def test_codes_are_uniform():
    codes = sample_codes(6000, generator=_gen())
    for j, values in enumerate(ATTRIBUTES.values()):
        counts = torch.bincount(codes[:, j], minlength=len(values)).double()
        expected = 6000 / len(values)
        # Binomial sd sqrt(n p (1 - p)) < sqrt(expected): 5 sd bounds.
        assert float((counts - expected).abs().max()) < 5 * expected**0.5
