"""Fitting cell predictors: which outcome a noise becomes, as an equal-mass power diagram.

The model (``CellPredictor``): noise z becomes outcome m = argmax_m <U z, a_m> + b_m. With an exact
denoiser (the lab) the final image depends on z only through its projection on the span of the
prompt's centered outcomes, and this is close to an equal-mass power diagram there. Two fits:
- ``cell_predictor_from_outcomes``: the outcomes are known (the lab's scene set: an oracle).
- ``cell_predictor_from_pilots``: P pilot runs (noise z_p -> output x_p, in the noise's space)
  stand in for them: outcomes = the distinct pilot outputs, U = their principal subspace,
  a_m = Sigma^power (x_m - mean) in U's coordinates (Sigma: the pilot outputs' covariance;
  power 0 by default, which did best on held-out lab seeds), b = equal-mass offsets; attribute tables from labels of the pilot outputs or, without
  labels, from an average-linkage hierarchy of their embeddings at several numbers of clusters.
Pure torch math; running the pilots is model code (``couplednoise.pipelines.pool_pilots``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from couplednoise.base import check_count, check_shape
from couplednoise.predictors import CellPredictor

DEFAULT_LEVELS = (2, 4, 8, 16, 32)


def equal_mass_offsets(
    directions: torch.Tensor,
    masses: torch.Tensor | None = None,
    *,
    samples: int = 50_000,
    smoothing: tuple[float, ...] = (0.1, 0.03, 0.01),
    iterations: int = 30,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """(offsets b [M], worst relative error of the hard cells' masses) so that the cells
    {phi : m = argmax <phi, a_m> + b_m} of phi ~ N(0, I_r) have ``masses`` (equal by default).

    Semi-discrete optimal transport in its dual: b minimises the convex
    F(b) = E[eps logsumexp((<phi, a> + b) / eps)] - <masses, b>, whose gradient is the soft
    cells' masses minus the targets; damped Newton steps on a Monte-Carlo sample of phi, with
    eps = ``smoothing`` x the spread of the scores (small: the soft cells are nearly the hard
    ones), decreasing through ``smoothing`` (each stage starts from the last). ``directions``
    a [M, r].
    """
    a = torch.as_tensor(directions, dtype=torch.float64)
    cells = a.shape[0]
    target = (
        torch.full((cells,), 1.0 / cells, dtype=torch.float64)
        if masses is None
        else torch.as_tensor(masses, dtype=torch.float64)
    )
    if target.shape != (cells,) or not bool((target > 0).all()):
        raise ValueError(f"masses must be [M = {cells}] positive numbers")
    target = target / target.sum()
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    count = check_count(samples, "samples")
    phi = torch.randn(count, a.shape[1], generator=generator, dtype=torch.float64)
    scores = phi @ a.T
    spread = float(scores.std()) or 1.0
    offsets = torch.zeros(cells, dtype=torch.float64)
    for fraction in smoothing:
        offsets = _newton_offsets(scores, target, offsets, fraction * spread, iterations)
    hard = torch.bincount((scores + offsets).argmax(1), minlength=cells).double() / count
    return offsets - offsets.mean(), float(((hard - target).abs() / target).max())


def _newton_offsets(
    scores: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor, eps: float, iterations: int
) -> torch.Tensor:
    """Damped Newton on the entropic dual F(b) from ``offsets``; scores [S, M]."""
    count, cells = scores.shape

    def dual(b: torch.Tensor) -> float:
        return float(eps * torch.logsumexp((scores + b) / eps, 1).mean() - target @ b)

    for _ in range(iterations):
        p = torch.softmax((scores + offsets) / eps, 1)
        mass = p.mean(0)
        gradient = mass - target
        if float((gradient.abs() / target).max()) < 1e-4:
            break
        hessian = (torch.diag(mass) - p.T @ p / count) / eps
        # F is flat along b + c 1: pin that direction so the system is regular
        step = torch.linalg.solve(hessian + torch.full_like(hessian, 1.0 / cells), gradient)
        value, slope, t = dual(offsets), float(gradient @ step), 1.0
        while dual(offsets - t * step) > value - 1e-4 * t * slope and t > 1e-6:
            t /= 2
        offsets = offsets - t * step
    return offsets


def principal_subspace(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean [d], U [r, d] orthonormal rows spanning the centered points, variances [r]) of
    points [n, d] (float64): the covariance (1/n) sum c c^T is U^T diag(variances) U."""
    x = torch.as_tensor(points, dtype=torch.float64)
    mean = x.mean(0)
    _, singular, right = torch.linalg.svd(x - mean, full_matrices=False)
    keep = singular > 1e-6 * singular[0]
    if not bool(keep.any()):
        raise ValueError("the outcomes are all equal: there is nothing to tell apart")
    return mean, right[keep], singular[keep] ** 2 / x.shape[0]


def power_directions(
    outcomes: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    variances: torch.Tensor,
    power: float,
) -> torch.Tensor:
    """a [M, r]: Sigma^power (x_m - mean) in U's coordinates, Sigma = U^T diag(variances) U."""
    return ((outcomes - mean) @ basis.T) * variances**power


def average_linkage(points: torch.Tensor, levels: Sequence[int]) -> dict[int, torch.Tensor]:
    """Cluster labels [n] (int64, 0..k-1) for each k in ``levels`` (k < n): average-linkage
    (UPGMA) agglomeration of points [n, p] stopped at k clusters, as scipy's
    linkage(method="average") + fcluster(criterion="maxclust") (written here: the core is torch
    only, and the n here are a few dozen pilot outcomes)."""
    x = torch.as_tensor(points, dtype=torch.float64)
    n = x.shape[0]
    distance = torch.cdist(x, x)
    distance.fill_diagonal_(torch.inf)
    sizes = torch.ones(n, dtype=torch.float64)
    alive = torch.ones(n, dtype=torch.bool)
    owner = torch.arange(n)  # the cluster (a surviving index) each point belongs to
    wanted = {int(k) for k in levels if 1 <= int(k) < n}
    labels: dict[int, torch.Tensor] = {}
    for clusters in range(n, 1, -1):
        if clusters - 1 < min(wanted, default=n):
            break
        flat = int(distance.argmin())
        i, j = sorted(divmod(flat, n))
        merged = (sizes[i] * distance[i] + sizes[j] * distance[j]) / (sizes[i] + sizes[j])
        distance[i], distance[:, i] = merged, merged
        distance[i, i] = torch.inf
        distance[j], distance[:, j] = torch.inf, torch.inf
        sizes[i] += sizes[j]
        alive[j] = False
        owner[owner == j] = i
        if clusters - 1 in wanted:
            labels[clusters - 1] = torch.unique(owner, return_inverse=True)[1]
    return labels


def merge_equal_outputs(outputs: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Labels [P] (int64, 0..C-1 in order of first appearance): outputs closer than ``tolerance``
    (L2, chained) share a label."""
    x = torch.as_tensor(outputs, dtype=torch.float64).flatten(1)
    close = torch.cdist(x, x) < tolerance
    labels = torch.arange(x.shape[0])
    for _ in range(x.shape[0]):  # propagate the smallest index through chains of close pairs
        updated = torch.where(close, labels[None], x.shape[0]).amin(1)
        if torch.equal(updated, labels):
            break
        labels = updated
    return torch.unique(labels, return_inverse=True)[1]


def cell_predictor_from_outcomes(
    outcomes: torch.Tensor,
    shape: Sequence[int],
    *,
    tables: Sequence[tuple[str, torch.Tensor, float]] = (),
    outcome_weight: float = 0.5,
    power: float = 0.1,
    temperature: float = 1.5,
    masses: torch.Tensor | None = None,
    samples: int = 50_000,
    seed: int = 0,
    metadata: Mapping | None = None,
) -> CellPredictor:
    """A cell predictor for known outcomes [M, *shape] (in the noise's space).

    ``tables``: (name, labels [M], weight) per attribute of the outcomes; the outcome itself is
    one more table, named "outcome", weighted ``outcome_weight`` (0 leaves it out).
    """
    shape = check_shape(shape)
    x = torch.as_tensor(outcomes, dtype=torch.float64).reshape(-1, math.prod(shape))
    mean, basis, variances = principal_subspace(x)
    directions = power_directions(x, mean, basis, variances, power)
    offsets, error = equal_mass_offsets(
        directions, masses, samples=samples, generator=torch.Generator().manual_seed(seed)
    )
    all_tables = list(tables)
    if outcome_weight > 0:
        all_tables.append(("outcome", torch.arange(x.shape[0]), outcome_weight))
    return CellPredictor(
        basis_matrix=basis.float(),
        shape=shape,
        directions=directions,
        offsets=offsets,
        tables=tuple(all_tables),
        temperature=temperature,
        metadata={**dict(metadata or {}), "mass_error": error, "power": power},
    )


def cell_predictor_from_pilots(
    noise: torch.Tensor,
    outputs: torch.Tensor,
    *,
    embedding: torch.Tensor | None = None,
    labels: Mapping[str, torch.Tensor] | None = None,
    levels: Sequence[int] = DEFAULT_LEVELS,
    outcome_weight: float = 0.3,
    merge_tolerance: float = 0.05,
    power: float = 0.0,
    temperature: float = 0.75,
    samples: int = 50_000,
    seed: int = 0,
    metadata: Mapping | None = None,
) -> CellPredictor:
    """A cell predictor learned from P pilot runs: noise [P, *shape] -> outputs [P, *shape].

    Outcomes are the pilot outputs merged when closer than ``merge_tolerance`` x their median
    pairwise distance. Tables: the outcome (``outcome_weight``), plus one per entry of
    ``labels`` (name -> [P] ints, e.g. a classifier's reading of each pilot image; an outcome
    takes its first pilot's label), or, without labels, an average-linkage hierarchy of the
    outcomes' ``embedding`` rows ([P, q], default the outputs) at ``levels`` clusters.
    ``metadata`` gains the in-sample accuracy: how often argmax of the fitted cells is the
    outcome the pilot noise actually gave.
    """
    z = torch.as_tensor(noise, dtype=torch.float64)
    x = torch.as_tensor(outputs, dtype=torch.float64)
    if z.shape != x.shape or z.dim() < 2:
        raise ValueError(
            f"noise and outputs must both be [P, *shape], got {list(z.shape)} and {list(x.shape)}"
        )
    pilots, shape = z.shape[0], tuple(z.shape[1:])
    if pilots < 2:
        raise ValueError(f"fitting needs at least 2 pilot runs, got {pilots}")
    flat = x.flatten(1)
    pairwise = torch.cdist(flat, flat)
    spread = pairwise[pairwise > 0]
    if spread.numel() == 0:
        raise ValueError("every pilot output is the same: there is nothing to tell apart")
    outcome = merge_equal_outputs(flat, merge_tolerance * float(spread.median()))
    cells = int(outcome.max()) + 1
    first = torch.stack([(outcome == c).nonzero()[0, 0] for c in range(cells)])
    prototypes = torch.stack([flat[outcome == c].mean(0) for c in range(cells)])
    if cells < 2:
        raise ValueError("all pilot outputs merged into one outcome: lower merge_tolerance")
    tables: list[tuple[str, torch.Tensor, float]] = []
    if labels:
        for name, values in labels.items():
            values = torch.as_tensor(values, dtype=torch.int64)
            if values.shape != (pilots,):
                raise ValueError(
                    f"labels[{name!r}] must be [P = {pilots}], got {list(values.shape)}"
                )
            tables.append((name, torch.unique(values[first], return_inverse=True)[1], 1.0))
    else:
        points = flat if embedding is None else torch.as_tensor(embedding, dtype=torch.float64)
        if points.shape[0] != pilots:
            raise ValueError(f"embedding must have P = {pilots} rows, got {points.shape[0]}")
        clustered = torch.stack([points[outcome == c].mean(0) for c in range(cells)])
        for k, level in sorted(average_linkage(clustered, levels).items()):
            tables.append((f"clusters_{k}", level, 1.0))
    # The directions come from the pilots' outputs (their covariance), one row per outcome.
    mean, basis, variances = principal_subspace(flat)
    directions = power_directions(prototypes, mean, basis, variances, power)
    offsets, error = equal_mass_offsets(
        directions, samples=samples, generator=torch.Generator().manual_seed(seed)
    )
    predicted = ((z.flatten(1) @ basis.T) @ directions.T + offsets).argmax(1)
    accuracy = float((predicted == outcome).double().mean())
    if outcome_weight > 0:
        tables.append(("outcome", torch.arange(cells), outcome_weight))
    return CellPredictor(
        basis_matrix=basis.float(),
        shape=shape,
        directions=directions,
        offsets=offsets,
        tables=tuple(tables),
        temperature=temperature,
        metadata={
            **dict(metadata or {}),
            "pilots": pilots,
            "outcomes": cells,
            "in_sample_accuracy": accuracy,
            "mass_error": error,
            "power": power,
        },
    )
