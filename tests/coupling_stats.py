"""Statistical helpers for the coupling tests: tolerances derived from the sample size."""

from __future__ import annotations

import math

import torch
from scipy import stats

# Z-score bound for every moment check: a false alarm has probability ~6e-7 per check.
Z_BOUND = 5.0


def draws(coupling, n, shape, repeats, seed=0):
    """[repeats, n, d] float64: ``repeats`` independent batches, flattened per sample."""
    generator = torch.Generator().manual_seed(seed)
    batches = [coupling.sample(n, shape, generator=generator) for _ in range(repeats)]
    return torch.stack(batches).reshape(repeats, n, -1).double()


def assert_standard_normal(values: torch.Tensor, label: str = "") -> None:
    """i.i.d. N(0, 1) values: mean, variance, 4th moment within Z_BOUND standard errors, KS p > 1e-4."""
    x = values.flatten().double()
    m = x.numel()
    mean, var = x.mean().item(), x.var().item()
    assert abs(mean) < Z_BOUND / math.sqrt(m), f"{label} mean {mean}"
    assert abs(var - 1) < Z_BOUND * math.sqrt(2 / m), f"{label} variance {var}"
    kurt = (x**4).mean().item()  # E x^4 = 3, Var x^4 = 105 - 9 = 96
    assert abs(kurt - 3) < Z_BOUND * math.sqrt(96 / m), f"{label} 4th moment {kurt}"
    p = stats.kstest(x.numpy(), "norm").pvalue
    assert p > 1e-4, f"{label} KS p-value {p}"


def empirical_correlation(z: torch.Tensor) -> torch.Tensor:
    """[n, n] mean of Z_i * Z_j over batches and coordinates, for z [repeats, n, d]."""
    return torch.einsum("rid,rjd->ij", z, z) / (z.shape[0] * z.shape[2])


def assert_correlation(z: torch.Tensor, target: torch.Tensor, label: str = "") -> None:
    """Each entry within Z_BOUND standard errors: Var(mean of XY) = (1 + rho^2) / M."""
    m = z.shape[0] * z.shape[2]
    observed = empirical_correlation(z)
    tolerance = Z_BOUND * ((1 + target**2) / m).sqrt() + 1e-9
    excess = (observed - target).abs() - tolerance
    assert (excess <= 0).all(), f"{label}\nobserved\n{observed}\ntarget\n{target}"
