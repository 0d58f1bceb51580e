"""Pairwise / masked LPIPS from cached features against the lpips package's own calls."""

from __future__ import annotations

import copy
import urllib.error

import pytest
import torch

from couplednoise.eval import MissingWeightsError, load_lpips, masked_lpips, pairwise_lpips

SIZE = 32


@pytest.fixture(scope="module", params=["alex", "vgg"])
def net(request):
    """A random-trunk LPIPS net with the real linear heads (explicitly requested random weights)."""
    return load_lpips(request.param, random_weights=True)


@pytest.fixture(scope="module")
def alex():
    return load_lpips("alex", random_weights=True)


def _reference_net(net, *, spatial: bool):
    """lpips' own forward with the same modules (a shallow copy sharing the weights)."""
    ref = copy.copy(net)
    ref.spatial = spatial
    return ref


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_pairwise_lpips_equals_lpips_pair_calls(net):
    images = _images(3)
    matrix = pairwise_lpips(images, net, reduction="none", batch_size=2)
    ref = _reference_net(net, spatial=False)
    with torch.no_grad():
        for i, j in [(0, 1), (0, 2), (1, 2)]:
            expected = ref(images[i : i + 1], images[j : j + 1], normalize=True).reshape(())
            torch.testing.assert_close(matrix[i, j], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(matrix, matrix.T)
    assert torch.all(matrix.diagonal() == 0)
    upper = matrix[torch.triu_indices(3, 3, 1).unbind()]
    torch.testing.assert_close(pairwise_lpips(images, net), upper.mean())


def test_pairwise_lpips_identical_is_zero_order_invariant_and_no_grad(alex):
    same = _images(1).expand(3, -1, -1, -1)
    assert pairwise_lpips(same, alex).abs().item() < 1e-6
    images = _images(5, seed=1)
    value = pairwise_lpips(images, alex)
    assert not value.requires_grad
    perm = torch.tensor([4, 2, 0, 3, 1])
    torch.testing.assert_close(pairwise_lpips(images[perm], alex), value)


def test_pairwise_lpips_with_mask_equals_spatial_map_mean_in_mask(alex):
    images = _images(3, seed=2)
    mask = torch.zeros(SIZE, SIZE)
    mask[4:20, 8:30] = 1
    matrix = pairwise_lpips(images, alex, mask=mask, reduction="none")
    ref = _reference_net(alex, spatial=True)
    with torch.no_grad():
        for i, j in [(0, 1), (0, 2), (1, 2)]:
            spatial_map = ref(images[i : i + 1], images[j : j + 1], normalize=True)[0, 0]
            expected = (spatial_map * mask).sum() / mask.sum()
            torch.testing.assert_close(matrix[i, j], expected, rtol=1e-5, atol=1e-6)


def test_masked_lpips_equals_spatial_lpips_in_mask_and_full_mask(alex):
    images, reference = _images(3, seed=3), _images(1, seed=4)[0]
    ref = _reference_net(alex, spatial=True)
    with torch.no_grad():
        maps = ref(images, reference[None].expand(3, -1, -1, -1), normalize=True)[:, 0]
    full = masked_lpips(images, reference, torch.ones(SIZE, SIZE), alex, reduction="none")
    torch.testing.assert_close(full, maps.mean(dim=(1, 2)), rtol=1e-5, atol=1e-6)
    masks = torch.zeros(3, 1, SIZE, SIZE)
    masks[0, :, :10] = 1
    masks[1, :, :, 5:] = 1
    masks[2, :, 12:20, 12:20] = 1
    per_image = masked_lpips(images, reference, masks, alex, reduction="none")
    expected = (maps * masks[:, 0]).sum(dim=(1, 2)) / masks.sum(dim=(1, 2, 3))
    torch.testing.assert_close(per_image, expected, rtol=1e-5, atol=1e-6)
    same = masked_lpips(reference[None], reference, torch.ones(SIZE, SIZE), alex)
    assert same.abs().item() < 1e-6


def test_masked_lpips_rejects_empty_or_non_binary_mask(alex):
    images, reference = _images(2), _images(1, seed=1)[0]
    with pytest.raises(ValueError, match="empty"):
        masked_lpips(images, reference, torch.zeros(SIZE, SIZE), alex)
    with pytest.raises(ValueError, match="binary"):
        masked_lpips(images, reference, torch.full((SIZE, SIZE), 0.5), alex)
    with pytest.raises(ValueError, match="mask is"):
        masked_lpips(images, reference, torch.ones(SIZE, SIZE + 1), alex)
    with pytest.raises(ValueError, match="reference"):
        masked_lpips(images, _images(3), torch.ones(SIZE, SIZE), alex)


def test_lpips_dtype_and_device_handling(alex):
    images = _images(3, seed=5)
    expected = pairwise_lpips(images, alex, reduction="none")
    as_double = pairwise_lpips(images.double(), alex, reduction="none")
    assert as_double.dtype == torch.float64
    torch.testing.assert_close(as_double.float(), expected)
    net64 = load_lpips("alex", random_weights=True, dtype=torch.float64)
    net64.load_state_dict(alex.state_dict())
    torch.testing.assert_close(pairwise_lpips(images, net64, reduction="none"), expected)
    assert next(net64.parameters()).dtype == torch.float64
    assert not any(p.requires_grad for p in net64.parameters()) and not net64.training


def test_pairwise_lpips_rejects_non_lpips_net():
    with pytest.raises(TypeError, match=r"lpips\.LPIPS"):
        pairwise_lpips(_images(), torch.nn.Identity())


def test_load_lpips_trunk_from_local_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(alexnet.state_dict(), path)
    net = load_lpips("alex", trunk_path=path)
    torch.testing.assert_close(net.net.slice1[0].weight, alexnet.features[0].weight)
    torch.testing.assert_close(getattr(net.net.slice5, "10").bias, alexnet.features[10].bias)
    with pytest.raises(MissingWeightsError, match="not found"):
        load_lpips("alex", trunk_path=tmp_path / "missing.pth")


def test_load_lpips_without_weights_names_them(monkeypatch, tmp_path):
    """No cached trunk and no network (as on our machines): a clear error, never random weights."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    import torchvision.models._api

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(MissingWeightsError, match="trunk_path"):
        load_lpips("alex")
    with pytest.raises(ValueError, match="alex"):
        load_lpips("resnet")
