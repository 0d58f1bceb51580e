"""What CNO and CADS cost beside plain sampling: evaluations counted, wall time measured side by side.

For the tiny SD1.5 pipeline (random weights, real latent shape), the closed-form lab and the learned
lab (its trained UNet), one gallery of K images per call, every method timed interleaved in one process (same caches, same load):
    plain:      pipe(latents=independent noise)            the baseline
    repulsive:  pipe(latents=repulsive noise)              a coupling: no extra evaluation
    cno:        cno_latents (3 Adam steps) then pipe       + reference + 3 forward/backward
    cads:       sample_with_cads                           condition noise in step callbacks
Printed: denoiser evaluations per image (forward, backward; a guided step counts 2) and the ratio of
median wall times to plain.

    .venv/bin/python bench/bench_noise_optimisation.py [--repeats 9] [--steps 20] [-k 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from couplednoise import latents_for
from couplednoise.pipelines.baselines import count_evaluations, sample_gallery
from couplednoise.pipelines.lab import load_lab_pipeline
from couplednoise.pipelines.learned_lab import load_learned_lab
from tests.tiny_models import tiny_sd15

METHODS = {  # name -> (coupling, gallery method)
    "plain": ("independent", "plain"),
    "repulsive": ("repulsive", "plain"),
    "cno": ("independent", "cno"),
    "cads": ("independent", "cads"),
}
SETUPS = {  # name -> (pipeline builder, prompt, guidance)
    "tiny SD1.5": (tiny_sd15, "a red car", 6.0),
    "lab": (lambda: load_lab_pipeline("lab"), "a red circle", 1.0),
    "learned lab": (lambda: load_learned_lab(), "a red sneaker", 5.0),
}


def run_method(pipe, prompt, guidance, coupling, method, steps, k):
    generator = torch.Generator().manual_seed(0)
    latents = latents_for(pipe, coupling, num_images_per_prompt=k, generator=generator)
    return sample_gallery(
        pipe,
        prompt,
        latents,
        method,
        num_images_per_prompt=k,
        generator=generator,
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="pt",
    )


def bench_setup(name: str, repeats: int, steps: int, k: int) -> None:
    build, prompt, guidance = SETUPS[name]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    counts = {}
    for method, (coupling, gallery_method) in METHODS.items():  # warm-up, and count once
        with count_evaluations(pipe) as count:
            run_method(pipe, prompt, guidance, coupling, gallery_method, steps, k)
        counts[method] = count.per_image(k)
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    order = list(METHODS)
    for i in range(repeats):  # rotate the order, so drift and order effects cancel
        for method in order[i % len(order) :] + order[: i % len(order)]:
            coupling, gallery_method = METHODS[method]
            start = time.perf_counter()
            run_method(pipe, prompt, guidance, coupling, gallery_method, steps, k)
            times[method].append(time.perf_counter() - start)
    base = statistics.median(times["plain"])
    print(f"\n{name}: K={k}, {steps} steps, guidance {guidance}, {repeats} interleaved repeats")
    print("| method | forward / image | backward / image | median s | time / plain |")
    print("|---|---|---|---|---|")
    for method in METHODS:
        median = statistics.median(times[method])
        c = counts[method]
        print(
            f"| {method} | {c['forward']:.0f} | {c['backward']:.0f} | {median:.3f} "
            f"| {median / base:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("-k", type=int, default=4, help="images per gallery")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in SETUPS:
        bench_setup(name, args.repeats, args.steps, args.k)


if __name__ == "__main__":
    main()
