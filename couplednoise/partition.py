"""Partition rules for pool couplings: split a pool into B groups whose items a prediction says
will differ.

The pool's items are grouped into units (single items, or whole blocks of a coupled pool when a
pool keeps its blocks together); each group gets the same number of units. Groups are built in
rounds: round one gives every group one unit at random (or, when the gallery extends earlier
samples, by gain like every later round); each later round gives every group one more unit by an
assignment that maximises the total gain, then improves it by swaps. The gain of a unit for a
group is the increase of the group's objective:
- ``Categories``: the expected number of distinct values, summed over tables with their
  weights, E[#distinct] = sum_v 1 - prod_{j in group} (1 - q_j(v)); the gain of unit u is
  sum_v P(v still uncovered) P(u covers v), a matrix product.
- ``Features``: farthest point: the distance from the unit to the group's nearest member.
The rule only decides which items travel together: whatever it does, the pool coupling that
outputs one group uniformly at random, in random order, keeps every sample exactly N(0, I).
"""

from __future__ import annotations

import torch

from couplednoise.deterministic import stable_matmul
from couplednoise.predictions import Categories, Features, Prediction

# Passes of the improvement per round (each makes many disjoint moves); it stops earlier at a
# local optimum, where no swap or exchange raises the round's total gain.
MAX_PASSES = 64


