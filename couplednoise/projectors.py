"""Orthogonal projectors on latent space for the subspace coupling.

A projector P acts on samples [n, C, H, W] (any leading dims; the last two are spatial):
- a binary spatial mask, resized to the latent grid and broadcast over channels (P = diag(mask));
- a Fourier band: P = F^-1 B F with B a radial low-pass (|f| <= cutoff) or high-pass indicator.
  B is symmetric under f -> -f, so P maps real signals to real signals, is self-adjoint and
  idempotent: an orthogonal projector.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

BANDS = ("lowpass", "highpass")
MAX_CUTOFF = math.sqrt(0.5)  # |f| of the corner frequency (0.5, 0.5) in cycles per latent pixel


def check_binary_mask(mask) -> torch.Tensor:
    """A {0, 1} spatial mask [h, w] (leading singleton dims allowed) as a float32 CPU tensor."""
    m = torch.as_tensor(mask).detach().cpu()
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2:
        raise ValueError(
            f"mask must be spatial [H, W] (or [1, H, W], [1, 1, H, W]), got {tuple(m.shape)}"
        )
    if m.is_complex():
        raise ValueError("mask must be real {0, 1} values, got a complex tensor")
    m = m.to(torch.float32)
    if not ((m == 0) | (m == 1)).all():
        raise ValueError("mask must be binary: every value 0 or 1 (threshold it first)")
    return m


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a binary mask [h, w] to ``size`` [H, W]: area average, then >= 0.5."""
    if tuple(mask.shape) == tuple(size):
        if not mask.any():
            raise ValueError("mask has no foreground (all zeros): nothing would be shared")
        return mask
    area = F.interpolate(mask[None, None], size=size, mode="area")[0, 0]
    resized = (area >= 0.5).to(torch.float32)
    if not resized.any():
        raise ValueError(
            f"mask has no foreground left after resizing {tuple(mask.shape)} -> {tuple(size)}: "
            "each latent cell covers less than half foreground; enlarge the masked region"
        )
    return resized


def check_band(band: str, cutoff: float) -> None:
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    if not 0.0 < cutoff < MAX_CUTOFF:
        raise ValueError(
            f"cutoff must be in (0, {MAX_CUTOFF:.3f}) cycles per latent pixel, got {cutoff}"
        )


def band_indicator(size: tuple[int, int], band: str, cutoff: float, device) -> torch.Tensor:
    """The rfft2 half-spectrum indicator [H, W//2 + 1] of a radial band."""
    fy = torch.fft.fftfreq(size[0], device=device)[:, None]
    fx = torch.fft.rfftfreq(size[1], device=device)[None, :]
    low = (fy**2 + fx**2).sqrt() <= cutoff
    return (low if band == "lowpass" else ~low).to(torch.float32)


def apply_band(x: torch.Tensor, indicator: torch.Tensor) -> torch.Tensor:
    """P x for the Fourier band projector, over the last two dims of x.

    On the CPU the transform runs in numpy's pocketfft (float64, single-threaded): torch's CPU FFT
    may use a threaded backend whose rounding depends on the thread count, and a seed must give
    bit-identical noise with 1 or many threads (1- and N-process batch runs must agree).
    """
    size = tuple(x.shape[-2:])
    if x.device.type != "cpu":
        return torch.fft.irfft2(torch.fft.rfft2(x) * indicator, s=size)
    spectrum = np.fft.rfft2(x.detach().numpy().astype(np.float64)) * indicator.numpy()
    return torch.from_numpy(np.fft.irfft2(spectrum, s=size).astype(np.float32))
