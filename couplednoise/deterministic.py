"""Matrix products whose rounding does not depend on the number of CPU threads, and a block that
runs on one thread.

MKL splits a long reduction (the inner dimension of ``a @ b``) across threads, so ``z @ U.T`` over
the 16,384 entries of an SD latent changes in its last bits with ``torch.set_num_threads``. A
coupling promises the same noise for the same seed on any thread count, so products whose
reduction is long go through ``stable_matmul``: the reduction is cut into fixed chunks of
``CHUNK`` entries, each chunk one small batched product (one thread each), and the partial
products are summed over chunks in a fixed order (an ATen reduction with many outputs, which is
split over outputs, never over the summed dimension).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

CHUNK = 128


def stable_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for a [m, k], b [k, p], with a summation order fixed by k alone; returns [m, p]."""
    m, k = a.shape
    if b.shape[0] != k:
        raise ValueError(f"cannot multiply [{m}, {k}] by {list(b.shape)}")
    if k <= CHUNK:
        return torch.bmm(a[None], b[None])[0]
    pad = -k % CHUNK
    if pad:  # zeros add nothing: the padded product equals the unpadded one exactly
        a = torch.nn.functional.pad(a, (0, pad))
        b = torch.nn.functional.pad(b, (0, 0, 0, pad))
    chunks = (k + pad) // CHUNK
    left = a.reshape(m, chunks, CHUNK).transpose(0, 1)  # [chunks, m, CHUNK]
    right = b.reshape(chunks, CHUNK, b.shape[1])  # [chunks, CHUNK, p]
    return torch.bmm(left, right).sum(0)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one intra-op thread, then restore the caller's setting.

    For loops of many tiny tensor ops (the pool's partition rule works on [64, 192] matrices):
    there OpenMP's hand-offs cost more than the ops. Measured on a busy 2-core machine: 43 ms a
    pool gallery at one thread, 2.0 s at two. The setting is process-wide, so other threads
    running torch meanwhile also get one thread for that long.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
