"""Gallery methods beside the coupling: what runs between the initial noise and the images.

    method = get_gallery_method("cno:iterations=10")    # CNOSettings(iterations=10, ...)
    method.spec                                          # "cno:iterations=10,lr=0.01,..."
    method.record()                                      # JSON for a run's config.json
    method_from_record(method.record()) == method        # True

"plain" samples the pipeline as is (the coupling's noise, nothing else); "cno" optimises the
initial noise first (contrastive noise optimisation, Kim, Um & Ye, ICLR 2026); "cads" anneals noise
on the condition during sampling (condition-annealed sampling, Sadat et al., ICLR 2024). Specs use
the coupling grammar: "name" or "name:key=value,key=value".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from couplednoise import split_spec  # the coupling specs' grammar, shared


@dataclass(frozen=True)
class GalleryMethod:
    """Base of the method settings: a name, a spec string and a JSON record."""

    name: ClassVar[str] = ""
    reference: ClassVar[str] = ""

    @property
    def spec(self) -> str:
        """ "name:key=value,..." (all settings, so the spec alone rebuilds the method)."""
        items = ",".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))
        return f"{self.name}:{items}" if items else self.name

    def record(self) -> dict[str, Any]:
        """{"name", "spec", "settings", "reference"}: what a run's config.json stores."""
        return {
            "name": self.name,
            "spec": self.spec,
            "settings": dataclasses.asdict(self),
            "reference": self.reference,
        }


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class PlainSampling(GalleryMethod):
    """The pipeline as is: the coupling's initial noise, no optimisation, no condition noise."""

    name: ClassVar[str] = "plain"


@dataclass(frozen=True)
class CNOSettings(GalleryMethod):
    """Contrastive noise optimisation (defaults: the released SD scripts' values).

    iterations: Adam steps on the initial noise (3); lr: Adam's learning rate (0.01); tau: InfoNCE
    temperature of the negatives (0.1); gamma: the positive's temperature is gamma * tau (1.0);
    pool: x0 predictions are average-pooled to pool x pool locations (16);
    gradient_checkpointing: recompute the denoiser's activations in the backward pass (memory).
    """

    name: ClassVar[str] = "cno"
    reference: ClassVar[str] = (
        "Kim, Um, Ye: Diverse Text-to-Image Generation via Contrastive Noise Optimization "
        "(ICLR 2026); released code github.com/Jecstar66/CNO"
    )
    iterations: int = 3
    lr: float = 0.01
    tau: float = 0.1
    gamma: float = 1.0
    pool: int = 16
    gradient_checkpointing: bool = False

    def __post_init__(self):
        _check_int("iterations", self.iterations, 0, 10_000)
        _check_positive("lr", self.lr)
        _check_positive("tau", self.tau)
        _check_positive("gamma", self.gamma)
        _check_int("pool", self.pool, 1, 4096)
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(
                f"gradient_checkpointing must be true or false, got {self.gradient_checkpointing!r}"
            )


@dataclass(frozen=True)
class CADSSettings(GalleryMethod):
    """Condition-annealed sampling (defaults: the paper's Stable Diffusion settings).

    The condition y of step time t in [0, 1] (1 = pure noise) becomes
    sqrt(gamma(t)) y + noise_scale sqrt(1 - gamma(t)) n, with gamma(t) = 1 for t <= tau1, 0 for
    t >= tau2 and linear between, then mixed with its rescaled version (rescaled to y's mean and
    standard deviation) with weight psi.
    """

    name: ClassVar[str] = "cads"
    reference: ClassVar[str] = (
        "Sadat, Buhmann, Bradley, Hilliges, Weber: CADS: Unleashing the Diversity of Diffusion "
        "Models through Condition-Annealed Sampling (ICLR 2024)"
    )
    tau1: float = 0.6
    tau2: float = 0.9
    noise_scale: float = 0.25
    psi: float = 1.0

    def __post_init__(self):
        for key in ("tau1", "tau2", "noise_scale", "psi"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{key} must be finite, got {value}")
        if not 0 <= self.tau1 < self.tau2 <= 1:
            raise ValueError(
                f"CADS needs 0 <= tau1 < tau2 <= 1, got tau1={self.tau1}, tau2={self.tau2}"
            )
        if self.noise_scale < 0:
            raise ValueError(f"noise_scale must be >= 0, got {self.noise_scale}")
        if not 0 <= self.psi <= 1:
            raise ValueError(f"psi must be in [0, 1], got {self.psi}")


GALLERY_METHODS: dict[str, type[GalleryMethod]] = {
    cls.name: cls for cls in (PlainSampling, CNOSettings, CADSSettings)
}


def _build(name: str, params: dict[str, Any], source: str) -> GalleryMethod:
    if name not in GALLERY_METHODS:
        raise ValueError(f"unknown gallery method {name!r}; valid: {', '.join(GALLERY_METHODS)}")
    cls = GALLERY_METHODS[name]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)} for gallery method {name!r} in {source}; "
            f"valid: {', '.join(valid) if valid else 'none'}"
        )
    return cls(**params)


def get_gallery_method(spec: str | GalleryMethod) -> GalleryMethod:
    """A method from a spec ("plain", "cno", "cads:noise_scale=0.1") or passed through."""
    if isinstance(spec, GalleryMethod):
        return spec
    name, params = split_spec(spec, "gallery method")
    return _build(name, params, repr(spec))


def method_from_record(record: dict[str, Any]) -> GalleryMethod:
    """The method a ``GalleryMethod.record()`` describes (e.g. read back from config.json)."""
    if not isinstance(record, dict) or "name" not in record:
        raise ValueError(f"a gallery method record is a dict with a 'name', got {record!r}")
    return _build(record["name"], dict(record.get("settings", {})), "a record")
