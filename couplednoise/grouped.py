"""Groups: G independent galleries of n (one per prompt), each coupled within itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from couplednoise.base import Coupling, GeneratorArg, Shape, check_count, draw_device


@dataclass(frozen=True, eq=False)
class Grouped(Coupling):
    """``coupling`` applied to consecutive groups of ``group_size``; groups independent.

    Sample i belongs to group i // group_size (prompt-major, as diffusers orders
    ``num_prompts * num_images_per_prompt``). ``sample`` takes one generator, drawing the groups
    in order, or a list with one generator per group (so a group's noise depends only on its own
    seed, whatever batch it is drawn in). Spec: ``grouped:group_size=4,coupling=repulsive`` (the
    inner coupling's spec comes last).
    """

    coupling: Coupling
    group_size: int
    name = "grouped"
    takes_generator_list = True

    def __post_init__(self):
        if not isinstance(self.coupling, Coupling):
            raise TypeError(f"coupling must be a Coupling, got {type(self.coupling).__name__}")
        check_count(self.group_size, "group_size")

    def _check(self, n: int, shape: Shape) -> None:
        if n % self.group_size:
            raise ValueError(f"batch of {n} is not a whole number of groups of {self.group_size}")
        self.coupling._check(self.group_size, shape)

    def _draw(self, n: int, shape: Shape, generator: GeneratorArg) -> torch.Tensor:
        """[n, *shape]: n // group_size independent coupled groups, prompt-major."""
        generators = per_group_generators(generator, n // self.group_size)
        out = torch.empty((n, *shape), dtype=torch.float32, device=draw_device(generators[0]))
        for g, gen in enumerate(generators):
            block = self.coupling._draw(self.group_size, shape, gen)
            out[g * self.group_size : (g + 1) * self.group_size] = block.to(out.device)
        return out

    def _correlation(self, n: int) -> torch.Tensor:
        self._check(n, (1, 1))
        return torch.block_diag(
            *[self.coupling.correlation(self.group_size)] * (n // self.group_size)
        )

    @property
    def spec(self) -> str:
        return f"grouped:group_size={self.group_size},coupling={self.coupling.spec}"


def per_group_generators(generator: GeneratorArg, groups: int) -> list[torch.Generator | None]:
    """One generator per group: a list of length ``groups``, or one shared generator repeated."""
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * groups
    generators = list(generator)
    if len(generators) != groups:
        raise ValueError(
            f"got {len(generators)} generators for {groups} groups; pass one per group"
        )
    devices = {draw_device(g) for g in generators}
    if len(devices) > 1:
        raise ValueError(f"all generators must be on one device, got {sorted(map(str, devices))}")
    return generators


def sample_groups(
    coupling: Coupling,
    groups: int,
    n: int,
    shape: Sequence[int],
    *,
    generator: GeneratorArg = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """[groups * n, *shape]: ``groups`` independent galleries of n, each drawn with ``coupling``."""
    check_count(groups, "groups")
    return Grouped(coupling, check_count(n)).sample(
        groups * n, shape, generator=generator, device=device, dtype=dtype
    )
