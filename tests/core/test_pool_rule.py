"""The pieces of pool couplings against reference implementations: the assignment steps vs
scipy's exact solver, average linkage vs scipy's, the equal-mass fit, cell predictors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

import couplednoise as cn
from couplednoise.cells import (
    average_linkage,
    cell_predictor_from_outcomes,
    cell_predictor_from_pilots,
    equal_mass_offsets,
    merge_equal_outputs,
)
from couplednoise.partition import greedy_assignment, improve_assignment


def total(gain: torch.Tensor, cols: torch.Tensor) -> float:
    return float(gain[torch.arange(gain.shape[0]), cols].sum())


def reference_greedy(gain: torch.Tensor) -> torch.Tensor:
    """The sequential greedy matching: repeatedly the largest entry of free rows and columns."""
    g = gain.clone()
    cols = torch.full((g.shape[0],), -1)
    for _ in range(g.shape[0]):
        b, c = divmod(int(g.argmax()), g.shape[1])
        cols[b] = c
        g[b], g[:, c] = -torch.inf, -torch.inf
    return cols


@pytest.mark.parametrize(("rows", "width", "seed"), [(8, 8, 0), (16, 48, 1), (64, 192, 2)])
def test_assignment_is_the_greedy_matching_then_a_local_optimum_near_the_exact_one(
    rows, width, seed
):
    g = torch.Generator().manual_seed(seed)
    # low-rank gains plus noise, like the coverage rule's state @ hits
    gain = torch.rand(rows, 3, generator=g, dtype=torch.float64) @ torch.rand(
        3, width, generator=g, dtype=torch.float64
    ) + 0.1 * torch.rand(rows, width, generator=g, dtype=torch.float64)
    greedy = greedy_assignment(gain)
    assert torch.equal(greedy, reference_greedy(gain))
    improved = improve_assignment(gain, greedy, 4 * rows)
    assert improved.unique().numel() == rows  # still one distinct column per row
    r, c = linear_sum_assignment(gain.numpy(), maximize=True)
    best = float(gain.numpy()[r, c].sum())
    assert total(gain, greedy) <= total(gain, improved) <= best + 1e-9
    assert total(gain, improved) >= 0.99 * best


def test_greedy_assignment_handles_ties():
    cols = greedy_assignment(torch.zeros(4, 6, dtype=torch.float64))
    assert cols.unique().numel() == 4


@pytest.mark.parametrize("seed", [0, 1])
def test_average_linkage_matches_scipy(seed):
    points = torch.randn(30, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ours = average_linkage(points, (2, 4, 8, 16))
    tree = linkage(points.numpy(), method="average")
    for k, labels in ours.items():
        reference = fcluster(tree, k, criterion="maxclust")
        # the same partition (labels may be numbered differently)
        pairs = {(int(a), int(b)) for a, b in zip(labels, reference)}
        assert len(pairs) == k == len(set(labels.tolist()))


def test_merge_equal_outputs_chains_close_pairs():
    x = torch.tensor([[0.0], [0.05], [0.1], [5.0], [5.01]])
    assert merge_equal_outputs(x, 0.06).tolist() == [0, 0, 0, 1, 1]


def test_equal_mass_offsets_give_equal_cells_on_fresh_noise():
    g = torch.Generator().manual_seed(0)
    directions = torch.randn(6, 4, generator=g, dtype=torch.float64)
    directions[0] *= 0.2  # a weak direction: its cell is tiny unless its offset grows
    offsets, error = equal_mass_offsets(directions, samples=20_000, generator=g)
    fresh = torch.randn(40_000, 4, generator=g, dtype=torch.float64)
    mass = torch.bincount((fresh @ directions.T + offsets).argmax(1), minlength=6) / 40_000.0
    # 40,000 fresh draws: each mass within 5 standard errors of 1/6, plus the fit's own error
    assert (mass - 1 / 6).abs().max() < 5 * (1 / 6 * 5 / 6 / 40_000) ** 0.5 + error / 6
    assert error < 0.1


def test_a_cell_predictor_from_outcomes_recovers_a_power_diagram():
    """Outcomes in a known 3-D subspace: the fitted basis spans it, and the predicted cell of a
    noise is the outcome whose centered direction correlates with it most (offsets aside)."""
    g = torch.Generator().manual_seed(1)
    d = 48
    frame = torch.linalg.qr(torch.randn(d, 3, generator=g, dtype=torch.float64))[0]
    outcomes = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 3) @ frame.T
    predictor = cell_predictor_from_outcomes(
        outcomes, (3, 4, 4), tables=(("parity", torch.arange(5) % 2, 1.0),), samples=5000
    )
    basis = predictor.basis_matrix.double()
    assert basis.shape == (3, d)
    # the basis lies in the outcomes' span
    assert torch.allclose(basis @ frame @ frame.T, basis, atol=1e-5)
    z = torch.randn(200, 3, 4, 4, generator=g)
    prediction = predictor.predict(z)
    assert [t.shape for t in prediction.tables] == [(200, 2), (200, 5)]
    assert torch.allclose(prediction.tables[0].sum(1), torch.ones(200, dtype=torch.float64))


def test_a_cell_predictor_from_pilots_of_a_power_diagram_model_predicts_held_out_runs():
    """A toy 'model' that maps noise to the outcome of a power diagram: 64 pilots fit a
    predictor that calls most held-out noises right."""
    g = torch.Generator().manual_seed(2)
    shape = (2, 4, 4)
    outcomes = torch.randn(6, 32, generator=g, dtype=torch.float64) * 2

    def model(z):
        centered = outcomes - outcomes.mean(0)
        return outcomes[(z.flatten(1).double() @ centered.T).argmax(1)].reshape(-1, *shape)

    noise = torch.randn(64, *shape, generator=g)
    predictor = cell_predictor_from_pilots(noise, model(noise), levels=(2, 3), samples=5000)
    assert predictor.metadata["outcomes"] == 6 and predictor.metadata["in_sample_accuracy"] > 0.8
    test = torch.randn(500, *shape, generator=g)
    table = [name for name, _, _ in predictor.tables].index("outcome")
    cell = predictor.predict(test).tables[table].argmax(1)
    # outcome m is the m-th distinct pilot output, in order of first appearance
    distinct = []
    for output in model(noise).flatten(1):
        if not any(torch.equal(output, seen) for seen in distinct):
            distinct.append(output)
    predicted = torch.stack(distinct)[cell]
    right = (predicted == model(test).flatten(1)).all(1)
    assert float(right.double().mean()) > 0.8


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: equal_mass_offsets(torch.ones(3, 2), torch.tensor([1.0, -1, 1])), "positive"),
        (
            lambda: cell_predictor_from_pilots(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)),
            "at least 2 pilot runs",
        ),
        (
            lambda: cell_predictor_from_pilots(torch.zeros(4, 2, 2), torch.zeros(4, 2, 2)),
            "every pilot output is the same",
        ),
        (
            lambda: cell_predictor_from_pilots(torch.zeros(4, 2, 2), torch.zeros(4, 3)),
            "noise and outputs must both be",
        ),
    ],
)
def test_fitting_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_pool_and_its_predictors_are_registered_and_the_dct_basis_is_orthonormal():
    assert cn.COUPLINGS["pool"] is cn.Pool
    assert set(cn.PREDICTORS) == {"dct", "learned"}
    predictor, shape = cn.DCTPredictor(3), (2, 5, 6)
    basis = predictor.lift(torch.eye(18), shape).reshape(18, 60).double()  # the rows of U
    assert torch.allclose(basis @ basis.T, torch.eye(18, dtype=torch.float64), atol=1e-6)
    # U is the separable DCT-II: U[(c, u, v), (c, i, j)] = D5[u, i] D6[v, j] (scipy's DCT)
    from scipy.fft import dct

    d5, d6 = (torch.tensor(dct(np.eye(n), norm="ortho", axis=0)) for n in (5, 6))
    plane = torch.einsum("ui,vj->uvij", d5[:3], d6[:3]).reshape(9, 30)
    assert torch.allclose(basis, torch.block_diag(plane, plane), atol=1e-6)
    z = torch.randn(4, *shape)
    assert torch.allclose(
        predictor.project(z).double(), z.reshape(4, 60).double() @ basis.T, atol=1e-5
    )
