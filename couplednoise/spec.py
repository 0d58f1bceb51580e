"""String specs for couplings: "repulsive", "repulsive:strength=0.5", "equicorrelated:rho=0.2".

Used by the CLI, configs and the web demo. Tensor-valued parameters (a subspace ``mask`` or
``shared`` noise, a Gaussian correlation matrix) are passed as keyword overrides. A coupling that
wraps another takes it as a last ``coupling=`` parameter whose value is the rest of the spec:
"grouped:group_size=4,coupling=repulsive:strength=0.5".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from couplednoise.base import Coupling
from couplednoise.gaussian import Antithetic, Equicorrelated, Gaussian, Independent, Repulsive
from couplednoise.grouped import Grouped
from couplednoise.orthogonal import Orthogonal
from couplednoise.pool import Pool
from couplednoise.subspace import Subspace

COUPLINGS: dict[str, type[Coupling]] = {
    cls.name: cls
    for cls in (
        Independent,
        Repulsive,
        Equicorrelated,
        Antithetic,
        Orthogonal,
        Gaussian,
        Subspace,
        Grouped,
        Pool,
    )
}
NESTED = "coupling"  # the parameter that holds a wrapped coupling's spec (the rest of the string)
ALIASES = {"iid": "independent", "centered": "repulsive", "orthogonal-frame": "orthogonal"}


def parameters(cls: type[Coupling]) -> list[str]:
    """The constructor parameters of a coupling class."""
    return [f.name for f in dataclasses.fields(cls)]


def _parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return float(text) if any(c in lowered for c in ".e") or lowered == "inf" else int(text)
    except ValueError:
        return text.strip()


def split_spec(spec: str, what: str = "coupling") -> tuple[str, dict[str, Any]]:
    """ "name:key=value,key=value" -> (lower-case name, params), the grammar of every spec string
    (couplings, gallery methods); ValueError for a malformed or repeated parameter. A last
    ``coupling=`` parameter takes the rest of the string (a wrapped coupling's own spec)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{what} spec must be a non-empty string, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    params: dict[str, Any] = {}
    while rest.strip():
        item, _, rest = rest.partition(",")
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            if not item.strip():
                continue
            raise ValueError(f"{what} parameter {item.strip()!r} in {spec!r} is not key=value")
        if key in params:
            raise ValueError(f"{what} parameter {key!r} is given twice in {spec!r}")
        if key == NESTED:  # the wrapped coupling's own spec: everything after "coupling="
            params[key] = ",".join(filter(None, (value, rest))).strip()
            break
        params[key] = _parse_value(value)
    return name.strip().lower(), params


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """ "name:key=value,key=value" -> (canonical name, params). Unknown name: ValueError."""
    name, params = split_spec(spec)
    name = ALIASES.get(name, name)
    if name not in COUPLINGS:
        raise ValueError(f"unknown coupling {name!r}; valid: {', '.join(COUPLINGS)}")
    return name, params


def get_coupling(spec: str | Coupling, **overrides: Any) -> Coupling:
    """Build a coupling from a spec string (or pass a Coupling through).

    >>> get_coupling("repulsive:strength=0.5")
    Repulsive(strength=0.5)
    >>> get_coupling("subspace:share=0.9", mask=mask)  # tensors as keyword overrides
    """
    if isinstance(spec, Coupling):
        if overrides:
            return dataclasses.replace(spec, **overrides)
        return spec
    name, params = parse_spec(spec)
    params.update(overrides)
    if isinstance(params.get(NESTED), str):
        params[NESTED] = get_coupling(params[NESTED])
    cls = COUPLINGS[name]
    valid = parameters(cls)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {name!r}; "
            f"valid: {', '.join(valid) if valid else 'none'}"
        )
    try:
        return cls(**params)
    except TypeError as error:
        raise ValueError(f"cannot build {name!r} from {params}: {error}") from error


def describe_couplings() -> str:
    """One line per coupling: its spec name and parameters (for --help texts)."""
    return "\n".join(
        f"  {name}" + (f": {', '.join(parameters(cls))}" if parameters(cls) else "")
        for name, cls in COUPLINGS.items()
    )
