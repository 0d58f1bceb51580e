"""Batch-run throughput on the lab model, one process: galleries/s of the whole loop.

Measured side by side in one run, after a warm-up run (imports, lab world), interleaved
``--repeats`` times, best of each reported:
  generation only      generate_gallery in a loop (the ceiling for the run loop)
  run, overlap off     generate, score, write the row (fsync), one after the other
  run, overlap on      score + write gallery i on a worker thread while i + 1 generates

    .venv/bin/python bench/bench_batch.py [--prompts 24] [--steps 20] [--num-images 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from couplednoise.eval.batch.config import validate_config
from couplednoise.eval.batch.run import run_batch

COUPLINGS = ["independent", "repulsive", "orthogonal"]


def config_data(out: Path, args: argparse.Namespace, overlap: bool) -> dict:
    return {
        "models": ["lab"],
        "couplings": COUPLINGS,
        "prompts": {"source": "builtin:lab", "n": args.prompts, "seed": 0},
        "generation": {"num_images": args.num_images, "steps": args.steps},
        "metrics": {"names": ["l2", "ms_ssim", "vendi_pixel", "lab"]},
        "output": {"dir": str(out), "grids": 0},
        "run": {"overlap": overlap, "report": False},  # forced on / off
    }


def time_run(root: Path, name: str, args: argparse.Namespace, overlap: bool) -> float:
    config = validate_config(config_data(root / name, args, overlap))
    start = time.perf_counter()
    counts = run_batch(config, progress=False)
    return counts["computed_here"] / (time.perf_counter() - start)


def time_generation(args: argparse.Namespace) -> float:
    from couplednoise.pipelines.generation import generate_gallery
    from couplednoise.pipelines.loading import load_pipeline

    config = validate_config(config_data(Path("unused"), args, False))
    pipe = load_pipeline("lab")
    pipe.set_progress_bar_config(disable=True)
    start, count = time.perf_counter(), 0
    for index, prompt in config.prompts:
        for coupling in COUPLINGS:
            generate_gallery(
                pipe,
                prompt,
                coupling,
                num_images=args.num_images,
                seed=index,
                num_inference_steps=args.steps,
            )
            count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results: dict[str, list[float]] = {"generation": [], "sequential": [], "overlap": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        time_run(root, "warmup", argparse.Namespace(**{**vars(args), "prompts": 2}), True)
        for repeat in range(args.repeats):  # interleaved; the best of each is reported
            results["generation"].append(time_generation(args))
            results["sequential"].append(time_run(root, f"seq{repeat}", args, overlap=False))
            results["overlap"].append(time_run(root, f"ovl{repeat}", args, overlap=True))
    generation, sequential, overlapped = (max(results[k]) for k in results)
    n = args.prompts * len(COUPLINGS)
    import torch

    print(
        f"lab, {n} galleries of {args.num_images} images, {args.steps} steps, 1 process, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(f"generation only    {generation:7.2f} galleries/s")
    print(
        f"run, overlap off   {sequential:7.2f} galleries/s  ({sequential / generation:.2f}x generation)"
    )
    print(
        f"run, overlap on    {overlapped:7.2f} galleries/s  ({overlapped / sequential:.2f}x overlap off)"
    )


if __name__ == "__main__":
    main()
