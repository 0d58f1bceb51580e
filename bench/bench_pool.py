"""What does a pool coupling's noise build cost next to generating the gallery? (target < 5%)

For the lab (one 20-step gallery of K) and a tiny SD1.5 pipeline (random weights, its 64 x 64
images, K per call), the noise build (``latents_for`` with the pool coupling) and the gallery's
generation from those latents are timed interleaved in one process, per predictor: the lab
oracle, a predictor learned from 64 pilot runs (its one-off pilot cost is printed apart) and the
noise-only DCT predictor. The learned lab (a trained 32 x 32 UNet, its 25 guided DDIM steps)
with the DCT predictor and a predictor learned from 64 pilots read by its classifiers. A
full-size SD1.5 UNet (its diffusers config, random weights: the cost of a step does not depend
on the weights) at 512 x 512: one guided step is timed at batch 2 K interleaved with the pool's
noise build at its latent shape (4 x 64 x 64), and the gallery's time is that step times 50
steps (the step is what a gallery repeats; the VAE decode and text encoding, left out, only add
to the gallery's time). A last table times the noise build alone at full SD latent shapes.
Pools have 64 groups (pool_size = 64 K) unless --groups says otherwise.

    .venv/bin/python bench/bench_pool.py [--repeats 15] [--sizes 4,8] [--groups 64] [--threads 1]
                                         [--sections lab,tiny-sd15,learned-lab,sd15-full,full-shapes]
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


def pipeline_rows(pipe, prompt: str, k: int, couplings: dict, repeats: int, **call) -> None:
    """One report row per coupling: its noise build for ``pipe`` vs one gallery of K from it."""
    for name, coupling in couplings.items():

        def build(seed, c=coupling):
            g = torch.Generator().manual_seed(seed)
            return cn.latents_for(pipe, c, num_images_per_prompt=k, generator=g)

        def generate(latents):
            pipe(prompt, num_images_per_prompt=k, latents=latents, output_type="pt", **call)

        report(name, k, *side_by_side(build, generate, repeats))


LEARNED_LAB_PROMPT = "a white thing on the left"  # object and background open


def learned_lab_rows(sizes: list[int], groups: int, repeats: int) -> None:
    """The learned lab: pool noise builds (DCT; 64 pilots read by the classifiers) vs a gallery."""
    from couplednoise.pipelines.learned_lab import load_classifier, load_learned_lab
    from couplednoise.pipelines.learned_lab.world import ATTRIBUTES
    from couplednoise.pipelines.pool_pilots import fit_pilot_predictor

    pipe = load_learned_lab()
    pipe.set_progress_bar_config(disable=True)
    classifier = load_classifier()

    def labels(outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        codes = classifier.predict(((outputs + 1) / 2).clamp(0, 1))
        return {name: codes[:, j] for j, name in enumerate(ATTRIBUTES)}

    start = time.perf_counter()
    fit = fit_pilot_predictor(pipe, LEARNED_LAB_PROMPT, pilots=64, labels=labels)
    pilot_seconds = time.perf_counter() - start
    print(
        f"\nlearned lab, {LEARNED_LAB_PROMPT!r}: one gallery of K, 25 DDIM steps, guidance 5; "
        f"the learned predictor's pilots: {fit.network_evaluations} network evaluations, "
        f"{pilot_seconds:.1f} s once"
    )
    print(f"{'coupling':30} {'K':>3} {'noise ms':>10} {'gallery ms':>11} {'share':>9}")
    for k in sizes:
        couplings = {
            "repulsive": cn.Repulsive(),
            "pool: dct": cn.Pool(groups * k),
            "pool: learned (64 pilots)": cn.Pool(groups * k, fit.predictor),
        }
        pipeline_rows(pipe, LEARNED_LAB_PROMPT, k, couplings, repeats)


SD15_UNET = {  # Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5, unet/config.json)
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}


def full_sd15_rows(sizes: list[int], groups: int, repeats: int, steps: int = 50) -> None:
    """A full-size SD1.5 UNet step (guided: batch 2 K) vs the pool's build at 4 x 64 x 64."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    print(
        f"\nfull-size SD1.5 UNet ({params:.0f} M parameters, random weights), 512 x 512: one "
        f"guided step timed at batch 2 K; gallery = {steps} steps x that step"
    )
    print(f"{'coupling':30} {'K':>3} {'noise ms':>10} {'gallery ms':>11} {'share':>9}")
    text = torch.randn(1, 77, 768)
    for k in sizes:
        coupling = cn.Pool(groups * k)

        def build(seed, c=coupling, k=k):
            return c.sample(k, (4, 64, 64), generator=torch.Generator().manual_seed(seed))

        def one_step(latents, k=k):
            with torch.no_grad():
                unet(
                    torch.cat([latents, latents]),
                    999,
                    encoder_hidden_states=text.expand(2 * k, -1, -1),
                )

        noise, step = side_by_side(build, one_step, repeats)
        report("pool: dct", k, noise, steps * step)


def lab_rows(sizes: list[int], groups: int, repeats: int) -> None:
    """The closed-form lab: oracle, pilot-learned and DCT pools vs a 20-step gallery."""
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
        couplings.update({f"pool: {n}": cn.Pool(groups * k, p) for n, p in predictors.items()})
        pipeline_rows(lab, PROMPT, k, couplings, repeats)


def tiny_sd15_rows(sizes: list[int], groups: int, repeats: int) -> None:
    """The tiny random-weight SD1.5 pipeline: the DCT pool vs a 20-step guided gallery."""
    sd = BUILDERS["sd15"]()
    shape = cn.latent_grid(sd)
    print(f"\ntiny SD1.5 (random weights, latents {shape}), 20 steps, CFG on, one call of K")
    print(f"{'coupling':30} {'K':>3} {'noise ms':>10} {'gallery ms':>11} {'share':>9}")
    for k in sizes:
        couplings = {"repulsive": cn.Repulsive(), "pool: dct:2": cn.Pool(groups * k, "dct:2")}
        pipeline_rows(sd, "a photo", k, couplings, repeats, num_inference_steps=20)


def full_shape_rows(sizes: list[int], groups: int, repeats: int) -> None:
    """The DCT pool's noise build alone at full SD latent shapes."""
    print("\nnoise build alone at full SD latent shapes (pool: dct), ms, median of 5")
    print(f"{'shape':14} " + " ".join(f"{'K=' + str(k):>10}" for k in sizes))
    for name, shape in FULL_SHAPES.items():
        row = []
        for k in sizes:
            coupling = cn.Pool(groups * k)
            coupling.sample(k, shape)
            row.append(
                statistics.median(
                    timed(lambda c=coupling, k=k, s=shape: c.sample(k, s)) for _ in range(5)
                )
            )
        print(f"{name:14} " + " ".join(f"{t * 1e3:10.1f}" for t in row))


SECTIONS = {
    "lab": lab_rows,
    "tiny-sd15": tiny_sd15_rows,
    "learned-lab": learned_lab_rows,
    "sd15-full": lambda sizes, groups, repeats: full_sd15_rows(sizes, groups, max(3, repeats // 5)),
    "full-shapes": full_shape_rows,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", default="4,8", help="gallery sizes K")
    parser.add_argument("--groups", type=int, default=64, help="pool groups B")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}"
    )
    args = parser.parse_args()
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; known: {', '.join(SECTIONS)}")
    torch.set_num_threads(args.threads)
    sizes = [int(k) for k in args.sizes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, B = {args.groups}")
    for name in sections:
        SECTIONS[name](sizes, args.groups, args.repeats)


if __name__ == "__main__":
    main()
