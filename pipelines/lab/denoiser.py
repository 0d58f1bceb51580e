"""The exact denoiser: the posterior mean E[x0 | x_t] under a (smoothed) empirical distribution.

Data: x0 ~ (1/N) sum_n N(mu_n, s^2 I) (scenes mu_n in model space [-1, 1], smoothing s >= 0;
s = 0 is the plain empirical distribution). Noising: x_t = alpha x0 + sigma eps. Then, with
v = alpha^2 s^2 + sigma^2,

    p(n | x_t)  proportional to  exp(-||x_t - alpha mu_n||^2 / (2 v))
    E[x0 | x_t] = (1 - c alpha) sum_n p(n | x_t) mu_n + c x_t,     c = alpha s^2 / v.

Computed for a batch at once, streaming over chunks of scenes with a running log-sum-exp, so the
memory is O(B (D + chunk)) and the cost O(B N D): linear in the number of scenes. Written here
rather than taken from a library because no library offers a closed-form mixture denoiser.
"""

from __future__ import annotations

import torch

PARAMETERISATIONS = ("epsilon", "v_prediction", "sample", "flow")
MIN_VARIANCE = 1e-10  # guards v = 0 (sigma = 0 and s = 0), where the posterior is a hard argmin


def posterior_mean(
    x: torch.Tensor,
    scenes: torch.Tensor,
    alpha: float,
    sigma: float,
    *,
    smoothing: float = 0.0,
    scene_norms: torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """E[x0 | x_t = x] for x [B, D] under the scenes [N, D] (same dtype); returns [B, D].

    ``scene_norms`` [N] = ||mu_n||^2 may be passed precomputed. Log-weights drop the per-row
    constant ||x||^2, which the softmax cancels.
    """
    if scenes.shape[0] == 0:
        raise ValueError("posterior_mean needs at least one scene")
    if x.shape[-1] != scenes.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} features per row, scenes have {scenes.shape[-1]}")
    if scene_norms is None:
        scene_norms = scenes.pow(2).sum(1)
    variance = max(alpha**2 * smoothing**2 + sigma**2, MIN_VARIANCE)
    running_max = torch.full((x.shape[0], 1), -torch.inf, dtype=x.dtype, device=x.device)
    total = torch.zeros((x.shape[0], 1), dtype=x.dtype, device=x.device)
    weighted = torch.zeros_like(x)
    for start in range(0, scenes.shape[0], chunk_size):
        mu = scenes[start : start + chunk_size]
        logits = alpha * (x @ mu.T) - 0.5 * alpha**2 * scene_norms[start : start + chunk_size]
        logits = logits / variance  # [B, n]
        new_max = torch.maximum(running_max, logits.amax(1, keepdim=True))
        rescale = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max)
        weighted = weighted * rescale + weights @ mu
        total = total * rescale + weights.sum(1, keepdim=True)
        running_max = new_max
    mean = weighted / total
    c = alpha * smoothing**2 / variance
    return mean if c == 0 else (1 - c * alpha) * mean + c * x


def model_output(
    x0: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float, parameterisation: str
) -> torch.Tensor:
    """What a network trained with ``parameterisation`` outputs, given E[x0 | x_t] and x_t.

    epsilon: (x - alpha x0) / sigma; v_prediction: alpha eps - sigma x0; sample: x0;
    flow (flow matching, x_t = (1 - t) x0 + t eps): eps - x0.
    """
    if parameterisation == "sample":
        return x0
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(
            f"unknown parameterisation {parameterisation!r}; valid: {', '.join(PARAMETERISATIONS)}"
        )
    eps = (x - alpha * x0) / sigma
    if parameterisation == "epsilon":
        return eps
    if parameterisation == "v_prediction":
        return alpha * eps - sigma * x0
    return eps - x0
