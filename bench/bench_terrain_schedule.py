"""Where the terrain network denoises cleanly: the measurement behind the multistep schedule.

    python bench/bench_terrain_schedule.py

Takes one-step samples x0 (difficulty 50.5), re-noises each to sigma and denoises once, and
reports the output's Laplacian roughness relative to the one-step sample's (1 = as clean as a
one-step sample; a network that denoises well at sigma gives about 1) and its correlation with
x0 (how much of the earlier sample survives the step). Then whole multistep schedules: the
textbook Karras ramp (rho = 7, down to sigma_min) against the project's log-even ramp down to the
floor of 40. Ratios are means over the images with a 95% t-interval.
"""

from __future__ import annotations

import math

import torch

from couplednoise.eval.runs.stats import t_interval
from couplednoise.pipelines.loading import load_pipeline
from couplednoise.pipelines.terrain import ConsistencySchedule, difficulty_input

IMAGES = 24
SIGMAS = (0.5, 2.5, 5, 10, 20, 30, 40, 60, 80)


class KarrasSchedule(ConsistencySchedule):
    """The Karras et al. (2022) ramp, rho = 7, from sigma_max to sigma_min, last level dropped."""

    def sigmas(self, num_steps: int) -> list[float]:
        top, bottom = self.sigma_max ** (1 / 7), self.sigma_min ** (1 / 7)
        return [(top + i / num_steps * (bottom - top)) ** 7 for i in range(num_steps)]


def roughness(h: torch.Tensor) -> torch.Tensor:
    """Per-image RMS of the discrete Laplacian of heightfields [B, 1, H, W] -> [B]."""
    h = h[:, 0]
    lap = 4 * h[:, 1:-1, 1:-1] - h[:, 2:, 1:-1] - h[:, :-2, 1:-1] - h[:, 1:-1, 2:] - h[:, 1:-1, :-2]
    return lap.pow(2).mean(dim=(1, 2)).sqrt()


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def interval(values: torch.Tensor) -> str:
    mean, half = t_interval(values)
    return f"{mean:.2f} ± {half:.2f}"


def main() -> None:
    torch.set_num_threads(1)
    pipe = load_pipeline("terrain", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(IMAGES, 1, 128, 128, generator=generator)
    one = pipe("50.5", num_images_per_prompt=IMAGES, latents=z, output_type="latent").images
    base = roughness(one)
    label = torch.full((IMAGES,), difficulty_input(50.5))
    print(f"{IMAGES} one-step samples, difficulty 50.5; roughness {interval(base * 100)} x 1e-2")
    print("\n| re-noise sigma | roughness / one-step | corr(output, x0) |\n|---|---|---|")
    for sigma in SIGMAS:
        noise = torch.randn(one.shape, generator=generator)
        noisy = one + math.sqrt(sigma**2 - pipe.scheduler.sigma_min**2) * noise
        out = torch.from_numpy(pipe.denoiser(noisy.numpy(), sigma, label.numpy()))
        print(
            f"| {sigma:g} | {interval(roughness(out) / base)} | {interval(correlation(out, one))} |"
        )
    print("\n| schedule | sigmas | roughness / one-step |\n|---|---|---|")
    for name, schedule in (("Karras rho=7", KarrasSchedule()), ("log-even to 40", pipe.scheduler)):
        pipe.scheduler = schedule
        for steps in (2, 3, 4):
            out = pipe(
                "50.5",
                num_images_per_prompt=IMAGES,
                latents=z,
                num_inference_steps=steps,
                generator=torch.Generator().manual_seed(steps),
                output_type="latent",
            ).images
            levels = ", ".join(f"{s:.3g}" for s in schedule.sigmas(steps))
            print(f"| {name}, {steps} steps | {levels} | {interval(roughness(out) / base)} |")


if __name__ == "__main__":
    main()
