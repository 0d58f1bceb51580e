import torch

from couplednoise.pipelines.learned_lab.readout import (
    fixed_object_readout,
    gallery_readout,
    nearest_distances,
)
from couplednoise.pipelines.learned_lab.world import ATTRIBUTES, describe, render


def _composites(rows, seed=0):
    return render(torch.tensor(rows), "test", generator=torch.Generator().manual_seed(seed))


def test_gallery_readout_of_real_composites(learned_classifier):
    # Four red bags on four backgrounds, at the left: the prompt "a red bag" is met by all four
    # (if the classifier reads them right) and the background coverage is 4 of min(4, 6).
    bag, red, left = ATTRIBUTES["object"].index("bag"), 0, 0
    batch = _composites([[bag, red, left, b] for b in (0, 1, 3, 5)])
    truth = describe(batch.codes)
    readout = gallery_readout(batch.images, "a red bag", learned_classifier)
    assert readout.attributes == truth
    assert readout.alignment == 1.0
    assert readout.attribute_coverage["background"].distinct == 4
    assert readout.attribute_coverage["background"].limit == 4
    assert readout.attribute_coverage["position"].distinct == 1
    assert set(readout.attribute_coverage) == {"position", "background"}
    # A prompt the images do not meet: no aligned image, so no coverage either.
    other = gallery_readout(batch.images, "a blue bag", learned_classifier)
    assert other.alignment == 0.0 and other.mean_attribute_coverage == 0.0


def test_fixed_object_readout(learned_classifier):
    sneaker = ATTRIBUTES["object"].index("sneaker")
    rows = [[sneaker, 3, 1, b] for b in (0, 1, 2, 3)] + [[sneaker, 0, 1, 4]]
    batch = _composites(rows, seed=1)
    reference = describe(torch.tensor([[sneaker, 3, 1, 0]]))[0]
    # The readout's logic, on what the images really show (a classifier that reads the codes):
    truth = _ReadsCodes(batch)
    readout = fixed_object_readout(batch.images, truth, reference)
    assert readout.object_kept == 4 / 5
    assert readout.distinct_backgrounds == 5 and readout.background_limit == 5
    assert readout.kept_on_new_background == 3 / 5
    # and the committed classifier reads most of it (one object error allowed: it is 93% right)
    measured = fixed_object_readout(batch.images, learned_classifier, reference)
    assert abs(measured.object_kept - readout.object_kept) <= 1 / 5 + 1e-9
    assert measured.distinct_backgrounds >= 4


class _ReadsCodes:
    """A stand-in classifier that returns the composites' true codes."""

    def __init__(self, batch):
        self.batch = batch

    def predict(self, images):
        assert images is self.batch.images
        return self.batch.codes


def test_nearest_distances_match_brute_force():
    g = torch.Generator().manual_seed(0)
    images, bank = torch.rand(7, 3, 32, 32, generator=g), torch.rand(50, 3, 32, 32, generator=g)
    bank[13] = images[2]
    brute = torch.stack([(bank - x).flatten(1).norm(dim=1).min() for x in images])
    got = nearest_distances(images, bank, chunk_size=16)
    torch.testing.assert_close(got, brute)
    assert float(got[2]) == 0.0
