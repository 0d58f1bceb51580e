"""The learned lab's quality bar and memorisation check, as raw per-prompt measurements.

    prompts = random_prompts(200, seed=0)
    rows = prompt_alignment(pipe, classifier, prompts, images_per_prompt=4, seed=0)
    distances = memorisation_distances(samples, training_bank(config), heldout)

A prompt names each attribute with probability 1/2 (at least one), so the check covers prompts
from one named attribute to all four. ``couplednoise learned-lab check`` turns the rows into
the reported figures with 95% confidence intervals (over prompts, the unit of independence).
"""

from __future__ import annotations

import torch

from couplednoise.pipelines.learned_lab.prompts import parse_prompt, prompt_of
from couplednoise.pipelines.learned_lab.readout import matches, read_attributes
from couplednoise.pipelines.learned_lab.train import TrainConfig, step_generator
from couplednoise.pipelines.learned_lab.world import ATTRIBUTES, sample_composites


def random_prompts(n: int, *, seed: int = 0, p_named: float = 0.5) -> list[str]:
    """``n`` prompts; each names each attribute with probability ``p_named`` (at least one)."""
    g = torch.Generator().manual_seed(seed)
    prompts = []
    while len(prompts) < n:
        named = torch.rand(len(ATTRIBUTES), generator=g) < p_named
        values = [int(torch.randint(len(v), (1,), generator=g)) for v in ATTRIBUTES.values()]
        if not named.any():
            continue
        constraints = {
            name: ATTRIBUTES[name][v]
            for (name, v, on) in zip(ATTRIBUTES, values, named.tolist())
            if on
        }
        prompts.append(prompt_of(constraints))
    return prompts


def prompt_alignment(
    pipe,
    classifier,
    prompts: list[str],
    *,
    images_per_prompt: int = 4,
    seed: int = 0,
    guidance_scale: float | None = None,
    num_inference_steps: int | None = None,
    batch_prompts: int = 16,
) -> tuple[list[dict], torch.Tensor]:
    """Per prompt: {"prompt", "aligned" (fraction of its images showing every named
    attribute), "<attribute>": fraction showing that named value, for each named one}; and
    the images [P * n, 3, 32, 32]. Prompt i's images come from generator seed + i, so a
    prompt's images do not depend on the batching."""
    kwargs = {}
    if guidance_scale is not None:
        kwargs["guidance_scale"] = guidance_scale
    if num_inference_steps is not None:
        kwargs["num_inference_steps"] = num_inference_steps
    rows, images = [], []
    for start in range(0, len(prompts), batch_prompts):
        chunk = prompts[start : start + batch_prompts]
        shape = (images_per_prompt, 3, 32, 32)
        latents = torch.cat(
            [
                torch.randn(shape, generator=torch.Generator().manual_seed(seed + start + i))
                for i in range(len(chunk))
            ]
        )
        out = pipe(
            chunk, num_images_per_prompt=images_per_prompt, latents=latents, output_type="pt",
            **kwargs,
        ).images  # fmt: skip
        images.append(out.cpu())
        attributes = read_attributes(out.cpu(), classifier)
        for i, prompt in enumerate(chunk):
            constraints = parse_prompt(prompt)
            shown = attributes[i * images_per_prompt : (i + 1) * images_per_prompt]
            row = {
                "prompt": prompt,
                "aligned": sum(matches(a, constraints) for a in shown) / len(shown),
            }
            for name, value in constraints.items():
                row[name] = sum(a[name] == value for a in shown) / len(shown)
            rows.append(row)
    return rows, torch.cat(images)


def training_bank(config: TrainConfig, steps: int | None = None, *, every: int = 1) -> torch.Tensor:
    """The clean composites [S * B, 3, 32, 32] of training batches 0, every, 2 every, ... (below
    ``steps``, default the config's): exactly images the denoiser was trained on."""
    steps = config.steps if steps is None else steps
    parts = [
        sample_composites(
            config.batch_size, "train", generator=step_generator(config.seed, s)
        ).images
        for s in range(0, steps, every)
    ]
    return torch.cat(parts)
