"""Coupled noise vs torch.randn of the same size, measured side by side in one run.

For n in {4, 16, 64} at the SD3-1024 latent shape (16, 128, 128): time per call (best of --repeats) as a
ratio to torch.randn, and peak memory above the baseline as a multiple of the float32 output.
Peak memory is the peak-RSS (VmHWM) increase in a fresh subprocess per case (CPU, Linux) or from
torch.cuda.max_memory_allocated (GPU).

    python bench/bench_couplings.py [--device cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

import couplednoise as cn

SHAPE = (16, 128, 128)
SIZES = (4, 16, 64)
COUPLINGS = {
    "independent": cn.Independent(),
    "repulsive": cn.Repulsive(),
    "equicorrelated:rho=0.3": cn.Equicorrelated(rho=0.3),
    "antithetic": cn.Antithetic(),
    "orthogonal": cn.Orthogonal(),
    "subspace(mask)": cn.Subspace(mask=torch.ones(128, 128).tril(), share=0.8),
}


def draw(name: str, n: int, device: str) -> torch.Tensor:
    generator = torch.Generator(device).manual_seed(0)
    if name == "randn":
        return torch.randn((n, *SHAPE), generator=generator, device=device)
    return COUPLINGS[name].sample(n, SHAPE, generator=generator, device=device)


def best_seconds(names: list[str], n: int, device: str, repeats: int) -> list[float]:
    """Best time per call for each name, the names interleaved in every repeat so that other
    load on the machine hits all of them alike."""
    best = [float("inf")] * len(names)
    for name in names:
        draw(name, n, device)  # warm-up
    for _ in range(repeats):
        for i, name in enumerate(names):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            draw(name, n, device)
            if device == "cuda":
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def peak_ratio(name: str, n: int, device: str) -> float:
    """Peak memory above baseline / bytes of the float32 output."""
    output_bytes = n * 16 * 128 * 128 * 4
    if device == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        draw(name, n, device)
        return (torch.cuda.max_memory_allocated() - base) / output_bytes
    out = subprocess.run(
        [sys.executable, __file__, "--peak-child", name, str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip()) / output_bytes


def resident_peak_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def peak_child(name: str, n: int) -> None:
    """Prints the peak resident bytes one draw adds (Linux: VmHWM reset via clear_refs)."""
    draw(name, 2, "cpu")  # load kernels and allocator state on a small case
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak-RSS counter to the current RSS
    base = resident_peak_kib()
    out = draw(name, n, "cpu")
    print((resident_peak_kib() - base) * 1024)
    del out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--peak-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_child:
        return peak_child(args.peak_child[0], int(args.peak_child[1]))
    print(f"device {args.device}, {torch.get_num_threads()} threads, shape {SHAPE}")
    print(f"{'coupling':24s} {'n':>3s} {'ms':>8s} {'x randn':>8s} {'peak/out':>9s}")
    rows = []
    for n in SIZES:
        names = ["randn", *COUPLINGS]
        times = best_seconds(names, n, args.device, args.repeats)
        for name, t in zip(names, times):
            peak = peak_ratio(name, n, args.device)
            rows.append(
                {"coupling": name, "n": n, "ms": 1000 * t, "ratio": t / times[0], "peak": peak}
            )
            print(f"{name:24s} {n:3d} {1000 * t:8.1f} {t / times[0]:8.2f} {peak:9.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
