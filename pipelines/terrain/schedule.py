"""The noise levels of one-step and multistep consistency sampling on the terrain network.

    schedule = ConsistencySchedule()      # sigma_max 80, floor 40
    schedule.sigmas(1)                    # [80.0]: one step
    schedule.sigmas(3)                    # [80.0, 56.57, 40.0]: denoise, re-noise, denoise, ...

Multistep consistency sampling (Song et al. 2023, Algorithm 1): x = f(sigma_0 z, sigma_0); for
each later level s: x = f(x + sqrt(s^2 - sigma_min^2) eps, s) with fresh noise eps. The levels
after the first are spaced evenly in log sigma from ``sigma_max`` down to ``floor``.

Why the floor is 40 and not the textbook Karras (rho = 7) ramp down to sigma_min: this network
is endpoint-distilled (its ONNX metadata says "training: endpoint-distillation") and denoises
cleanly only near sigma_max. Measured on 24 of its one-step samples
(bench/bench_terrain_schedule.py, docs/real_models.md): re-noised to sigma and denoised once,
the output's Laplacian roughness is 1.05x the one-step samples' at sigma 80, 1.1x at 60, 1.2x
at 40, 1.6x at 30, 2.4x at 20, 9.6x at 5 and 42x at 0.5; the Karras ramps for 2, 3 and 4 steps
end 18x, 41x and 26x as rough (noisy heightfields), the log-even ramp to 40 about 1.2x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConsistencySchedule:
    """Noise levels: ``sigma_max`` first, then log-evenly down to ``floor`` (>= sigma_min)."""

    sigma_max: float = 80.0
    floor: float = 40.0
    sigma_min: float = (
        0.002  # the boundary of the consistency parameterisation, f(x, sigma_min) = x
    )

    def __post_init__(self):
        if not self.sigma_min < self.floor <= self.sigma_max:
            raise ValueError(
                f"the schedule needs sigma_min < floor <= sigma_max, got sigma_min="
                f"{self.sigma_min}, floor={self.floor}, sigma_max={self.sigma_max}"
            )

    @property
    def config(self) -> dict[str, Any]:
        """What defines the schedule (recorded with every gallery as the scheduler config)."""
        return {
            "sampler": "multistep consistency sampling (re-noise and denoise)",
            "sigma_max": self.sigma_max,
            "floor": self.floor,
            "sigma_min": self.sigma_min,
            "spacing": "log-even from sigma_max to floor",
        }

    def sigmas(self, num_steps: int) -> list[float]:
        """The ``num_steps`` noise levels, sigma_max first."""
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_steps!r}")
        if num_steps == 1:
            return [self.sigma_max]
        ratio = math.log(self.floor / self.sigma_max)
        return [self.sigma_max * math.exp(ratio * i / (num_steps - 1)) for i in range(num_steps)]

    def renoise_scale(self, sigma: float) -> float:
        """Standard deviation of the fresh noise that takes a clean sample to level ``sigma``."""
        return math.sqrt(sigma**2 - self.sigma_min**2)
