"""Lab model speed on CPU: images/s at 32 x 32 and 64 x 64, and denoiser cost per step vs scenes.

    python bench/bench_lab.py [--threads N]

The exact denoiser costs O(B N D) per step (B images, N scenes, D pixels): the second part times
one denoiser step for growing N and prints time / N, which should stay flat (linear in scenes).
"""

from __future__ import annotations

import argparse
import time

import torch

from couplednoise.pipelines.lab import load_lab_pipeline
from couplednoise.pipelines.lab.denoiser import posterior_mean

BATCH = 16
STEPS = 20


def best_time(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def images_per_second() -> None:
    print(f"images/s, batch {BATCH}, {STEPS} DDIM steps (prompt scenes / all scenes):")
    for size in (32, 64):
        pipe = load_lab_pipeline(f"lab:size={size}")
        pipe.set_progress_bar_config(disable=True)
        for prompt in ("a red circle", ""):
            scenes = len(pipe.scenes_for(prompt))

            def call(pipe=pipe, prompt=prompt):
                pipe(
                    prompt,
                    num_images_per_prompt=BATCH,
                    num_inference_steps=STEPS,
                    output_type="pt",
                    generator=torch.Generator().manual_seed(0),
                )

            seconds = best_time(call)
            print(
                f"  {size}x{size}  {prompt or '(unconditional)':<16} {scenes:5d} scenes  "
                f"{BATCH / seconds:8.1f} images/s"
            )


def cost_per_scene(rounds: int = 7) -> None:
    print(f"\none denoiser step, batch {BATCH}, 32x32 (D = 3072), float32:")
    world = load_lab_pipeline("lab").world
    bank = world.images.flatten(1) * 2 - 1
    x = torch.randn(BATCH, bank.shape[1], generator=torch.Generator().manual_seed(0))
    sizes = (360, 720, 1440, 2880, 5760, 11520)
    banks = {}
    for n in sizes:
        scenes = bank.repeat((n + len(bank) - 1) // len(bank), 1)[:n].contiguous()
        banks[n] = (scenes, scenes.pow(2).sum(1))
    best = dict.fromkeys(sizes, float("inf"))
    for _ in range(rounds):  # round-robin, best of rounds: load changes hit every N alike
        for n, (scenes, norms) in banks.items():
            start = time.perf_counter()
            posterior_mean(x, scenes, 0.7, 0.7, smoothing=0.02, scene_norms=norms)
            best[n] = min(best[n], time.perf_counter() - start)
    base = best[sizes[0]] / sizes[0]
    for n in sizes:
        seconds = best[n]
        print(
            f"  N = {n:6d}: {seconds * 1e3:8.2f} ms/step   per scene {seconds / n * 1e6:6.2f} us"
            f"   (time/N relative to N={sizes[0]}: {seconds / n / base:4.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    images_per_second()
    cost_per_scene()


if __name__ == "__main__":
    main()
