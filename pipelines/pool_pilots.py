"""Learned predictors for pool couplings, fitted from pilot runs on any pipeline.

    fit = fit_pilot_predictor(pipe, "a red circle", pilots=64, seed=10_000)
    fit.predictor.save("red_circle.pt")            # reuse: get_coupling("pool:predictor=learned:red_circle.pt")
    fit.network_evaluations                        # what the pilots cost (denoiser rows evaluated)

P pilot generations with independent noise give pairs (noise z_p, final latent x_p), both in the
noise's space (``output_type="latent"``); ``couplednoise.cells.cell_predictor_from_pilots`` fits
the cell model to them (never reading anything but the pilots). Attribute tables come from
``labels`` (a function of the pilots' final latents, e.g. a classifier or the lab's readout) or
an ``embed`` function (default: the final latents themselves), clustered hierarchically.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from couplednoise import (
    CellPredictor,
    cell_predictor_from_pilots,
    check_count,
    latent_shape,
    latents_for,
)


@dataclass
class PilotRuns:
    """P pilot generations: noise [P, *shape] (unit variance) and final latents [P, *shape]."""

    prompt: str
    seed: int
    noise: torch.Tensor
    outputs: torch.Tensor
    network_evaluations: int


@dataclass
class PilotFit:
    """A fitted predictor and the pilots it came from (their cost included)."""

    predictor: CellPredictor
    runs: PilotRuns

    @property
    def network_evaluations(self) -> int:
        return self.runs.network_evaluations


@contextlib.contextmanager
def count_evaluations(pipe: Any) -> Iterator[list[int]]:
    """Counts denoiser evaluations (one per batch row per call; classifier-free guidance counts
    twice) while the block runs: ``with count_evaluations(pipe) as n: ...; n[0]``."""
    counter = [0]
    module = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if isinstance(module, torch.nn.Module):

        def hook(_module, args, kwargs):
            sample = args[0] if args else next(iter(kwargs.values()))
            counter[0] += int(sample.shape[0])

        handle = module.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield counter
        finally:
            handle.remove()
    elif callable(getattr(pipe, "_posterior", None)):  # the lab: closed-form posterior per row
        original = pipe._posterior

        def counted(x, *args, **kwargs):
            counter[0] += int(x.shape[0])
            return original(x, *args, **kwargs)

        pipe._posterior = counted
        try:
            yield counter
        finally:
            del pipe._posterior  # the class's method again
    else:
        raise TypeError(
            f"cannot count the network evaluations of {type(pipe).__name__}: it has no "
            "torch.nn.Module unet / transformer"
        )


def run_pilots(
    pipe: Any,
    prompt: str,
    count: int,
    *,
    seed: int,
    batch_size: int = 16,
    height: int | None = None,
    width: int | None = None,
    **pipe_kwargs: Any,
) -> PilotRuns:
    """``count`` generations of ``prompt`` from independent noise (seed ``seed``), returning
    their noise and final latents; ``pipe_kwargs`` (steps, guidance, ...) go to every call."""
    count = check_count(count, "pilots")
    batch_size = check_count(batch_size, "batch_size")
    if len(latent_shape(pipe, height, width)) != 3:  # [tokens, channels]: packed (FLUX-style)
        raise ValueError(
            f"{type(pipe).__name__} packs its latents into tokens; pilot fitting needs the final "
            "latents on the noise's grid (unpacked pipelines: SD1.5, SDXL, SD3, the lab)"
        )
    noise = latents_for(
        pipe,
        "independent",
        num_images_per_prompt=count,
        height=height,
        width=width,
        generator=torch.Generator("cpu").manual_seed(seed),
    )
    size = {k: v for k, v in (("height", height), ("width", width)) if v is not None}
    outputs = []
    with count_evaluations(pipe) as evaluations:
        for start in range(0, count, batch_size):
            batch = noise[start : start + batch_size]
            result = pipe(
                prompt,
                num_images_per_prompt=batch.shape[0],
                latents=batch,
                output_type="latent",
                **size,
                **pipe_kwargs,
            )
            outputs.append(result.images.detach().float().cpu())
    return PilotRuns(prompt, seed, noise.float().cpu(), torch.cat(outputs), evaluations[0])


def fit_pilot_predictor(
    pipe: Any,
    prompt: str,
    *,
    pilots: int = 64,
    seed: int = 1_000_000,
    labels: Callable[[torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 16,
    fit_options: Mapping[str, Any] | None = None,
    **pipe_kwargs: Any,
) -> PilotFit:
    """Run ``pilots`` pilot generations and fit a cell predictor to them.

    ``labels(outputs)`` -> {name: [P] ints} (e.g. a classifier's reading of each pilot image),
    or ``embed(outputs)`` -> [P, q] features clustered into tables; ``outputs`` are the final
    latents [P, *shape]. ``fit_options`` go to ``cell_predictor_from_pilots`` (power,
    temperature, levels, ...). Use seeds apart from the galleries' own.
    """
    runs = run_pilots(pipe, prompt, pilots, seed=seed, batch_size=batch_size, **pipe_kwargs)
    predictor = cell_predictor_from_pilots(
        runs.noise,
        runs.outputs,
        labels=labels(runs.outputs) if labels is not None else None,
        embedding=embed(runs.outputs) if embed is not None else None,
        metadata={
            "kind": "pilot cells",
            "prompt": prompt,
            "pilot_seed": seed,
            "network_evaluations": runs.network_evaluations,
            "model": str(getattr(pipe, "name_or_path", type(pipe).__name__)),
            **{k: v for k, v in pipe_kwargs.items() if isinstance(v, (int, float, str, bool))},
        },
        **dict(fit_options or {}),
    )
    return PilotFit(predictor, runs)
