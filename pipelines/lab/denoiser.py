"""The exact denoiser: the posterior mean E[x0 | x_t] under a (smoothed) empirical distribution.

Data: x0 ~ sum_n w_n N(mu_n, s^2 I) (scenes mu_n in model space [-1, 1], weights w_n, uniform
unless a prior is given; smoothing s >= 0, s = 0 is the plain empirical distribution). Noising:
x_t = alpha x0 + sigma eps. Then, with v = alpha^2 s^2 + sigma^2,

    p(n | x_t)  proportional to  w_n exp(-||x_t - alpha mu_n||^2 / (2 v))
    E[x0 | x_t] = (1 - c alpha) sum_n p(n | x_t) mu_n + c x_t,     c = alpha s^2 / v.

Everything is differentiable in x_t (autograd), so a noise optimiser can back-propagate through it.

Computed for a batch at once, streaming over chunks of scenes with a running log-sum-exp, so the
memory is O(B (D + chunk)) and the cost O(B N D): linear in the number of scenes. Written here
rather than taken from a library because no library offers a closed-form mixture denoiser.

``local_posterior_mean`` is the optional closed-form *local* denoiser (Kamb & Ganguli 2024): the
same formula with a separate posterior over the scenes for every pixel, from its window only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    log_prior: torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """E[x0 | x_t = x] for x [B, D] under the scenes [N, D] (same dtype); returns [B, D].

    ``scene_norms`` [N] = ||mu_n||^2 may be passed precomputed. ``log_prior`` [B, N]: per-row log
    weights log w_n of the scenes (-inf excludes a scene; need not be normalised); None is the
    uniform prior. Log-weights drop the per-row constant ||x||^2, which the softmax cancels.
    """
    if scenes.shape[0] == 0:
        raise ValueError("posterior_mean needs at least one scene")
    if x.shape[-1] != scenes.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} features per row, scenes have {scenes.shape[-1]}")
    if log_prior is not None and tuple(log_prior.shape) != (x.shape[0], scenes.shape[0]):
        raise ValueError(
            f"log_prior must be [{x.shape[0]}, {scenes.shape[0]}] (rows x scenes), "
            f"got {list(log_prior.shape)}"
        )
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
        if log_prior is not None:
            logits = logits + log_prior[:, start : start + chunk_size]
        new_max = torch.maximum(running_max, logits.amax(1, keepdim=True))
        if log_prior is not None:  # a chunk whose scenes a row excludes: keep exp() finite
            new_max = new_max.clamp_min(torch.finfo(x.dtype).min)
        rescale = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max)
        weighted = weighted * rescale + weights @ mu
        total = total * rescale + weights.sum(1, keepdim=True)
        running_max = new_max
    mean = weighted / total
    c = alpha * smoothing**2 / variance
    return mean if c == 0 else (1 - c * alpha) * mean + c * x


def local_posterior_mean(
    x: torch.Tensor,
    scenes: torch.Tensor,
    alpha: float,
    sigma: float,
    *,
    window: int,
    smoothing: float = 0.0,
    chunk_size: int = 256,
) -> torch.Tensor:
    """The closed-form *local* denoiser for x [B, C, H, W] under scenes [N, C, H, W]; [B, C, H, W].

    For every pixel p, a posterior over the scenes computed from the window W_p (``window`` x
    ``window`` pixels centred on p, clipped at the border) only:
    w_n(p) ∝ exp(-||x[W_p] - alpha mu_n[W_p]||^2 / (2 v)), then the same per-scene mean as
    ``posterior_mean`` at pixel p. This is the local (not equivariant) score machine of Kamb &
    Ganguli (2024, arXiv:2412.20292), a model of convolutional locality, not the posterior of
    the scene law. When
    every window holds the whole image (window >= 2 max(H, W) - 1) it equals ``posterior_mean``.
    Streams over chunks of scenes with a running log-sum-exp; the window sum is a separable box
    filter (two 1-D average pools) on the per-pixel squared residual summed over channels.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"locality window must be an odd number of pixels >= 1, got {window}")
    if scenes.shape[0] == 0:
        raise ValueError("local_posterior_mean needs at least one scene")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(scenes.shape[1:]):
        raise ValueError(
            f"x must be [B, {', '.join(map(str, scenes.shape[1:]))}] like the scenes, "
            f"got {list(x.shape)}"
        )
    variance = max(alpha**2 * smoothing**2 + sigma**2, MIN_VARIANCE)
    b, _, h, w = x.shape
    # A window larger than 2 side - 1 sees the whole image from every pixel: cap the pooling size.
    ky, kx = min(window, 2 * h - 1), min(window, 2 * w - 1)
    running_max = torch.full((b, 1, h, w), -torch.inf, dtype=x.dtype, device=x.device)
    total = torch.zeros((b, 1, h, w), dtype=x.dtype, device=x.device)
    weighted = torch.zeros_like(x)
    for start in range(0, scenes.shape[0], chunk_size):
        mu = scenes[start : start + chunk_size]  # [n, C, H, W]
        residual = (x[:, None] - alpha * mu[None]).pow(2).sum(2)  # [B, n, H, W]
        window_sum = box_sum(residual.flatten(0, 1)[:, None], ky, kx).view(b, -1, h, w)
        logits = -window_sum / (2 * variance)
        new_max = torch.maximum(running_max, logits.amax(1, keepdim=True))
        rescale = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max)  # [B, n, H, W]
        weighted = weighted * rescale + (weights[:, :, None] * mu[None]).sum(1)
        total = total * rescale + weights.sum(1, keepdim=True)
        running_max = new_max
    mean = weighted / total
    c = alpha * smoothing**2 / variance
    return mean if c == 0 else (1 - c * alpha) * mean + c * x


def box_sum(maps: torch.Tensor, ky: int, kx: int) -> torch.Tensor:
    """Sum of ``maps`` [M, 1, H, W] over the ky x kx window centred on each pixel, zero outside
    the image (so the window is clipped at the border); ky, kx odd. Returns [M, 1, H, W]."""
    out = F.avg_pool2d(maps, (ky, 1), stride=1, padding=(ky // 2, 0), count_include_pad=True)
    out = F.avg_pool2d(out, (1, kx), stride=1, padding=(0, kx // 2), count_include_pad=True)
    return out * (ky * kx)


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
