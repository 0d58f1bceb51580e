"""Small dense linear algebra on n x n correlation matrices (float64), shared by the couplings."""

from __future__ import annotations

import torch

# Eigenvalues below -TOLERANCE * n are "not PSD"; those in [-tol, tol] count as zero (singular C).
TOLERANCE = 1e-8


def check_correlation(matrix: torch.Tensor | list, name: str = "correlation") -> torch.Tensor:
    """Validate an n x n correlation matrix (symmetric, unit diagonal, PSD); returns it as float64."""
    c = torch.as_tensor(matrix, dtype=torch.float64)
    if c.dim() != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 1:
        raise ValueError(f"{name} must be a square n x n matrix, got shape {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise ValueError(f"{name} has non-finite entries")
    if not torch.allclose(c, c.T, atol=1e-6, rtol=0):
        raise ValueError(f"{name} must be symmetric (max |C - C^T| = {(c - c.T).abs().max():.3g})")
    if not torch.allclose(
        torch.diagonal(c), torch.ones(c.shape[0], dtype=c.dtype), atol=1e-6, rtol=0
    ):
        raise ValueError(f"{name} must have unit diagonal so every marginal is N(0, I)")
    smallest = torch.linalg.eigvalsh((c + c.T) / 2).min().item()
    if smallest < -1e-6 * c.shape[0]:
        raise ValueError(
            f"{name} must be positive semidefinite (smallest eigenvalue {smallest:.3g})"
        )
    return (c + c.T) / 2


def psd_factor(c: torch.Tensor) -> torch.Tensor:
    """A factor L with L L^T = C for a PSD matrix, singular ones included (eigh, not Cholesky)."""
    w, v = torch.linalg.eigh(c.to(torch.float64))
    return v * w.clamp(min=0).sqrt()


def pseudo_inverse_psd(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C^+, null-space basis [n, m]) of a PSD matrix; eigenvalues <= tol * max count as zero."""
    w, v = torch.linalg.eigh(c.to(torch.float64))
    keep = w > TOLERANCE * max(w.max().item(), 1.0) * c.shape[0]
    inverse = (v[:, keep] / w[keep]) @ v[:, keep].T
    return inverse, v[:, ~keep]


def equicorrelation(n: int, rho: float) -> torch.Tensor:
    """The n x n matrix (1 - rho) I + rho 11^T (float64)."""
    return torch.full((n, n), float(rho), dtype=torch.float64).fill_diagonal_(1.0)


def two_block_equicorrelation(
    n: int, k: int, rho_old: float, rho_new: float, rho_cross: float
) -> torch.Tensor:
    """Correlation of n old then k new samples: equicorrelated blocks, constant cross term.

    ``rho_cross`` is clipped to the range that keeps the matrix PSD. The cross term only acts on the
    span of the two block-mean directions, where PSD means
    (rho_cross^2) n k <= (1 + (n-1) rho_old) (1 + (k-1) rho_new).
    """
    bound = ((1 + (n - 1) * rho_old) * (1 + (k - 1) * rho_new)) ** 0.5 / (n * k) ** 0.5
    cross = max(-bound, min(bound, rho_cross))
    c = torch.full((n + k, n + k), cross, dtype=torch.float64)
    c[:n, :n] = equicorrelation(n, rho_old)
    c[n:, n:] = equicorrelation(k, rho_new)
    return c
