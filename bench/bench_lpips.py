"""Pairwise LPIPS of one gallery: cached features (eval.pairwise_lpips) vs a loop of lpips pair calls.

    python bench/bench_lpips.py [--n 32] [--size 256] [--net alex] [--device cpu]

Both sides use the same lpips.LPIPS module (random trunk: only speed and agreement are measured,
no weights are downloaded). Prints wall times, the speed-up, the largest difference between the
two N x N matrices and the size of the feature cache (memory O(N) in images).
"""

from __future__ import annotations

import argparse
import time

import torch

from couplednoise.eval import load_lpips, lpips_features, pairwise_lpips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="images in the gallery")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--net", default="alex", choices=("alex", "vgg", "squeeze"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    net = load_lpips(args.net, random_weights=True, device=args.device)
    images = torch.rand(args.n, 3, args.size, args.size, device=args.device)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    pairwise_lpips(images[:2], net)  # warm-up
    sync()
    start = time.perf_counter()
    ours = pairwise_lpips(images, net, reduction="none")
    sync()
    ours_s = time.perf_counter() - start

    naive = torch.zeros(args.n, args.n, device=args.device)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(args.n):
            for j in range(i + 1, args.n):
                value = net(images[i : i + 1], images[j : j + 1], normalize=True).reshape(())
                naive[i, j] = naive[j, i] = value
    sync()
    naive_s = time.perf_counter() - start

    cache_mb = sum(f.numel() * f.element_size() for f in lpips_features(images[:1], net)) / 2**20
    pairs = args.n * (args.n - 1) // 2
    print(
        f"LPIPS-{args.net}, {args.n} images {args.size}x{args.size}, {pairs} pairs, {args.device}"
    )
    print(f"  cached features (eval.pairwise_lpips): {ours_s:8.2f} s  ({args.n} trunk passes)")
    print(f"  loop of lpips pair calls:               {naive_s:8.2f} s  ({2 * pairs} trunk passes)")
    print(f"  speed-up: {naive_s / ours_s:.1f}x")
    print(f"  max |difference| of the N x N matrices: {(ours - naive).abs().max().item():.2e}")
    print(f"  mean pairwise LPIPS: ours {ours[ours > 0].mean().item():.6f}")
    print(f"  feature cache: {cache_mb:.2f} MiB per image, {cache_mb * args.n:.1f} MiB in all")


if __name__ == "__main__":
    main()
