"""Gallery extension: n now, k later, jointly following the documented (n + k) law."""

import pytest
import torch

import couplednoise as cn
from tests.coupling_stats import assert_correlation, assert_standard_normal

SHAPE = (4, 8, 8)


def staged(coupling, n, k, repeats, seed):
    """[repeats, n + k, d] float64 drawn in two stages."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(repeats):
        first = coupling.sample(n, SHAPE, generator=generator)
        out.append(torch.cat([first, coupling.extend(first, k, generator=generator)]))
    return torch.stack(out).reshape(repeats, n + k, -1).double()


CASES = [
    (cn.Independent(), 3, 2),
    (cn.Equicorrelated(rho=0.5), 3, 3),
    (cn.Equicorrelated(rho=-0.25), 3, 2),  # -0.25 >= -1/4: the 5-sample law is reachable
    (cn.Repulsive(strength=0.5), 4, 4),
    (cn.Repulsive(), 4, 3),
    (cn.Antithetic(), 3, 3),
    (cn.Gaussian(torch.tensor([[0.6 ** abs(i - j) for j in range(5)] for i in range(5)])), 2, 3),
]


@pytest.mark.parametrize(("coupling", "n", "k"), CASES, ids=[c.spec for c, _, _ in CASES])
def test_staged_draws_follow_the_joint_law(coupling, n, k):
    if isinstance(coupling, cn.Gaussian):
        first_law = cn.Gaussian(coupling.correlation_matrix[:n, :n])
        generator = torch.Generator().manual_seed(9)
        out = []
        for _ in range(120):
            first = first_law.sample(n, SHAPE, generator=generator)
            out.append(torch.cat([first, coupling.extend(first, k, generator=generator)]))
        z = torch.stack(out).reshape(120, n + k, -1).double()
    else:
        z = staged(coupling, n, k, repeats=120, seed=9)
    target = coupling.extension_correlation(n, k)
    assert_correlation(z, target, coupling.spec)
    for i in range(n, n + k):
        assert_standard_normal(z[:, i], f"{coupling.spec} new sample {i}")


def test_projective_couplings_extend_to_their_own_law():
    assert torch.allclose(
        cn.Equicorrelated(rho=0.3).extension_correlation(3, 2),
        cn.Equicorrelated(rho=0.3).correlation(5),
    )
    assert torch.equal(cn.Antithetic().extension_correlation(3, 3), cn.Antithetic().correlation(6))


def test_zero_sum_gallery_extends_independently():
    c = cn.Repulsive().extension_correlation(4, 4)
    assert c[:4, 4:].abs().max() == 0
    assert torch.allclose(c[4:, 4:], cn.Repulsive().correlation(4))


def test_antithetic_odd_gallery_gets_its_partner_first():
    first = cn.Antithetic().sample(3, SHAPE, generator=torch.Generator().manual_seed(0))
    more = cn.Antithetic().extend(first, 2, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(more[0], -first[2], atol=1e-6)


def test_orthogonal_extension_stays_orthogonal():
    generator = torch.Generator().manual_seed(0)
    first = cn.Orthogonal().sample(4, SHAPE, generator=generator)
    z = (
        torch.cat([first, cn.Orthogonal().extend(first, 4, generator=generator)])
        .flatten(1)
        .double()
    )
    unit = z / z.norm(dim=1, keepdim=True)
    assert (unit @ unit.T - torch.eye(8, dtype=unit.dtype)).abs().max() < 1e-5
    new = []
    for seed in range(60):
        g = torch.Generator().manual_seed(100 + seed)
        f = cn.Orthogonal().sample(4, SHAPE, generator=g)
        new.append(cn.Orthogonal().extend(f, 2, generator=g))
    assert_standard_normal(torch.stack(new)[:, 1], "orthogonal extension")


def test_subspace_extension_keeps_sharing():
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1
    coupling = cn.Subspace(mask=mask, share=1.0)
    first = coupling.sample(3, SHAPE, generator=torch.Generator().manual_seed(0))
    more = coupling.extend(first, 2, generator=torch.Generator().manual_seed(1))
    inside = mask.bool()
    assert torch.allclose(more[..., inside], first[:1][..., inside].expand(2, 4, -1), atol=1e-5)
    assert not torch.allclose(more[..., ~inside], first[:2][..., ~inside])


def test_extension_rejects_samples_from_another_law():
    not_zero_sum = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="break a constraint"):
        cn.Repulsive().extend(not_zero_sum, 2)
    with pytest.raises(ValueError, match="needs an"):
        cn.Gaussian(torch.eye(4)).extend(torch.zeros(2, *SHAPE), 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        cn.Independent().extend(torch.zeros(2, *SHAPE), 0)
