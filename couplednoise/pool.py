"""Pool-partition couplings: a gallery planned by a predictor, every sample exactly N(0, I).

Draw a pool X_1..X_N (N = B K), each X_j marginally N(0, I): i.i.d., or B' independent blocks of
a coupling (e.g. zero-sum blocks). Partition the pool into B groups of K by any rule that may
look at the whole pool (plus independent randomness). Output one group chosen uniformly at
random, in uniformly random order. Why every sample is exactly N(0, I), whatever the rule:
given the pool, slot i holds item j with probability (1/B)(1/K) = 1/N for every j (group and
order are chosen independently of the pool and of each other), so

    P(Z_i in S) = E[ P(Z_i in S | pool) ] = E[ (1/N) sum_j 1{X_j in S} ] = (1/N) sum_j P(X_j in S)
                = N(0, I)(S).

The joint law is exchangeable and not Gaussian; the rule is where the design goes: it puts
items predicted to become different images into the same group (see couplednoise.partition).

Two ways to draw (the same law):
- Linear predictors (phi = U vec(z), U [r, d] with orthonormal rows) with a Gaussian pool
  coupling (law L kron I: independent, repulsive, equicorrelated, antithetic, gaussian): the
  pool draws only phi [N, r], partitions, and completes the K output items as
  z = U^T phi + (I - U^T U) e, e drawn afresh from the pool coupling's law. phi and the
  complement (I - U^T U) X are independent (orthogonal projections of an L kron I Gaussian), the
  rule reads phi only, so drawing the complement after the rule gives the same joint law.
- Any other predictor or pool coupling: items are drawn in blocks from per-block seeds, scored a
  chunk at a time, and the chosen blocks are drawn again from their seeds.
Either way the pool never holds N full-size latents.

Extension (``extend``): k more samples from a fresh pool whose rule counts the earlier samples
as members of every group (so it groups new items unlike those), output as above: each new
sample is exactly N(0, I) by the same argument, conditionally on the earlier ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from couplednoise.base import Coupling, Shape, check_count, draw_device, standard_normal
from couplednoise.deterministic import one_thread
from couplednoise.gaussian import Antithetic, Equicorrelated, Gaussian, Independent, Repulsive
from couplednoise.partition import partition
from couplednoise.predictions import Categories, Features, Prediction, concatenate
from couplednoise.predictors import LinearPredictor, Predictor, get_predictor

MAX_POOL_SIZE = 1 << 16
# Pool couplings whose law is L kron I (coordinates independent and alike): their blocks can be
# drawn in orthonormal coordinates and completed later (the fast path above).
GAUSSIAN_LAWS = (Independent, Repulsive, Equicorrelated, Antithetic, Gaussian)
CHUNK_BYTES = 64 << 20  # generic path: at most this much noise in memory at once


@dataclass(frozen=True, eq=False)
class Pool(Coupling):
    """One group of a pool of ``pool_size`` items partitioned by ``predictor``'s rule.

    pool_size: N = B K items (a multiple of the gallery size K; B = N / K groups).
    predictor: a ``Predictor`` or a name (``dct``, ``dct:8``, ``learned:/path/file.pt``).
    coupling: the law of the pool's blocks (independent by default; ``repulsive`` gives
        zero-sum blocks).
    block_size: items per block of ``coupling`` (0: the gallery size K).
    keep_blocks: groups are unions of whole blocks (needs block_size dividing K): with zero-sum
        blocks every group then sums to zero exactly, like the repulsive coupling.
    Spec: ``pool:pool_size=256,predictor=dct,coupling=repulsive`` (the pool coupling last).
    """

    pool_size: int = 256
    predictor: Predictor | str = "dct"
    block_size: int = 0
    keep_blocks: bool = False
    coupling: Coupling = field(default_factory=Independent)
    name = "pool"

    def __post_init__(self):
        check_count(self.pool_size, "pool_size")
        if self.pool_size > MAX_POOL_SIZE:
            raise ValueError(f"pool_size must be <= {MAX_POOL_SIZE}, got {self.pool_size}")
        object.__setattr__(self, "predictor", get_predictor(self.predictor))
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int):
            raise TypeError(f"block_size must be an int, got {type(self.block_size).__name__}")
        if self.block_size < 0:
            raise ValueError(
                f"block_size must be >= 0 (0: the gallery size), got {self.block_size}"
            )
        if not isinstance(self.keep_blocks, bool):
            raise TypeError(f"keep_blocks must be true or false, got {self.keep_blocks!r}")
        if not isinstance(self.coupling, Coupling) or self.coupling.takes_generator_list:
            raise TypeError(
                f"coupling must be a Coupling drawn with one generator (not Grouped), "
                f"got {type(self.coupling).__name__}"
            )

    def blocks(self, n: int) -> int:
        """Items per block of the pool coupling for a gallery of n."""
        return self.block_size or n

    def _check(self, n: int, shape: Shape) -> None:
        if self.pool_size % n:
            raise ValueError(
                f"pool_size={self.pool_size} must be a multiple of the gallery size n={n} "
                f"(e.g. pool_size={64 * n} for 64 groups)"
            )
        m = self.blocks(n)
        if self.pool_size % m:
            raise ValueError(f"block_size={m} must divide pool_size={self.pool_size}")
        if self.keep_blocks and n % m:
            raise ValueError(
                f"keep_blocks needs block_size dividing the gallery size n={n}, got {m}"
            )
        self.coupling._check(m, shape)
        self.predictor.check(shape)

    def _check_extension(self, n: int, k: int, shape: Shape) -> None:
        self._check(k, shape)

    @property
    def fast(self) -> bool:
        """Whether pools are drawn in the predictor's coordinates (see the module docstring)."""
        return isinstance(self.predictor, LinearPredictor) and isinstance(
            self.coupling, GAUSSIAN_LAWS
        )

    def _draw(self, n: int, shape: Shape, generator: torch.Generator | None) -> torch.Tensor:
        return self._sample_group(n, shape, generator, previous=None)

    def _extend(self, previous: torch.Tensor, k: int, generator) -> torch.Tensor:
        earlier = _on_cpu(self.predictor.predict(previous))
        return self._sample_group(k, tuple(previous.shape[1:]), generator, previous=earlier)

    def _sample_group(
        self, n: int, shape: Shape, generator, previous: Prediction | None
    ) -> torch.Tensor:
        """[n, *shape]: one group of a partitioned pool, in random order."""
        draw_unit = 1 if isinstance(self.coupling, Independent) else self.blocks(n)
        if self.fast:
            with one_thread():  # N x r coordinates and the rule: many tiny ops
                pool = _CoordinatePool(self, shape, draw_unit, generator)
                chosen = self.select(pool.prediction, n, generator, previous)
        else:  # full-size items through any predictor: its own threads
            pool = _SeededPool(self, shape, draw_unit, generator)
            with one_thread():
                chosen = self.select(pool.prediction, n, generator, previous)
        return pool.items(chosen)

    def select(
        self,
        prediction: Prediction,
        n: int,
        generator: torch.Generator | None = None,
        previous: Prediction | None = None,
    ) -> torch.Tensor:
        """Pool item indices [n] (int64) filling the n slots: the rule partitions the predicted
        pool into pool_size / n groups, one group is chosen uniformly, its items shuffled."""
        m = self.blocks(n)
        groups = partition(
            prediction,
            self.pool_size // n,
            unit_size=m if self.keep_blocks else 1,
            generator=generator,
            previous=previous,
        )
        device = draw_device(generator)
        group = int(torch.randint(groups.shape[0], (1,), generator=generator, device=device))
        order = torch.randperm(n, generator=generator, device=device).cpu()
        return groups[group][order]

    @property
    def spec(self) -> str:
        params = []
        if self.pool_size != 256:
            params.append(f"pool_size={self.pool_size}")
        if self.predictor.spec != "dct":
            params.append(f"predictor={self.predictor.spec}")
        if self.block_size:
            params.append(f"block_size={self.block_size}")
        if self.keep_blocks:
            params.append("keep_blocks=true")
        if not isinstance(self.coupling, Independent):
            params.append(f"coupling={self.coupling.spec}")
        return self.name + (":" + ",".join(params) if params else "")


