"""Orthogonal coupling: rows exactly mutually orthogonal, each exactly N(0, I).

Z_i = R_i U_i with U a Haar-random orthonormal n-frame in R^d and R_i i.i.d. chi_d independent of
U. Both come from one Gaussian matrix G [n, d]: the Gram-Schmidt frame of its rows is Haar, and
by the Bartlett decomposition (G = R^T Q with the entries of R independent of Q) the row norms
||G_i|| = ||R[:, i]|| are i.i.d. chi_d and independent of the frame. So Z_i = ||G_i|| Q_i costs one
randn plus two n x n x d matrix products, and no extra draw for the norms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from couplednoise.base import Coupling, Shape, standard_normal

# Cholesky QR is accurate to float32 when G is well conditioned: a Gaussian [n, d] matrix has
# condition number about (sqrt(d) + sqrt(n)) / (sqrt(d) - sqrt(n)), about 1.7 at d = 16 n.
CHOLESKY_QR_MIN_RATIO = 16
# |cos| between rows above this means they were not drawn by Orthogonal (float32 rounding: ~1e-6; half precision more).
ORTHOGONALITY_TOLERANCE = 1e-3


def gram_schmidt_rows(g: torch.Tensor, row_scale: torch.Tensor | None = None) -> torch.Tensor:
    """diag(row_scale) Q for Q [n, d] the Gram-Schmidt orthonormalisation of the rows of g [n, d].

    ``row_scale`` None scales row i by ||g_i|| (the orthogonal coupling's Z = ||G_i|| Q_i). Uses
    Cholesky QR (one Gram product and one n x n x d product; peak memory 2x g) when d >= 16 n,
    Householder QR in float64 otherwise (small d, where that is cheap). float32 in and out.
    """
    n, d = g.shape
    if d >= CHOLESKY_QR_MIN_RATIO * n:
        gram = (g @ g.T).double()
        scale = gram.diagonal().sqrt() if row_scale is None else row_scale.double()
        to_frame = torch.linalg.solve_triangular(
            torch.linalg.cholesky(gram), torch.diag(scale), upper=False, left=False
        )  # diag(scale) L^-1; a triangular solve on g itself measured 2x slower than this matmul
        return to_frame.float() @ g
    scale = g.double().norm(dim=1) if row_scale is None else row_scale.double()
    q, r = torch.linalg.qr(g.double().T)
    return (q * (torch.sign(torch.diagonal(r)) * scale)).T.float()


def scaled_frame(g: torch.Tensor, complement_of: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ||g_i|| * (Gram-Schmidt frame of g made orthogonal to the rows of ``complement_of``)."""
    if complement_of is None:
        return gram_schmidt_rows(g)
    norms = g.norm(dim=1)
    basis = gram_schmidt_rows(complement_of, torch.ones(complement_of.shape[0]))
    for _ in range(2):  # project twice: one pass loses orthogonality to rounding
        g = g - (g @ basis.T) @ basis
    return gram_schmidt_rows(g, norms)


@dataclass(frozen=True)
class Orthogonal(Coupling):
    """Rows exactly mutually orthogonal with chi_d norms (needs n <= d = prod(shape)).

    Uncorrelated (``correlation`` is the identity) but not independent: the directions repel
    exactly. Extension draws the new frame Haar in the orthogonal complement of the old rows.
    """

    name = "orthogonal"

    def _check(self, n: int, shape: Shape) -> None:
        dim = 1
        for s in shape:
            dim *= s
        if n > dim:
            raise ValueError(f"Orthogonal needs n <= dim = prod(shape) = {dim}, got n={n}")

    def _draw(self, n, shape, generator):
        g = standard_normal((n, *shape), generator).reshape(n, -1)
        return scaled_frame(g).reshape(n, *shape)

    def _correlation(self, n: int) -> torch.Tensor:
        return torch.eye(n, dtype=torch.float64)

    def _check_extension(self, n, k, shape):
        self._check(n + k, shape)

    def _extend(self, previous, k, generator):
        n, shape = previous.shape[0], tuple(previous.shape[1:])
        flat = previous.reshape(n, -1)
        unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)
        overlap = (unit @ unit.T - torch.eye(n, dtype=unit.dtype)).abs().max().item()
        if overlap > ORTHOGONALITY_TOLERANCE:
            raise ValueError(
                f"previous rows are not mutually orthogonal (largest |cos| {overlap:.2g}); "
                "extend only samples drawn with Orthogonal().sample"
            )
        g = standard_normal((k, *shape), generator).reshape(k, -1)
        return scaled_frame(g, complement_of=flat).reshape(k, *shape)
