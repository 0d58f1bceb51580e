"""Predictors for pool couplings: what a partition rule knows about a noise before any network runs.

A predictor maps noise items z [N, *shape] to a prediction the rule compares:
- ``Categories``: probability tables, each [N, V] with rows summing to 1 (the predicted law of
  what each item becomes: its scene, the value of each attribute); the rule maximises the
  expected number of distinct values in a group.
- ``Features``: [N, p] predicted features; the rule spreads each group out (farthest point).

Linear predictors read the noise only through orthonormal coordinates phi = U vec(z) (U [r, d]
with orthonormal rows). A pool then draws phi alone for its N items and the full noise only for
the K it outputs (exact: see ``couplednoise.pool``), so a pool of 256 SD latents costs 256 x r
numbers, not 256 latents.

Built in (``get_predictor`` names): ``dct`` / ``dct:L`` (the L x L lowest DCT frequencies of
each channel: zero network evaluations) and ``learned:PATH`` (a ``CellPredictor`` saved by
``CellPredictor.save``, e.g. fitted from pilot runs by ``couplednoise.pipelines.pool_pilots``).
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import io
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from couplednoise.base import Shape, check_count, check_shape
from couplednoise.deterministic import stable_matmul
from couplednoise.predictions import Categories, Features, Prediction

FORMAT = "couplednoise.cell_predictor"
FORMAT_VERSION = 1


class Predictor(abc.ABC):
    """Maps noise items [n, *shape] to a ``Categories`` or ``Features`` prediction."""

    def check(self, shape: Shape) -> None:  # noqa: B027 - optional hook, default accepts
        """Raise ValueError when this predictor cannot read samples of ``shape``."""

    @abc.abstractmethod
    def predict(self, z: torch.Tensor) -> Prediction:
        """The prediction for each row of z [n, *shape] (float32 on any device)."""

    @property
    def spec(self) -> str:
        """What a coupling spec shows for this predictor (rebuildable where it is a name)."""
        return f"<{type(self).__name__}>"


class LinearPredictor(Predictor):
    """A predictor that reads z only through phi = U vec(z), U [r, d] with orthonormal rows."""

    @abc.abstractmethod
    def rank(self, shape: Shape) -> int:
        """r: the number of coordinates for samples of ``shape``."""

    @abc.abstractmethod
    def project(self, z: torch.Tensor) -> torch.Tensor:
        """phi = U vec(z) [n, r] (float32) for z [n, *shape]."""

    @abc.abstractmethod
    def lift(self, phi: torch.Tensor, shape: Shape) -> torch.Tensor:
        """U^T phi [n, *shape] (float32) for phi [n, r]: the noise with these coordinates and
        nothing orthogonal to U."""

    @abc.abstractmethod
    def predict_coordinates(self, phi: torch.Tensor) -> Prediction:
        """The prediction from the coordinates phi [n, r] (float32)."""

    def predict(self, z: torch.Tensor) -> Prediction:
        return self.predict_coordinates(self.project(z))


@functools.lru_cache(maxsize=16)
def dct_rows(n: int, count: int) -> torch.Tensor:
    """The first ``count`` rows [count, n] of the orthonormal DCT-II matrix (float32)."""
    k = torch.arange(count, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None]
    rows = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    rows[0] /= math.sqrt(2.0)
    return rows.float()


@dataclass(frozen=True)
class DCTPredictor(LinearPredictor):
    """Noise-only features: the ``frequencies`` x ``frequencies`` lowest DCT coefficients of each
    channel (all leading dims of a sample; the last two are spatial), zero network evaluations.
    Diffusion samplers keep much of the noise's coarse layout, so items far apart in these
    coordinates tend to become different images. U is separable (one DCT per spatial axis), so
    projecting costs two small matrix products per channel, not a dense [r, d] one."""

    frequencies: int = 4

    def __post_init__(self):
        check_count(self.frequencies, "frequencies")

    def check(self, shape: Shape) -> None:
        if len(shape) < 2:
            raise ValueError(f"the dct predictor needs spatial samples [..., H, W], got {shape}")
        if min(shape[-2:]) < self.frequencies:
            raise ValueError(
                f"dct frequencies must be <= min(H, W) = {min(shape[-2:])}, got {self.frequencies}"
            )

    def _rows(self, shape: Shape, device) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(shape)
        f = self.frequencies
        return dct_rows(shape[-2], f).to(device), dct_rows(shape[-1], f).to(device)

    def rank(self, shape: Shape) -> int:
        self.check(shape)
        return math.prod(shape[:-2]) * self.frequencies**2

    def project(self, z: torch.Tensor) -> torch.Tensor:
        n, *_, h, w = z.shape
        rows_h, rows_w = self._rows(tuple(z.shape[1:]), z.device)
        f = self.frequencies
        y = stable_matmul(z.float().reshape(-1, w), rows_w.T)  # [n C h, f]: along width
        y = y.reshape(-1, h, f).transpose(1, 2).reshape(-1, h)
        y = stable_matmul(y, rows_h.T)  # [n C f_w, f_h]: along height
        return y.reshape(n, -1, f, f).transpose(2, 3).reshape(n, -1)  # [n, C f_h f_w]

    def lift(self, phi: torch.Tensor, shape: Shape) -> torch.Tensor:
        *_, h, w = shape
        rows_h, rows_w = self._rows(tuple(shape), phi.device)
        f = self.frequencies
        n = phi.shape[0]
        y = stable_matmul(phi.float().reshape(-1, f), rows_w)  # [n C f_h, w]
        y = y.reshape(-1, f, w).transpose(1, 2).reshape(-1, f)
        y = stable_matmul(y, rows_h)  # [n C w, h]
        return y.reshape(n, -1, w, h).transpose(2, 3).reshape(n, *shape)

    def predict_coordinates(self, phi: torch.Tensor) -> Features:
        return Features(phi)

    @property
    def spec(self) -> str:
        return "dct" if self.frequencies == 4 else f"dct:{self.frequencies}"


@dataclass(frozen=True, eq=False)
class FunctionPredictor(Predictor):
    """Any function of the noise, z [n, *shape] -> features [n, p] (nonlinear allowed). The pool
    then draws its items one block at a time from per-block seeds and redraws the chosen ones."""

    function: Callable[[torch.Tensor], torch.Tensor]

    def predict(self, z: torch.Tensor) -> Features:
        return Features(self.function(z))

    @property
    def spec(self) -> str:
        return f"<function {getattr(self.function, '__name__', type(self.function).__name__)}>"


@dataclass(frozen=True, eq=False)
class CellPredictor(LinearPredictor):
    """The cell model: z becomes outcome m = argmax_m <phi, a_m> + b_m, phi = U vec(z), read softly
    as q(m) = softmax_m((<phi, a_m> + b_m) / temperature).

    basis [r, d] (orthonormal rows) for samples of ``shape``; directions [M, r]; offsets [M];
    ``tables``: (name, labels [M] int64, weight) per table: the table of item j is
    sum_{m: labels[m] = v} q_j(m) for each value v (e.g. an attribute of each outcome, or the
    outcome itself). Built from a scene set (the lab oracle) or from pilot runs
    (``couplednoise.pipelines.pool_pilots``); saved with ``save`` and read with ``load`` (tensors,
    strings and numbers only, ``torch.load(weights_only=True)``).
    """

    basis_matrix: torch.Tensor
    shape: Shape
    directions: torch.Tensor
    offsets: torch.Tensor
    tables: tuple[tuple[str, torch.Tensor, float], ...]
    temperature: float = 1.5
    source: str | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        shape = check_shape(self.shape)
        u = torch.as_tensor(self.basis_matrix).detach().to("cpu", torch.float32).contiguous()
        a = torch.as_tensor(self.directions).detach().to("cpu", torch.float64)
        b = torch.as_tensor(self.offsets).detach().to("cpu", torch.float64)
        if u.dim() != 2 or u.shape[1] != math.prod(shape):
            raise ValueError(
                f"basis must be [r, prod(shape) = {math.prod(shape)}], got {list(u.shape)}"
            )
        gram = stable_matmul(u.double(), u.double().T)
        if (gram - torch.eye(u.shape[0], dtype=gram.dtype)).abs().max() > 1e-4:
            raise ValueError("basis rows must be orthonormal (U U^T = I within 1e-4)")
        if a.dim() != 2 or a.shape[1] != u.shape[0] or a.shape[0] < 1:
            raise ValueError(f"directions must be [M, r = {u.shape[0]}], got {list(a.shape)}")
        if b.shape != (a.shape[0],):
            raise ValueError(f"offsets must be [M = {a.shape[0]}], got {list(b.shape)}")
        temperature = float(self.temperature)
        if not temperature > 0 or math.isinf(temperature):
            raise ValueError(f"temperature must be > 0 and finite, got {temperature}")
        tables = tuple(self._check_table(a.shape[0], *table) for table in self.tables)
        if not tables:
            raise ValueError("a cell predictor needs at least one table (name, labels, weight)")
        for name, value in (("basis", u), ("directions", a), ("offsets", b)):
            object.__setattr__(self, name if name != "basis" else "basis_matrix", value)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "temperature", temperature)
        object.__setattr__(self, "tables", tables)

    @staticmethod
    def _check_table(cells: int, name, labels, weight) -> tuple[str, torch.Tensor, float]:
        labels = torch.as_tensor(labels).to("cpu", torch.int64)
        if labels.shape != (cells,) or (labels < 0).any():
            raise ValueError(
                f"table {name!r}: labels must be [M = {cells}] non-negative ints, "
                f"got shape {list(labels.shape)}"
            )
        weight = float(weight)
        if not weight > 0 or math.isinf(weight):
            raise ValueError(f"table {name!r}: weight must be positive and finite, got {weight}")
        return str(name), labels, weight

    @property
    def cells(self) -> int:
        return self.directions.shape[0]

    def check(self, shape: Shape) -> None:
        if tuple(shape) != self.shape:
            raise ValueError(
                f"this cell predictor was fitted for samples of shape {self.shape}, got {shape}"
            )

    def rank(self, shape: Shape) -> int:
        self.check(shape)
        return self.basis_matrix.shape[0]

    def project(self, z: torch.Tensor) -> torch.Tensor:
        self.check(tuple(z.shape[1:]))
        return stable_matmul(z.flatten(1).float(), self.basis_matrix.to(z.device).T)

    def lift(self, phi: torch.Tensor, shape: Shape) -> torch.Tensor:
        self.check(tuple(shape))
        return stable_matmul(phi.float(), self.basis_matrix.to(phi.device)).reshape(-1, *shape)

    def cell_probabilities(self, phi: torch.Tensor) -> torch.Tensor:
        """q [n, M] float64 from coordinates phi [n, r]."""
        logits = stable_matmul(phi.double(), self.directions.to(phi.device).T)
        return torch.softmax((logits + self.offsets.to(phi.device)) / self.temperature, dim=1)

    def predict_coordinates(self, phi: torch.Tensor) -> Categories:
        q = self.cell_probabilities(phi)
        tables = []
        for _, labels, _ in self.tables:
            one_hot = torch.nn.functional.one_hot(labels.to(q.device)).to(q.dtype)
            tables.append(stable_matmul(q, one_hot))
        return Categories(tuple(tables), tuple(w for _, _, w in self.tables))

    def save(self, path: str | Path) -> None:
        """Write the predictor to ``path`` (tensors, strings, numbers: no pickled objects)."""
        buffer = io.BytesIO()
        torch.save(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "basis": self.basis_matrix,
                "shape": list(self.shape),
                "directions": self.directions,
                "offsets": self.offsets,
                "temperature": self.temperature,
                "table_names": [name for name, _, _ in self.tables],
                "table_labels": [labels for _, labels, _ in self.tables],
                "table_weights": [weight for _, _, weight in self.tables],
                "metadata": dict(self.metadata),
            },
            buffer,
        )
        _write_atomically(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> CellPredictor:
        """Read a predictor written by ``save`` (``torch.load(weights_only=True)``)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no learned predictor file at {str(path)!r}")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a corrupt or foreign file: say which
            raise ValueError(f"{str(path)!r} is not a readable predictor file: {error}") from error
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not a couplednoise cell predictor file")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} has predictor format version {data.get('version')}; "
                f"this couplednoise reads version {FORMAT_VERSION}"
            )
        return cls(
            basis_matrix=data["basis"],
            shape=tuple(data["shape"]),
            directions=data["directions"],
            offsets=data["offsets"],
            tables=tuple(
                zip(data["table_names"], data["table_labels"], data["table_weights"], strict=True)
            ),
            temperature=data["temperature"],
            source=str(path),
            metadata=dict(data.get("metadata", {})),
        )

    @property
    def spec(self) -> str:
        if self.source is not None:
            return f"learned:{self.source}"
        digest = hashlib.sha256(
            self.directions.numpy().tobytes() + self.offsets.numpy().tobytes()
        ).hexdigest()[:8]
        return f"<CellPredictor {self.cells} cells x {self.directions.shape[1]} dims #{digest}>"


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` to ``path`` via a temporary sibling and a rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the mode a plain open() gives, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _learned(argument: str | None) -> CellPredictor:
    if not argument:
        raise ValueError("the learned predictor needs a file: 'learned:/path/to/predictor.pt'")
    return CellPredictor.load(argument)


def _dct(argument: str | None) -> DCTPredictor:
    if argument is None:
        return DCTPredictor()
    try:
        return DCTPredictor(int(argument))
    except ValueError as error:
        raise ValueError(
            f"dct frequencies must be an int (e.g. 'dct:4'), got {argument!r}"
        ) from error


# name -> factory(argument after ':' or None): the names a coupling spec can give a predictor.
PREDICTORS: dict[str, Callable[[str | None], Predictor]] = {"dct": _dct, "learned": _learned}


def get_predictor(spec: str | Predictor) -> Predictor:
    """A predictor from ``"dct"``, ``"dct:8"``, ``"learned:/path/file.pt"`` (or passed through)."""
    if isinstance(spec, Predictor):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"predictor must be a Predictor or a name, got {spec!r}")
    name, colon, argument = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}; valid: {', '.join(PREDICTORS)}")
    return PREDICTORS[name](argument.strip() if colon else None)
