"""Terrain prompts: the prompt of the terrain model is its difficulty.

    parse_difficulty("difficulty 50")   # -> 50.0 ("50", "Difficulty: 50", "difficulty=50.5" too)
    difficulty_input(50.5)              # -> 0.5, the ONNX network's ``difficulty`` input

Grammar: an optional word "difficulty" (any case), an optional ":" or "=", then a number d from
1 to 100. The network is conditioned on the continuous value (d - 1) / 99 (its ONNX metadata
says "continuous-1-to-100"), so decimals are allowed; the package's own API rounds to whole
numbers, which this grammar also accepts.
"""

from __future__ import annotations

import math
import re

MIN_DIFFICULTY = 1.0
MAX_DIFFICULTY = 100.0
_PROMPT = re.compile(
    r"\s*(?:difficulty\s*[:=]?\s*)?(?P<value>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*", re.IGNORECASE
)
HOW = "write 'difficulty 50' or '50': a number from 1 to 100 (decimals allowed, e.g. '50.5')"


def parse_difficulty(prompt: str) -> float:
    """The difficulty d in [1, 100] that ``prompt`` names; ValueError saying the grammar if not."""
    if not isinstance(prompt, str):
        raise TypeError(f"a terrain prompt must be a string, got {type(prompt).__name__}")
    match = _PROMPT.fullmatch(prompt)
    if match is None:
        raise ValueError(f"terrain prompt {prompt!r} is not a difficulty: {HOW}")
    value = float(match["value"])
    if not MIN_DIFFICULTY <= value <= MAX_DIFFICULTY or math.isnan(value):
        raise ValueError(
            f"terrain prompt {prompt!r}: difficulty {value:g} is outside "
            f"{MIN_DIFFICULTY:g}..{MAX_DIFFICULTY:g}; {HOW}"
        )
    return value


def difficulty_input(difficulty: float) -> float:
    """The network's conditioning value (d - 1) / 99 in [0, 1] for a difficulty d in [1, 100]."""
    return (difficulty - MIN_DIFFICULTY) / (MAX_DIFFICULTY - MIN_DIFFICULTY)
