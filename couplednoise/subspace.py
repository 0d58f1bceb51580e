"""Subspace coupling: share one noise inside a subspace, keep the rest independent.

    Z_i = P (sqrt(share) S + sqrt(1 - share) E_i) + (I - P) E'_i

with P an orthogonal projector (a binary spatial mask or a Fourier band, see projectors.py),
S, E_i, E'_i i.i.d. N(0, I). Since P E_i and (I - P) E_i are independent, one draw E_i serves
both. The marginal is exactly N(0, I); share = 1 makes the P-part identical across the gallery,
share = 0 is independent. Inside P the samples are equicorrelated with rho = share, outside
they are independent.

A user-supplied ``shared`` tensor (e.g. a DDIM-inverted latent) replaces S; marginals are then
exactly N(0, I) only if ``shared`` itself is N(0, I) distributed, which inverted latents are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from couplednoise.base import (
    Coupling,
    Shape,
    check_real,
    check_unit_interval,
    draw_device,
    standard_normal,
)
from couplednoise.extension import conditional_sample
from couplednoise.linalg import equicorrelation, two_block_equicorrelation
from couplednoise.projectors import (
    apply_band,
    band_indicator,
    check_band,
    check_binary_mask,
    resize_mask,
)


@dataclass(frozen=True, eq=False)
class Subspace(Coupling):
    """Share the noise inside a mask or a Fourier band across the gallery.

    Give exactly one of ``mask`` (binary [H, W] in any resolution; resized to the latent grid,
    broadcast over channels; 1 = shared) or ``band`` ("lowpass" / "highpass" with ``cutoff`` in
    cycles per latent pixel). ``shared`` [*shape] replaces the shared noise S.
    """

    mask: torch.Tensor | None = None
    share: float = 1.0
    shared: torch.Tensor | None = None
    band: str | None = None
    cutoff: float = 0.125
    name = "subspace"

    def __post_init__(self):
        object.__setattr__(self, "share", check_unit_interval(self.share, "share"))
        if (self.mask is None) == (self.band is None):
            raise ValueError("Subspace needs exactly one of mask= (binary spatial) or band=")
        if self.mask is not None:
            object.__setattr__(self, "mask", check_binary_mask(self.mask))
        else:
            object.__setattr__(self, "cutoff", check_real(self.cutoff, "cutoff"))
            check_band(self.band, self.cutoff)
        if self.shared is not None:
            shared = torch.as_tensor(self.shared).detach()
            if not shared.is_floating_point() or not torch.isfinite(shared).all():
                raise ValueError("shared must be a real floating tensor without NaN or inf values")
            object.__setattr__(self, "shared", shared)

    def _check(self, n: int, shape: Shape) -> None:
        if len(shape) < 2:
            raise ValueError(f"Subspace needs spatial samples [..., H, W], got shape {shape}")
        if self.mask is not None:
            resize_mask(self.mask, shape[-2:])
        if self.shared is not None:
            given = tuple(self.shared.shape)
            if given != shape and given != (1, *shape):
                raise ValueError(f"shared has shape {given}, expected {shape} (or (1, *shape))")

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """P x for samples x [..., H, W] (float32)."""
        size = tuple(x.shape[-2:])
        if self.mask is not None:
            return x * resize_mask(self.mask, size).to(x.device)
        return apply_band(x, band_indicator(size, self.band, self.cutoff, x.device))

    def _shared_noise(self, shape: Shape, generator) -> torch.Tensor:
        if self.shared is not None:
            return self.shared.reshape(1, *shape).to(draw_device(generator), torch.float32)
        return standard_normal((1, *shape), generator)

    def _draw(self, n, shape, generator):
        shared = self._shared_noise(shape, generator)
        e = standard_normal((n, *shape), generator)
        if self.mask is not None:  # in place: Z = scale * E + offset, both zero-cost to broadcast
            keep = resize_mask(self.mask, shape[-2:]).to(e.device).bool()
            scale = torch.where(keep, math.sqrt(1.0 - self.share), 1.0)
            offset = torch.where(keep, math.sqrt(self.share) * shared, 0.0)
            return e.mul_(scale).add_(offset)
        inside = math.sqrt(self.share) * shared + math.sqrt(1.0 - self.share) * e
        return self._combine(inside, e)

    def _combine(self, inside: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
        """P inside + (I - P) outside; with a mask, a select, so share 1 is bit-identical in P."""
        if self.mask is not None:
            keep = resize_mask(self.mask, tuple(inside.shape[-2:])).to(inside.device).bool()
            return torch.where(keep, inside, outside)
        return outside.sub_(self.project(outside)).add_(self.project(inside))

    def _correlation(self, n: int) -> torch.Tensor:
        """Cross-sample correlation inside the shared subspace (identity outside it)."""
        return equicorrelation(n, self.share)

    def extension_correlation(self, n: int, k: int) -> torch.Tensor:
        return two_block_equicorrelation(n, k, self.share, self.share, self.share)

    def _extend(self, previous, k, generator):
        """Inside P: the equicorrelated conditional given P(previous) (with ``shared`` given,
        S is known, so new samples are fresh draws); outside P: fresh independent noise."""
        if self.shared is not None:
            return self._draw(k, tuple(previous.shape[1:]), generator)
        n = previous.shape[0]
        inside = conditional_sample(
            self.project(previous), self.extension_correlation(n, k), generator
        )
        return self._combine(inside, standard_normal(inside.shape, generator))
