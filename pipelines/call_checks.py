"""Call checks the project's own diffusers-style pipelines (the lab, the learned lab) share."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def negative_prompts(negative_prompt: str | Sequence[str] | None, count: int) -> list[str]:
    """One negative prompt per prompt: None -> "", one string for all, or a list of ``count``."""
    negatives = "" if negative_prompt is None else negative_prompt
    negatives = [negatives] * count if isinstance(negatives, str) else list(negatives)
    if len(negatives) != count:
        raise ValueError(f"got {len(negatives)} negative prompts for {count} prompts")
    return negatives


def check_step_callback(
    callback: Callable | None, tensor_inputs: Sequence[str], allowed: Sequence[str]
) -> list[str]:
    """``callback_on_step_end`` is None or callable and asks only for ``allowed`` tensors; the
    names it asks for."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback_on_step_end must be callable, got {type(callback).__name__}")
    unknown = [k for k in tensor_inputs if k not in allowed]
    if unknown:
        raise ValueError(
            f"callback_on_step_end_tensor_inputs {unknown} are not among {list(allowed)}"
        )
    return list(tensor_inputs)
