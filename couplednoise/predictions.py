"""What a predictor tells a pool's partition rule about each noise item.

- ``Categories``: probability tables, each [N, V] with rows summing to 1: the predicted law of
  what each item becomes (its outcome, the value of each attribute), one weight per table.
- ``Features``: [N, p] predicted features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Categories:
    """Predicted laws of N items: ``tables[t]`` [N, V_t] (rows sum to 1), weighted ``weights[t]``."""

    tables: tuple[torch.Tensor, ...]
    weights: tuple[float, ...]

    def __post_init__(self):
        tables = tuple(torch.as_tensor(t, dtype=torch.float64) for t in self.tables)
        weights = tuple(float(w) for w in self.weights)
        if not tables or len(tables) != len(weights):
            raise ValueError(
                f"Categories needs one weight per table, got {len(tables)} table(s) and "
                f"{len(weights)} weight(s)"
            )
        if any(t.dim() != 2 or t.shape[0] != tables[0].shape[0] for t in tables):
            raise ValueError(
                f"tables must be [N, V] with one N, got {[list(t.shape) for t in tables]}"
            )
        if any(not w > 0 or math.isinf(w) for w in weights):
            raise ValueError(f"table weights must be positive and finite, got {weights}")
        object.__setattr__(self, "tables", tables)
        object.__setattr__(self, "weights", weights)

    def __len__(self) -> int:
        return self.tables[0].shape[0]


@dataclass(frozen=True, eq=False)
class Features:
    """Predicted features [N, p] of N items (float64)."""

    values: torch.Tensor

    def __post_init__(self):
        values = torch.as_tensor(self.values, dtype=torch.float64)
        if values.dim() != 2:
            raise ValueError(f"features must be [N, p], got shape {list(values.shape)}")
        if not torch.isfinite(values).all():
            raise ValueError("features hold NaN or infinite values")
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return self.values.shape[0]


Prediction = Categories | Features


def concatenate(predictions: Sequence[Prediction]) -> Prediction:
    """One prediction for the items of several (same kind and layout), in order."""
    first = predictions[0]
    if isinstance(first, Features):
        return Features(torch.cat([p.values for p in predictions]))
    tables = tuple(torch.cat(parts) for parts in zip(*(p.tables for p in predictions)))
    return Categories(tables, first.weights)