def _on_cpu(prediction: Prediction) -> Prediction:
    if isinstance(prediction, Features):
        return Features(prediction.values.cpu())
    return Categories(tuple(t.cpu() for t in prediction.tables), prediction.weights)


def _draw_blocks(coupling: Coupling, unit: int, count: int, tail: Shape, generator) -> torch.Tensor:
    """[count * unit, *tail]: ``count`` independent blocks of ``unit`` items of an L kron I law,
    block-major, in one draw (the law acts on each coordinate alike, so the blocks can share it)."""
    if unit == 1:
        return standard_normal((count, *tail), generator)
    z = coupling._draw(unit, (count, *tail), generator)  # [unit, count, *tail]
    return z.transpose(0, 1).reshape(count * unit, *tail)


class _CoordinatePool:
    """The pool drawn as coordinates phi = U vec(X) [N, r]; output items completed afresh."""

    def __init__(self, pool: Pool, shape: Shape, unit: int, generator):
        self.coupling, self.shape, self.unit, self.generator = pool.coupling, shape, unit, generator
        self.predictor = pool.predictor
        rank = self.predictor.rank(shape)
        blocks = pool.pool_size // unit
        self.phi = _draw_blocks(self.coupling, unit, blocks, (rank,), generator)
        self.prediction = _on_cpu(self.predictor.predict_coordinates(self.phi))

    def items(self, chosen: torch.Tensor) -> torch.Tensor:
        """The full noise [n, *shape] of pool items ``chosen``: U^T phi + (I - U^T U) e."""
        if self.unit == 1:
            e = standard_normal((chosen.numel(), *self.shape), self.generator)
        else:  # each chosen item's complement comes from a fresh draw of its block's law
            blocks, slot = torch.unique(chosen // self.unit, return_inverse=True)
            fresh = _draw_blocks(
                self.coupling, self.unit, blocks.numel(), self.shape, self.generator
            )
            e = fresh[slot * self.unit + chosen % self.unit]
        lift = self.predictor.lift
        phi = self.phi[chosen.to(self.phi.device)]
        return lift(phi, self.shape) + (e - lift(self.predictor.project(e), self.shape))


class _SeededPool:
    """The pool drawn block by block from per-block seeds; chosen blocks drawn again."""

    def __init__(self, pool: Pool, shape: Shape, unit: int, generator):
        self.coupling, self.shape, self.unit = pool.coupling, shape, unit
        self.device = draw_device(generator)
        blocks = pool.pool_size // unit
        self.seeds = torch.randint(
            0, 1 << 62, (blocks,), generator=generator, device=self.device
        ).tolist()
        per_chunk = max(1, CHUNK_BYTES // (4 * unit * math.prod(shape)))
        parts = []
        for start in range(0, blocks, per_chunk):
            chunk = torch.cat(
                [self._block(b) for b in range(start, min(blocks, start + per_chunk))]
            )
            parts.append(_on_cpu(pool.predictor.predict(chunk)))
        self.prediction = concatenate(parts)

    def _block(self, index: int) -> torch.Tensor:
        generator = torch.Generator(self.device).manual_seed(self.seeds[index])
        if self.unit == 1:
            return standard_normal((1, *self.shape), generator)
        return self.coupling._draw(self.unit, self.shape, generator)

    def items(self, chosen: torch.Tensor) -> torch.Tensor:
        out = []
        cache: dict[int, torch.Tensor] = {}
        for item in chosen.tolist():
            block = item // self.unit
            if block not in cache:
                cache[block] = self._block(block)
            out.append(cache[block][item % self.unit])
        return torch.stack(out)
