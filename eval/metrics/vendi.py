"""Vendi score: exp of the order-q Renyi entropy of the eigenvalues of K / n (Friedman & Dieng 2023).

Written in torch rather than calling the ``vendi-score`` package: its ``score_X`` ignores ``q``,
and counting eigenvalues "> 0" for q = 0 counts round-off noise; here eigenvalues below a
relative tolerance are zero, and the kernel runs on the features' device.
"""

from __future__ import annotations

import math

import torch

from couplednoise.eval.metrics.checks import check_features

KERNELS = ("cosine", "rbf")


def similarity_kernel(
    features: torch.Tensor, *, kernel: str = "cosine", bandwidth: float | None = None
) -> torch.Tensor:
    """n x n similarity matrix (float64, unit diagonal) of features [n, d] (or [n, ...]).

    ``"cosine"``: cosine similarity. ``"rbf"``: exp(-||x_i - x_j||^2 / (2 bandwidth^2)); the
    default bandwidth is the median pairwise distance (1 if all points coincide).
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    x = check_features(features).double()
    if kernel == "cosine":
        if (x.norm(dim=1) == 0).any():
            raise ValueError("cosine kernel needs non-zero feature vectors; got an all-zero row")
        x = torch.nn.functional.normalize(x, dim=1)
        return (x @ x.T).fill_diagonal_(1)
    distances = torch.cdist(x[None], x[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
    if bandwidth is None:
        n = x.shape[0]
        rows, cols = torch.triu_indices(n, n, offset=1, device=x.device)
        off_diagonal = distances[rows, cols]
        median = off_diagonal.median() if off_diagonal.numel() else distances.new_tensor(0.0)
        bandwidth = float(median) if median > 0 else 1.0
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    return torch.exp(-(distances**2) / (2 * bandwidth**2))


def vendi_score_from_kernel(kernel_matrix: torch.Tensor, q: float = 1.0) -> torch.Tensor:
    """Vendi score of an n x n positive semi-definite similarity matrix with unit diagonal.

    q = 1: exp(Shannon entropy); q = 0: numerical rank; q = inf: 1 / largest eigenvalue share;
    other q >= 0: (sum p^q)^(1 / (1 - q)). Ranges from 1 (all identical) to n (orthogonal).
    """
    if kernel_matrix.ndim != 2 or kernel_matrix.shape[0] != kernel_matrix.shape[1]:
        raise ValueError(f"kernel matrix must be n x n, got {list(kernel_matrix.shape)}")
    if not q >= 0:
        raise ValueError(f"q must be >= 0 (or math.inf), got {q}")
    n = kernel_matrix.shape[0]
    eigenvalues = torch.linalg.eigvalsh(kernel_matrix.double() / n)
    tolerance = n * torch.finfo(torch.float64).eps * eigenvalues.abs().max().clamp_min(1e-300)
    p = eigenvalues[eigenvalues > tolerance]
    p = p / p.sum()
    if q == 0:
        return p.new_tensor(float(p.numel()))
    if q == 1:
        return torch.exp(-(p * p.log()).sum())
    if math.isinf(q):
        return 1 / p.max()
    return (p**q).sum() ** (1 / (1 - q))


def vendi_score(
    features: torch.Tensor,
    q: float = 1.0,
    *,
    kernel: str = "cosine",
    bandwidth: float | None = None,
) -> torch.Tensor:
    """Vendi score (scalar float64 tensor) of features [n, d] or [n, ...] (embeddings or pixels).

    ``kernel`` is ``"cosine"`` (default, as used on CLIP / DINOv2 / Inception embeddings) or
    ``"rbf"`` with ``bandwidth`` (median heuristic by default); see ``vendi_score_from_kernel``
    for ``q``. Identical features give 1, n orthogonal features give n.
    """
    return vendi_score_from_kernel(
        similarity_kernel(features, kernel=kernel, bandwidth=bandwidth), q=q
    )
