"""Gallery extension: draw k more samples from the exact Gaussian conditional given n earlier ones.

For a joint correlation C = [[C_AA, C_AB], [C_BA, C_BB]] over n + k samples, coordinate-wise
    Z_B | Z_A ~ N(M Z_A, S),  M = C_BA C_AA^+,  S = C_BB - M C_AB,
with the pseudo-inverse, so singular C_AA (zero-sum or antithetic galleries) is handled exactly.
"""

from __future__ import annotations

import torch

from couplednoise.base import check_count, draw_device, standard_normal
from couplednoise.linalg import check_correlation, psd_factor, pseudo_inverse_psd


def conditional_sample(
    previous: torch.Tensor, correlation: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """[k, *shape] float32: the last k samples of ``correlation`` given ``previous`` [n, *shape].

    Raises ValueError when ``previous`` violates a linear constraint of C_AA (e.g. is not
    zero-sum where C_AA says it must be), i.e. was not drawn from this law.
    """
    n, shape = previous.shape[0], tuple(previous.shape[1:])
    c = check_correlation(correlation, "extension correlation")
    k = c.shape[0] - n
    check_count(k, "k")
    inverse, null = pseudo_inverse_psd(c[:n, :n])
    flat = previous.reshape(n, -1).to(draw_device(generator), torch.float32)
    if null.shape[1]:
        violation = (null.T.to(flat) @ flat).norm() / flat.norm().clamp(min=1e-12)
        if violation > 1e-3:
            raise ValueError(
                "previous samples break a constraint of the coupling (relative violation "
                f"{violation:.2g}); were they drawn with this coupling and n={n}?"
            )
    mean_map = c[n:, :n] @ inverse
    factor = psd_factor(c[n:, n:] - mean_map @ c[:n, n:])
    eps = standard_normal((k, flat.shape[1]), generator)
    z = factor.to(flat) @ eps
    z.addmm_(mean_map.to(flat), flat)
    return z.reshape(k, *shape)
