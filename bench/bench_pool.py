"""What does a pool coupling's noise build cost next to generating the gallery? (target < 5%)

For the lab (one 20-step gallery of K) and a tiny SD1.5 pipeline (random weights, its 64 x 64
images, K per call), the noise build (``latents_for`` with the pool coupling) and the gallery's
generation from those latents are timed interleaved in one process, per predictor: the lab
oracle, a predictor learned from 64 pilot runs (its one-off pilot cost is printed apart) and the
noise-only DCT predictor. A last table times the noise build alone at full SD latent shapes.
Pools have 64 groups (pool_size = 64 K) unless --groups says otherwise.

    .venv/bin/python bench/bench_pool.py [--repeats 15] [--sizes 4,8] [--groups 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import couplednoise as cn
from couplednoise.cells import cell_predictor_from_pilots
from couplednoise.pipelines.lab import load_lab_pipeline
from couplednoise.pipelines.lab.oracle import lab_oracle
from couplednoise.pipelines.pool_pilots import run_pilots
from tests.tiny_models import BUILDERS

PROMPT = "a large square on the left"  # 72 scenes: the lab's largest of the study prompts
FULL_SHAPES = {
    "sd15 512^2": (4, 64, 64),
    "sdxl 1024^2": (4, 128, 128),
    "sd3 1024^2": (16, 128, 128),
}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def side_by_side(build, generate, repeats: int) -> tuple[float, float]:
    """Medians (s) of the noise build and of the generation, interleaved, order alternating."""
    latents = build(0)
    generate(latents)
    noise, gallery = [], []
    for i in range(repeats):
        if i % 2:
            gallery.append(timed(lambda: generate(latents)))
            noise.append(timed(lambda s=i: build(s)))
        else:
            noise.append(timed(lambda s=i: build(s)))
            gallery.append(timed(lambda: generate(latents)))
    return statistics.median(noise), statistics.median(gallery)


def report(name: str, k: int, noise: float, gallery: float) -> None:
    print(
        f"{name:30} {k:3} {noise * 1e3:10.2f} {gallery * 1e3:11.1f} {100 * noise / gallery:8.1f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", default="4,8", help="gallery sizes K")
    parser.add_argument("--groups", type=int, default=64, help="pool groups B")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(k) for k in args.sizes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, B = {args.groups}")

    lab = load_lab_pipeline("lab")
    lab.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    pilots = run_pilots(lab, PROMPT, 64, seed=10**9, num_inference_steps=20)
    pilot_seconds = time.perf_counter() - start
    predictors = {
        "oracle": lab_oracle(lab.world, PROMPT),
        "learned (64 pilots)": cell_predictor_from_pilots(pilots.noise, pilots.outputs),
        "dct": cn.DCTPredictor(),
    }
    print(
        f"\nlab, {PROMPT!r}: one gallery of K, 20 steps; the learned predictor's pilots: "
        f"{pilots.network_evaluations} network evaluations, {pilot_seconds:.2f} s once"
    )
    print(f"{'coupling':30} {'K':>3} {'noise ms':>10} {'gallery ms':>11} {'share':>9}")
    for k in sizes:
        couplings = {"repulsive": cn.Repulsive()}
        couplings.update({f"pool: {n}": cn.Pool(args.groups * k, p) for n, p in predictors.items()})
        for name, coupling in couplings.items():

            def build(seed, c=coupling, k=k):
                g = torch.Generator().manual_seed(seed)
                return cn.latents_for(lab, c, num_images_per_prompt=k, generator=g)

            def generate(latents, k=k):
                lab(PROMPT, num_images_per_prompt=k, latents=latents, output_type="pt")

            report(name, k, *side_by_side(build, generate, args.repeats))

    sd = BUILDERS["sd15"]()
    shape = cn.latent_grid(sd)
    print(f"\ntiny SD1.5 (random weights, latents {shape}), 20 steps, CFG on, one call of K")
    print(f"{'coupling':30} {'K':>3} {'noise ms':>10} {'gallery ms':>11} {'share':>9}")
    for k in sizes:
        for name, coupling in (
            ("repulsive", cn.Repulsive()),
            ("pool: dct:2", cn.Pool(args.groups * k, "dct:2")),
        ):

            def build(seed, c=coupling, k=k):
                g = torch.Generator().manual_seed(seed)
                return cn.latents_for(sd, c, num_images_per_prompt=k, generator=g)

            def generate(latents, k=k):
                sd(
                    "a photo",
                    num_images_per_prompt=k,
                    latents=latents,
                    num_inference_steps=20,
                    output_type="pt",
                )

            report(name, k, *side_by_side(build, generate, args.repeats))

    print("\nnoise build alone at full SD latent shapes (pool: dct), ms, median of 5")
    print(f"{'shape':14} " + " ".join(f"{'K=' + str(k):>10}" for k in sizes))
    for name, shape in FULL_SHAPES.items():
        row = []
        for k in sizes:
            coupling = cn.Pool(args.groups * k)
            coupling.sample(k, shape)
            row.append(
                statistics.median(
                    timed(lambda c=coupling, k=k, s=shape: c.sample(k, s)) for _ in range(5)
                )
            )
        print(f"{name:14} " + " ".join(f"{t * 1e3:10.1f}" for t in row))


if __name__ == "__main__":
    main()
