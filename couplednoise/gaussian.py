"""Couplings with a Gaussian joint law: independent, equicorrelated (repulsive / attractive),
antithetic, and any correlation matrix.

All of them are Z = (L kron I_d) eps with L L^T = C and eps i.i.d. N(0, 1), so every row is
exactly N(0, I) whenever C has unit diagonal. The equicorrelated family uses the closed form
Z_i = sqrt(1 - rho) (eps_i - mean(eps)) + sqrt(1 + (n - 1) rho) mean(eps), which costs O(n d)
instead of the O(n^2 d) of a dense L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from couplednoise.base import Coupling, Shape, check_real, check_unit_interval, standard_normal
from couplednoise.linalg import (
    check_correlation,
    equicorrelation,
    psd_factor,
    two_block_equicorrelation,
)


def equicorrelated_draw(
    n: int, shape: Shape, rho: float, generator: torch.Generator | None
) -> torch.Tensor:
    """[n, *shape] float32 with cross-sample correlation (1 - rho) I + rho 11^T."""
    z = standard_normal((n, *shape), generator)
    if n == 1 or rho == 0.0:
        return z
    mean = z.mean(dim=0, keepdim=True)
    a = math.sqrt(1.0 - rho)
    b = math.sqrt(max(1.0 + (n - 1) * rho, 0.0))
    # a z + (b - a) mean as one fused in-place pass: lerp(z, end, w) = (1 - w) z + w end
    return z.lerp_(mean.mul_((b - a) / (1.0 - a)), 1.0 - a)


def rho_lower_bound(n: int) -> float:
    """The most negative equicorrelation n samples can have: -1/(n-1) (-inf for n = 1)."""
    return -1.0 / (n - 1) if n > 1 else -math.inf


@dataclass(frozen=True)
class Independent(Coupling):
    """Z_i i.i.d. N(0, I): the baseline every other coupling is compared with."""

    name = "independent"

    def _draw(self, n, shape, generator):
        return standard_normal((n, *shape), generator)

    def _correlation(self, n: int) -> torch.Tensor:
        return torch.eye(n, dtype=torch.float64)

    def extension_correlation(self, n: int, k: int) -> torch.Tensor:
        return torch.eye(n + k, dtype=torch.float64)


@dataclass(frozen=True)
class Equicorrelated(Coupling):
    """Every pair of samples has correlation ``rho`` in [-1/(n-1), 1].

    rho < 0 repels (rho = -1/(n-1): the zero-sum, maximally repulsive gallery), rho = 0 is
    independent, rho > 0 attracts ("variations" of one seed), rho = 1 repeats one noise.
    """

    rho: float = 0.0
    name = "equicorrelated"

    def __post_init__(self):
        rho = check_real(self.rho, "rho")
        if not -1.0 <= rho <= 1.0:
            raise ValueError(f"rho must be in [-1/(n-1), 1] (and so in [-1, 1]), got {rho}")
        object.__setattr__(self, "rho", rho)

    def _check(self, n, shape):
        bound = rho_lower_bound(n)
        if self.rho < bound - 1e-12:
            raise ValueError(
                f"rho must be >= -1/(n-1) = {bound:.3f} for n={n}, got {self.rho}; "
                f"use at most n={math.floor(1 - 1 / self.rho)} samples for rho={self.rho}"
            )

    def _draw(self, n, shape, generator):
        return equicorrelated_draw(n, shape, self.rho, generator)

    def _correlation(self, n: int) -> torch.Tensor:
        self._check(n, ())
        return equicorrelation(n, self.rho)

    def extension_correlation(self, n: int, k: int) -> torch.Tensor:
        """Old and new galleries each equicorrelated (new: rho, or -1/(k-1) if rho is below
        that); cross-correlation rho where that stays PSD, else the nearest admissible value."""
        return two_block_equicorrelation(
            n, k, self.rho, max(self.rho, rho_lower_bound(k)), self.rho
        )


@dataclass(frozen=True)
class Repulsive(Coupling):
    """Equicorrelated with rho = -strength/(n-1): strength 1 is the centered, zero-sum gallery
    Z_i = sqrt(n/(n-1)) (eps_i - mean(eps)), which maximises the mean pairwise distance
    E||A(Z_i - Z_j)||^2 for every linear feature map A. A gallery of n = 1 is plain N(0, I).
    """

    strength: float = 1.0
    name = "repulsive"

    def __post_init__(self):
        object.__setattr__(self, "strength", check_unit_interval(self.strength, "strength"))

    def rho(self, n: int) -> float:
        """The pairwise correlation this coupling gives a gallery of n."""
        return -self.strength / (n - 1) if n > 1 else 0.0

    def _draw(self, n, shape, generator):
        return equicorrelated_draw(n, shape, self.rho(n), generator)

    def _correlation(self, n: int) -> torch.Tensor:
        return equicorrelation(n, self.rho(n))

    def extension_correlation(self, n: int, k: int) -> torch.Tensor:
        """Old gallery: rho(n); new gallery: rho(k); cross-correlation rho(n + k) where that stays
        PSD, else the nearest admissible value (0 after a zero-sum gallery, strength 1: a
        maximally repulsive gallery can only be extended independently of it)."""
        return two_block_equicorrelation(n, k, self.rho(n), self.rho(k), self.rho(n + k))


@dataclass(frozen=True)
class Antithetic(Coupling):
    """Pairs (z, -z): samples 2i and 2i+1 are exact negatives, pairs independent.

    With odd n the last sample is a lone N(0, I); extending the gallery makes its partner the
    first new sample, so n drawn now and k later equal n + k drawn at once in law.
    """

    name = "antithetic"

    def _draw(self, n, shape, generator):
        eps = standard_normal(((n + 1) // 2, *shape), generator)
        z = torch.empty((n, *shape), dtype=eps.dtype, device=eps.device)
        z[0::2] = eps
        z[1::2] = eps[: n // 2]
        z[1::2].neg_()  # in place: peak memory 1.5x the output
        return z

    def _correlation(self, n: int) -> torch.Tensor:
        c = torch.eye(n, dtype=torch.float64)
        pairs = torch.arange(0, n - 1, 2)
        c[pairs, pairs + 1] = c[pairs + 1, pairs] = -1.0
        return c

    def extension_correlation(self, n: int, k: int) -> torch.Tensor:
        return self.correlation(n + k)


@dataclass(frozen=True, eq=False)
class Gaussian(Coupling):
    """Any n x n correlation matrix C (symmetric, unit diagonal, PSD; singular allowed).

    Z = (L kron I) eps with L L^T = C from an eigendecomposition, so rank-deficient C (such as
    the zero-sum matrix) works where a Cholesky factor would not exist.
    """

    correlation_matrix: torch.Tensor
    name = "gaussian"

    def __post_init__(self):
        object.__setattr__(self, "correlation_matrix", check_correlation(self.correlation_matrix))

    @property
    def size(self) -> int:
        return self.correlation_matrix.shape[0]

    def _check(self, n, shape):
        if n != self.size:
            raise ValueError(f"this Gaussian coupling is for n={self.size} samples, got n={n}")

    def _draw(self, n, shape, generator):
        eps = standard_normal((n, *shape), generator)
        factor = psd_factor(self.correlation_matrix).to(eps.device, torch.float32)
        return (factor @ eps.reshape(n, -1)).reshape(n, *shape)

    def _correlation(self, n: int) -> torch.Tensor:
        self._check(n, ())
        return self.correlation_matrix.clone()

    def _check_extension(self, n, k, shape):
        if n + k != self.size:
            raise ValueError(
                f"extending n={n} by k={k} needs an (n+k) x (n+k) correlation; this one is "
                f"{self.size} x {self.size}. Draw the first n with Gaussian(C[:n, :n])."
            )

    def extension_correlation(self, n: int, k: int) -> torch.Tensor:
        self._check_extension(n, k, ())
        return self.correlation_matrix.clone()
