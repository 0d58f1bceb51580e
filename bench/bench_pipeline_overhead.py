"""Does coupling cost generation time? Full pipeline calls, coupled latents vs diffusers' own noise.

For each tiny family (SD1.5, SDXL, SD3; real latent shapes, random weights) the two variants are
timed interleaved in one process (same warm caches, same machine load):
    own:     pipe(prompt, num_images_per_prompt=K, generator=g)             diffusers draws noise
    coupled: couplednoise.generate(pipe, prompt, "repulsive", K, generator=g)  checks + the seam
and the ratio of medians is printed (target <= 1.02). A second table times latents_for alone at
the full-size latent shapes (SD1.5 512^2, SDXL / SD3 1024^2), for comparison with a denoiser step.

    .venv/bin/python bench/bench_pipeline_overhead.py [--repeats 30] [--steps 4] [-k 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import couplednoise
from couplednoise import get_coupling, sample_groups
from tests.tiny_models import BUILDERS

FULL_SHAPES = {
    "sd15 512^2": (4, 64, 64),
    "sdxl 1024^2": (4, 128, 128),
    "sd3 1024^2": (16, 128, 128),
}
COUPLINGS = ("independent", "repulsive", "orthogonal", "subspace:band=lowpass")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_family(family: str, repeats: int, steps: int, k: int) -> tuple[float, float, float]:
    pipe = BUILDERS[family]()
    call = dict(num_inference_steps=steps, output_type="pt")

    def own():
        pipe("a cat", num_images_per_prompt=k, generator=torch.Generator().manual_seed(0), **call)

    def coupled():
        couplednoise.generate(
            pipe, "a cat", "repulsive", k, generator=torch.Generator().manual_seed(0), **call
        )

    for _ in range(3):  # warm-up both paths
        own()
        coupled()
    own_times, coupled_times = [], []
    for i in range(repeats):  # alternate which runs first, so drift and order effects cancel
        if i % 2:
            coupled_times.append(timed(coupled))
            own_times.append(timed(own))
        else:
            own_times.append(timed(own))
            coupled_times.append(timed(coupled))
    return (
        statistics.median(own_times),
        statistics.median(coupled_times),
        min(coupled_times) / min(own_times),
    )


def bench_latents(shape: tuple[int, ...], k: int, repeats: int) -> dict[str, float]:
    result = {}
    for spec in COUPLINGS:
        coupling = get_coupling(spec)
        sample_groups(coupling, 1, k, shape)
        result[spec] = statistics.median(
            timed(lambda c=coupling: sample_groups(c, 1, k, shape)) for _ in range(repeats)
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("-k", type=int, default=4, help="images per prompt")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # 2 OpenMP threads thrash on a shared 2-core machine
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(
        f"full pipeline call, batch {args.k}, {args.steps} steps, CFG on, 64x64, median of "
        f"{args.repeats} interleaved runs"
    )
    print(f"{'family':8} {'own noise ms':>13} {'coupled ms':>11} {'ratio':>7} {'min ratio':>10}")
    for family in BUILDERS:
        own, coupled, min_ratio = bench_family(family, args.repeats, args.steps, args.k)
        print(
            f"{family:8} {own * 1e3:13.1f} {coupled * 1e3:11.1f} {coupled / own:7.3f} "
            f"{min_ratio:10.3f}"
        )
    print(f"\nlatents_for cost alone (CPU draw, K={args.k}), ms, median of 10")
    print(f"{'shape':14} " + " ".join(f"{c:>22}" for c in COUPLINGS))
    for name, shape in FULL_SHAPES.items():
        times = bench_latents(shape, args.k, 10)
        print(f"{name:14} " + " ".join(f"{times[c] * 1e3:22.2f}" for c in COUPLINGS))


if __name__ == "__main__":
    main()
