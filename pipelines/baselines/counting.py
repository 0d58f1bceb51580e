"""Count network evaluations, forward and backward, while a pipeline (or an optimiser) runs.

    with count_evaluations(pipe) as count:
        pipe("a cat", num_images_per_prompt=4, latents=latents)
    count.forward, count.backward        # image-evaluations: a guided step on 4 images adds 8

The unit is one image through the denoiser once: classifier-free guidance evaluates every image
twice per step (conditional and unconditional branch). Diffusers pipelines are counted by hooks on
their ``unet`` / ``transformer`` (a backward pass is counted when gradients flow through an
output); the lab by a hook on every posterior mean it computes (one per branch), which counts a
backward pass the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from couplednoise.pipelines.baselines.first_step import denoising_network
from couplednoise.pipelines.lab.pipeline import LabPipeline


@dataclass
class EvaluationCount:
    """Images through the denoiser: ``forward`` passes and ``backward`` passes."""

    forward: int = 0
    backward: int = 0

    def per_image(self, images: int) -> dict[str, float]:
        """{"forward", "backward"} divided by the number of images generated."""
        return {"forward": self.forward / images, "backward": self.backward / images}

    def observe(self, output: Any) -> None:
        """Count one denoiser output (tensor, tuple or diffusers output object)."""
        tensor = _first_tensor(output)
        if tensor is None:
            return
        rows = int(tensor.shape[0])
        self.forward += rows
        if tensor.requires_grad:
            tensor.register_hook(lambda grad: self._add_backward(rows))

    def _add_backward(self, rows: int) -> None:
        self.backward += rows


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    sample = getattr(output, "sample", None)
    return sample if isinstance(sample, torch.Tensor) else None


@contextlib.contextmanager
def count_evaluations(pipe: Any) -> Iterator[EvaluationCount]:
    """Yield an EvaluationCount that every denoiser evaluation of ``pipe`` adds to meanwhile."""
    count = EvaluationCount()
    if isinstance(pipe, LabPipeline):
        handle = pipe.register_posterior_hook(count.observe)
    else:
        handle = denoising_network(pipe).register_forward_hook(
            lambda _module, _inputs, output: count.observe(output)
        )
    try:
        yield count
    finally:
        handle.remove()