class _Coverage:
    """Expected distinct values. The tables sit side by side as columns [U, V] (V summed over
    tables); state [B, V]: P(value v not yet covered by group b)."""

    def __init__(self, prediction: Categories, unit_size: int):
        tables = torch.cat(prediction.tables, dim=1)
        self.weights = torch.cat(
            [
                torch.full((t.shape[1],), w, dtype=t.dtype)
                for t, w in zip(prediction.tables, prediction.weights)
            ]
        )
        self.miss = (1 - tables).clamp(min=0).reshape(-1, unit_size, tables.shape[1]).prod(1)
        self.hit_columns = (1 - self.miss).T.contiguous()  # [V, U]: P(unit covers v)
        self.widths = [t.shape[1] for t in prediction.tables]

    def reorder(self, order: torch.Tensor) -> None:
        self.miss = self.miss[order]
        self.hit_columns = self.hit_columns[:, order]

    def initial(self, groups: int, previous: Prediction | None) -> torch.Tensor:
        if previous is None:
            return torch.ones(groups, self.miss.shape[1], dtype=self.miss.dtype)
        if (
            not isinstance(previous, Categories)
            or [t.shape[1] for t in previous.tables] != self.widths
        ):
            raise ValueError("the earlier samples' prediction is not of the pool's kind")
        missed = (1 - torch.cat(previous.tables, dim=1)).clamp(min=0).prod(0, keepdim=True)
        return missed.expand(groups, -1).clone()

    def gains(self, state: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        return stable_matmul(state * self.weights, self.hit_columns[:, units])

    def add(self, state: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        return state * self.miss[units]


class _Spread:
    """Farthest point; state [B, U]: distance from each unit to group b's nearest member."""

    def __init__(self, prediction: Features, unit_size: int):
        values = prediction.values
        units = values.shape[0] // unit_size
        self.unit_values = values.reshape(units, unit_size, values.shape[1])
        distance = pairwise_distance(values, values)
        self.distance = distance.reshape(units, unit_size, units, unit_size).amin((1, 3))

    def reorder(self, order: torch.Tensor) -> None:
        self.distance = self.distance[order][:, order]
        self.unit_values = self.unit_values[order]

    def initial(self, groups: int, previous: Prediction | None) -> torch.Tensor:
        units, unit_size, width = self.unit_values.shape
        if previous is None:
            return torch.full((groups, units), torch.inf, dtype=self.distance.dtype)
        if not isinstance(previous, Features) or previous.values.shape[1] != width:
            raise ValueError("the earlier samples' prediction is not of the pool's kind")
        to_previous = pairwise_distance(self.unit_values.flatten(0, 1), previous.values)
        nearest = to_previous.amin(1).reshape(units, unit_size).amin(1)
        return nearest[None].expand(groups, -1).clone()

    def gains(self, state: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        return state[:, units]

    def add(self, state: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        return torch.minimum(state, self.distance[units])


def pairwise_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [n, m] between rows of a [n, p] and b [m, p], thread-count stable."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * stable_matmul(a, b.T)
    return squared.clamp(min=0).sqrt()


def greedy_assignment(gain: torch.Tensor) -> torch.Tensor:
    """cols [B]: a distinct column for each row of gain [B, R] (R >= B), the greedy matching.

    Repeatedly takes every pair (b, c) where c is row b's best free column and b is column c's
    best free row (locally dominant pairs: their union is the greedy matching, built in a few
    vectorised passes rather than B sequential ones)."""
    rows, width = gain.shape
    g = gain.clone()
    cols = torch.full((rows,), -1, dtype=torch.long)
    left = torch.ones(rows, dtype=torch.bool)
    for _ in range(rows):
        value, best = g.max(1)
        column_best = g[:, best].max(0).values  # best free row's gain in each row's column
        mutual = left & (value >= column_best)
        candidates = mutual.nonzero().flatten()
        if candidates.numel() == 0:  # only ties left: take the first remaining row's best
            candidates = left.nonzero().flatten()[:1]
        # one row per column (ties: the lowest row index)
        first = torch.full((width,), rows, dtype=torch.long)
        first.scatter_reduce_(0, best[candidates], candidates, "amin")
        winners = candidates[first[best[candidates]] == candidates]
        taken = best[winners]
        cols[winners] = taken
        left[winners] = False
        if not bool(left.any()):
            break
        g[winners] = -torch.inf
        g[:, taken] = -torch.inf
    return cols


def improve_assignment(gain: torch.Tensor, cols: torch.Tensor, max_passes: int) -> torch.Tensor:
    """Local search from ``cols`` until no single move raises the total gain (or ``max_passes``):
    a move swaps two rows' columns or exchanges a row's column for a free one. Each pass makes
    every row's best move where moves do not collide (swaps whose partners choose each other,
    then exchanges onto distinct free columns: disjoint moves add up exactly), or else the one
    best move."""
    rows, width = gain.shape
    index = torch.arange(rows)
    cols = cols.clone()
    taken = torch.zeros(width, dtype=gain.dtype)  # -inf on taken columns: no exchange there
    taken[cols] = -torch.inf
    tolerance = 1e-12 * max(float(gain.abs().max()), 1.0)
    for _ in range(max_passes):
        current = gain[index, cols]
        across = gain[:, cols]  # across[b1, b2]: row b1 taking row b2's column
        swap = across + across.T - current[:, None] - current[None, :]
        swap_gain, partner = swap.max(1)
        exchange_gain, column = (gain + taken - current[:, None]).max(1)
        if max(float(swap_gain.max()), float(exchange_gain.max())) <= tolerance:
            break
        swapping = (swap_gain > tolerance) & (swap_gain >= exchange_gain)
        swapping &= (partner[partner] == index) & swapping[partner]
        exchanging = (exchange_gain > tolerance) & (exchange_gain > swap_gain) & ~swapping
        winner = torch.full((width,), -torch.inf, dtype=gain.dtype)
        winner.scatter_reduce_(0, column[exchanging], exchange_gain[exchanging], "amax")
        exchanging &= exchange_gain >= winner[column]
        first = torch.full((width,), rows, dtype=torch.long)  # ties: the lowest row per column
        first.scatter_reduce_(0, column[exchanging], index[exchanging], "amin")
        exchanging &= first[column] == index
        new_cols = cols.clone()
        if not bool(swapping.any() or exchanging.any()):  # only colliding moves: the best one
            if float(swap_gain.max()) >= float(exchange_gain.max()):
                b1 = int(swap_gain.argmax())
                b2 = int(partner[b1])
                new_cols[b1], new_cols[b2] = cols[b2], cols[b1]
            else:
                exchanging[int(exchange_gain.argmax())] = True
        new_cols[swapping] = cols[partner[swapping]]
        moved = index[exchanging]
        taken[cols[moved]] = 0.0
        taken[column[moved]] = -torch.inf
        new_cols[moved] = column[moved]
        cols = new_cols
    return cols


def partition(
    prediction: Prediction,
    groups: int,
    *,
    unit_size: int = 1,
    generator: torch.Generator | None = None,
    previous: Prediction | None = None,
) -> torch.Tensor:
    """Item indices [groups, K] (int64, CPU): a partition of the N predicted items into groups.

    Units are consecutive runs of ``unit_size`` items (kept together); N must be a multiple of
    groups x unit_size, and K = N / groups. ``previous``: the prediction for samples already
    shown (a gallery being extended): they count as members of every group. ``generator``
    supplies the random first round and tie-breaking (on its device; indices come back on CPU).
    """
    n = len(prediction)
    if n % (groups * unit_size):
        raise ValueError(
            f"{n} items do not split into {groups} groups of whole units of {unit_size}"
        )
    if isinstance(prediction, Categories):
        objective = _Coverage(prediction, unit_size)
    elif isinstance(prediction, Features):
        objective = _Spread(prediction, unit_size)
    else:
        raise TypeError(
            f"prediction must be Categories or Features, got {type(prediction).__name__}"
        )
    units = n // unit_size
    per_group = units // groups
    device = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(units, generator=generator, device=device).cpu()
    objective.reorder(order)  # from here on unit i is unit order[i]: ties break at random
    state = objective.initial(groups, previous)
    members = torch.empty((groups, per_group), dtype=torch.long)
    free = torch.ones(units, dtype=torch.bool)
    for round_ in range(per_group):
        if round_ == 0 and previous is None:
            chosen = torch.arange(groups)  # a random unit per group (the order is random)
        else:
            candidates = free.nonzero().flatten()
            gain = objective.gains(state, candidates)
            cols = greedy_assignment(gain)
            if candidates.numel() > 1:
                cols = improve_assignment(gain, cols, MAX_PASSES)
            chosen = candidates[cols]
        members[:, round_] = chosen
        free[chosen] = False
        state = objective.add(state, chosen)
    unit_ids = order[members]  # [groups, per_group] original unit indices
    items = unit_ids[..., None] * unit_size + torch.arange(unit_size)
    return items.reshape(groups, per_group * unit_size)
