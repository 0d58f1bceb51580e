"""Property-based tests of the public core API: any input either works exactly or is a clear
ValueError / TypeError (never another exception, never NaN noise, never a wrong shape)."""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import couplednoise as cn

CLEAR = (ValueError, TypeError)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.sampled_from([*cn.COUPLINGS, "iid", "centered", "bogus", ""])
values = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "none", "abc", "lowpass", "highpass", "0.5e", "1/2", "🎲"]),
)
keys = st.sampled_from(
    ["strength", "rho", "share", "band", "cutoff", "group_size", "coupling", "mask", "x", ""]
)
params = st.lists(st.tuples(keys, values), max_size=4).map(
    lambda items: ",".join(f"{k}={v}" for k, v in items)
)
specs = st.one_of(
    st.builds(lambda n, p: f"{n}:{p}" if p else n, names, params),
    st.text(max_size=40),
)


@SETTINGS
@given(spec=specs)
def test_any_spec_builds_a_coupling_or_names_the_problem(spec):
    try:
        coupling = cn.get_coupling(spec)
    except CLEAR as error:
        assert str(error)
        return
    assert isinstance(coupling, cn.Coupling)
    assert cn.get_coupling(coupling.spec).spec == coupling.spec  # scalar specs round-trip


@SETTINGS
@given(
    spec=st.sampled_from(
        [
            "independent",
            "repulsive",
            "repulsive:strength=0.3",
            "equicorrelated:rho=-0.2",
            "equicorrelated:rho=0.9",
            "antithetic",
            "orthogonal",
            "subspace:band=lowpass,cutoff=0.2,share=0.7",
            "grouped:group_size=2,coupling=repulsive",
        ]
    ),
    n=st.integers(-1, 9),
    shape=st.lists(st.integers(-1, 9), min_size=0, max_size=4),
    seed=st.integers(0, 2**63 - 1),
)
def test_any_request_gives_exact_shape_and_finite_noise_or_a_clear_error(spec, n, shape, seed):
    coupling = cn.get_coupling(spec)
    try:
        z = coupling.sample(n, shape, generator=torch.Generator().manual_seed(seed))
    except CLEAR as error:
        assert str(error)
        return
    assert z.shape == (n, *shape) and z.dtype == torch.float32
    assert torch.isfinite(z).all()


@SETTINGS
@given(
    previous=st.lists(
        st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=2, max_size=32
    ),
    k=st.integers(-1, 3),
)
def test_extend_given_arbitrary_previous_samples_is_exact_or_refuses(previous, k):
    half = len(previous) // 2
    tensor = torch.tensor(previous[: 2 * half], dtype=torch.float32).reshape(2, half)
    for coupling in (cn.Independent(), cn.Repulsive(), cn.Orthogonal(), cn.Antithetic()):
        try:
            more = coupling.extend(tensor, k)
        except CLEAR as error:
            assert str(error)
            continue
        assert more.shape == (k, half) and torch.isfinite(more).all()


@SETTINGS
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text()))
def test_scalar_parameters_are_checked(value):
    for build in (
        lambda v: cn.Repulsive(strength=v),
        lambda v: cn.Equicorrelated(rho=v),
        lambda v: cn.Subspace(band="lowpass", cutoff=v),
    ):
        try:
            coupling = build(value)
        except CLEAR:
            continue
        assert isinstance(value, float) and math.isfinite(value)
        assert coupling is not None
