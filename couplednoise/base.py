"""The coupling interface and the randomness conventions every coupling shares.

Convention (as diffusers' ``randn_tensor``, made device-independent): noise is drawn in float32 on
the generator's device (CPU when no generator is given), transformed there in float32, and only
then moved to ``device`` and cast to ``dtype``. A seed therefore gives bit-identical noise whatever
device the result lands on.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import math
from collections.abc import Sequence

import torch

Shape = tuple[int, ...]
# One generator, or (for couplings that draw groups, such as Grouped) one per group.
GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def draw_device(generator: torch.Generator | None) -> torch.device:
    """Where noise is drawn and transformed: the generator's device, CPU by default."""
    return generator.device if generator is not None else torch.device("cpu")


def standard_normal(shape: Sequence[int], generator: torch.Generator | None) -> torch.Tensor:
    """i.i.d. N(0, 1) float32 noise of ``shape`` on the generator's device."""
    return torch.randn(
        tuple(shape), generator=generator, device=draw_device(generator), dtype=torch.float32
    )


def check_count(n: int, what: str = "n") -> int:
    """``n`` as a positive int, or a ValueError naming it."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{what} must be >= 1, got {n}")
    return n


def check_shape(shape: Sequence[int]) -> Shape:
    """A per-sample shape as a tuple of positive ints, e.g. (4, 64, 64)."""
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape}")
    return shape


def check_real(value, name: str) -> float:
    """``value`` as a finite float (ints allowed; bools, strings, NaN and inf are errors)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_unit_interval(value: float, name: str) -> float:
    """``value`` as a float in [0, 1], or an error naming the parameter and the bound."""
    value = check_real(value, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


class Coupling(abc.ABC):
    """A joint law of n samples whose marginals are each exactly N(0, I).

    Subclasses are frozen dataclasses implementing ``_check`` (validation, before any drawing) and
    ``_draw`` (float32 samples on the generator's device). Couplings with a Gaussian joint law also
    implement ``correlation(n)``; those that can be drawn in stages implement ``_extension_law``
    or override ``_extend``.
    """

    name: str = "coupling"
    # Whether ``sample`` takes a list of generators (one per group; see Grouped).
    takes_generator_list: bool = False

    def sample(
        self,
        n: int,
        shape: Sequence[int],
        *,
        generator: GeneratorArg = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draw a coupled batch: Tensor [n, *shape], each row exactly N(0, I).

        ``generator``: a torch.Generator (noise is drawn on its device), or None (CPU); couplings
        that draw groups (``Grouped``) also take a list with one generator per group.
        """
        n = check_count(n)
        shape = check_shape(shape)
        check_generator(generator, lists=self.takes_generator_list)
        check_output_dtype(dtype)
        self._check(n, shape)
        return to_output(self._draw(n, shape, generator), device, dtype)

    def check(self, n: int, shape: Sequence[int]) -> None:
        """Raise ValueError / TypeError now if ``sample(n, shape)`` would be refused (no drawing)."""
        self._check(check_count(n), check_shape(shape))

    def correlation(self, n: int) -> torch.Tensor:
        """The n x n cross-sample correlation (float64): Cov(Z_i[c], Z_j[c]) for any coordinate c."""
        return self._correlation(check_count(n))

    def _correlation(self, n: int) -> torch.Tensor:
        raise TypeError(f"{self.name} has no single cross-sample correlation matrix")

    def extend(
        self,
        previous: torch.Tensor,
        k: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draw k more samples [k, *shape] from the exact conditional law given ``previous``.

        ``previous`` [n, *shape] must have been drawn with ``self.sample(n, ...)``; the n + k samples
        together then follow the law documented by the coupling's ``extension_correlation``.
        """
        k = check_count(k, "k")
        check_generator(generator, lists=False)
        check_output_dtype(dtype)
        if not isinstance(previous, torch.Tensor):
            raise TypeError(
                f"previous must be a torch.Tensor [n, *shape], got {type(previous).__name__}"
            )
        if previous.dim() < 2:
            raise ValueError(f"previous must be [n, *shape], got shape {tuple(previous.shape)}")
        n, shape = previous.shape[0], tuple(previous.shape[1:])
        self._check_extension(n, k, shape)
        previous = previous.detach().to(draw_device(generator), torch.float32)
        if not torch.isfinite(previous).all():
            raise ValueError("previous holds NaN or infinite values; it cannot be a coupled draw")
        return to_output(self._extend(previous, k, generator), device, dtype)

    @property
    def spec(self) -> str:
        """The string spec that rebuilds this coupling with ``get_coupling`` (scalar fields only;
        a tensor field shows as ``<Tensor 64x64 #1a2b3c4d>``: its shape and a content hash)."""
        params = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (bool, int, float, str)) and value != field.default:
                params.append(f"{field.name}={value}")
            elif isinstance(value, torch.Tensor):
                params.append(f"{field.name}={_describe_tensor(value)}")
            elif value is not None and not isinstance(value, (bool, int, float, str)):
                params.append(f"{field.name}=<{type(value).__name__}>")
        return self.name + (":" + ",".join(params) if params else "")

    # --- for subclasses -------------------------------------------------------------------------

    def _check(self, n: int, shape: Shape) -> None:  # noqa: B027 - optional hook, default accepts
        """Raise ValueError for a request this coupling cannot serve."""

    @abc.abstractmethod
    def _draw(self, n: int, shape: Shape, generator: torch.Generator | None) -> torch.Tensor:
        """float32 samples [n, *shape] on the generator's device."""

    def _check_extension(self, n: int, k: int, shape: Shape) -> None:
        self._check(n, shape)

    def extension_correlation(self, n: int, k: int) -> torch.Tensor:
        """The (n+k) x (n+k) correlation of a gallery of n extended by k (float64)."""
        raise TypeError(f"{self.name} cannot be extended")

    def _extend(
        self, previous: torch.Tensor, k: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        from couplednoise.extension import conditional_sample

        n = previous.shape[0]
        return conditional_sample(previous, self.extension_correlation(n, k), generator)


def to_output(
    z: torch.Tensor, device: torch.device | str | None, dtype: torch.dtype | None
) -> torch.Tensor:
    """Move float32 samples to ``device`` and cast to ``dtype`` (float32 when None): the last step
    of every draw, after all arithmetic in float32 on the generator's device."""
    return z.to(device=device if device is not None else z.device, dtype=dtype or torch.float32)


def check_generator(generator, *, lists: bool) -> None:
    """TypeError unless ``generator`` is None, a torch.Generator or (``lists``) a list of them."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    is_list = isinstance(generator, (list, tuple))
    if lists and is_list and all(isinstance(g, torch.Generator) for g in generator):
        return
    allowed = "a torch.Generator, None" + (" or a list of torch.Generator" if lists else "")
    raise TypeError(f"generator must be {allowed}, got {type(generator).__name__}")


def check_output_dtype(dtype) -> None:
    """TypeError unless ``dtype`` is None or a real floating torch dtype (noise is not integer)."""
    if dtype is None:
        return
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"dtype must be a floating torch dtype (torch.float32, float16, bfloat16), got {dtype!r}"
        )


def _describe_tensor(value: torch.Tensor) -> str:
    """``<Tensor 4x64x64 #1a2b3c4d>``: shape and the first 8 hex digits of a sha256 of the data."""
    data = value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    shape = "x".join(str(d) for d in value.shape)
    return f"<Tensor {shape} #{hashlib.sha256(data).hexdigest()[:8]}>"
