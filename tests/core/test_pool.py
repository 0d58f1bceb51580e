"""Pool-partition couplings: exact marginals whatever the rule, slot uniformity, determinism,
memory, specs, files, extension."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from scipy import stats

import couplednoise as cn
import couplednoise.pool as pool_module
from couplednoise.deterministic import stable_matmul
from couplednoise.partition import partition
from couplednoise.predictions import Categories, Features
from tests.coupling_stats import assert_standard_normal, draws

SHAPE = (2, 4, 4)  # d = 32


def random_cells(shape=SHAPE, rank=6, cells=8, seed=0) -> cn.CellPredictor:
    """A cell predictor with a random orthonormal basis and random directions."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))[0].T
    return cn.CellPredictor(
        basis_matrix=basis.float(),
        shape=shape,
        directions=torch.randn(cells, rank, generator=g, dtype=torch.float64) * 2,
        offsets=torch.zeros(cells, dtype=torch.float64),
        tables=(("half", torch.arange(cells) % 2, 1.0), ("outcome", torch.arange(cells), 0.5)),
    )


def rms(z: torch.Tensor) -> torch.Tensor:
    """A nonlinear predictor: per-channel root mean square of z [n, C, H, W] -> [n, C]."""
    return z.pow(2).mean((2, 3)).sqrt()


POOLS = [
    ("dct-independent", cn.Pool(pool_size=32, predictor=cn.DCTPredictor(2))),
    ("cells-independent", cn.Pool(pool_size=32, predictor=random_cells())),
    ("dct-zero-sum-pool", cn.Pool(pool_size=32, predictor="dct:2", coupling=cn.Repulsive())),
    (
        "cells-antithetic-pairs-kept",
        cn.Pool(
            pool_size=32,
            predictor=random_cells(),
            coupling=cn.Antithetic(),
            block_size=2,
            keep_blocks=True,
        ),
    ),
    ("function-generic-path", cn.Pool(pool_size=32, predictor=cn.FunctionPredictor(rms))),
    (
        "cells-orthogonal-pool-generic-path",
        cn.Pool(pool_size=32, predictor=random_cells(), coupling=cn.Orthogonal()),
    ),
]


@pytest.mark.parametrize(("label", "coupling"), POOLS, ids=[a for a, _ in POOLS])
def test_every_slot_is_exactly_standard_normal(label, coupling):
    z = draws(coupling, 4, SHAPE, repeats=300, seed=1)  # 300 * 32 = 9,600 values per slot
    for i in range(4):
        assert_standard_normal(z[:, i], f"{label} slot {i}")
    predictor = coupling.predictor
    if isinstance(predictor, cn.predictors.LinearPredictor):
        # the coordinates the rule reads are where a biased rule would show: exactly N(0, I)
        phi = predictor.project(z.reshape(-1, *SHAPE).float())
        assert_standard_normal(phi.reshape(300, 4, -1)[:, 0], f"{label} slot 0 coordinates")


def test_a_rule_that_picks_the_best_group_is_biased_and_the_check_sees_it():
    """Negative control: outputting the most spread-out group (not a uniform one) inflates the
    variance of the coordinates the rule reads, and the marginal check fails."""
    coupling = cn.Pool(pool_size=64, predictor=cn.DCTPredictor(2))
    rank = coupling.predictor.rank(SHAPE)
    g = torch.Generator().manual_seed(0)
    picked = []
    for _ in range(150):
        phi = torch.randn(64, rank, generator=g)
        groups = partition(Features(phi), 16, generator=g)
        spread = torch.stack([torch.pdist(phi[group].double()).sum() for group in groups])
        picked.append(phi[groups[int(spread.argmax())]])
    values = torch.stack(picked)[:, 0]
    with pytest.raises(AssertionError, match="variance"):
        assert_standard_normal(values, "best group")


@pytest.mark.parametrize("keep_blocks", [False, True])
def test_each_pool_item_fills_each_slot_with_probability_one_over_n(keep_blocks):
    """Given the pool (one fixed prediction), slot i holds item j with probability 1/N: a
    chi-square test of the counts over repeated group choices and shuffles."""
    coupling = cn.Pool(
        pool_size=16, predictor=random_cells(), block_size=2, keep_blocks=keep_blocks
    )
    phi = torch.randn(16, 6, generator=torch.Generator().manual_seed(3))
    prediction = coupling.predictor.predict_coordinates(phi)
    counts = torch.zeros(4, 16)
    generator = torch.Generator().manual_seed(4)
    for _ in range(640):  # 40 expected per cell
        chosen = coupling.select(prediction, 4, generator)
        counts[torch.arange(4), chosen] += 1
    for slot in range(4):
        assert stats.chisquare(counts[slot].numpy()).pvalue > 1e-4, counts[slot]


@pytest.mark.parametrize("unit_size", [1, 2])
def test_partition_uses_every_item_once_and_keeps_units_whole(unit_size):
    prediction = random_cells().predict_coordinates(torch.randn(24, 6))
    groups = partition(prediction, 3, unit_size=unit_size, generator=torch.Generator())
    assert groups.shape == (3, 8)
    assert torch.equal(groups.flatten().sort().values, torch.arange(24))
    if unit_size == 2:
        pairs = groups.reshape(3, 4, 2)
        assert torch.equal(pairs[..., 1], pairs[..., 0] + 1) and (pairs[..., 0] % 2 == 0).all()


def test_the_rule_groups_items_predicted_to_differ():
    """With sharp cells, groups of 4 cover far more distinct cells than random groups of 4."""
    cells = random_cells(cells=8)
    cells = dataclasses.replace(cells, temperature=0.05)
    g = torch.Generator().manual_seed(5)
    planned, random = [], []
    for _ in range(40):
        phi = torch.randn(64, 6, generator=g)
        outcome = cells.cell_probabilities(phi).argmax(1)
        groups = partition(cells.predict_coordinates(phi), 16, generator=g)
        planned += [outcome[group].unique().numel() for group in groups]
        random += [outcome[group].unique().numel() for group in torch.randperm(64).reshape(16, 4)]
    assert sum(planned) / len(planned) > sum(random) / len(random) + 0.5


def test_zero_sum_blocks_kept_together_give_zero_sum_galleries():
    coupling = cn.get_coupling(
        "pool:pool_size=32,predictor=dct:2,block_size=2,keep_blocks=true,coupling=repulsive"
    )
    for seed in range(3):
        z = coupling.sample(4, SHAPE, generator=torch.Generator().manual_seed(seed))
        assert z.sum(0).abs().max() < 1e-5


def test_same_seed_same_noise_on_any_thread_count_for_sd_sized_latents():
    """The fast and the generic path, SD1.5-sized latents [4, 64, 64], at 1 and 3 threads."""
    couplings = (cn.Pool(pool_size=32), cn.Pool(pool_size=32, predictor=cn.FunctionPredictor(rms)))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            results.append(
                [
                    c.sample(4, (4, 64, 64), generator=torch.Generator().manual_seed(7))
                    for c in couplings
                ]
            )
            assert torch.get_num_threads() == threads  # the rule's one-thread block restores it
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)
    other = couplings[0].sample(4, (4, 64, 64), generator=torch.Generator().manual_seed(8))
    assert not torch.equal(results[0][0], other)


def test_stable_matmul_is_a_matmul():
    a, b = torch.randn(5, 300, dtype=torch.float64), torch.randn(300, 7, dtype=torch.float64)
    assert torch.allclose(stable_matmul(a, b), a @ b, atol=1e-10)


def test_the_pool_never_holds_all_items_at_full_size(monkeypatch):
    """Fast path: full-size draws only for the K outputs. Generic path: the predictor sees
    chunks of at most CHUNK_BYTES of noise, and only chosen blocks are drawn again."""
    shape, d = (4, 32, 32), 4 * 32 * 32
    sizes = []
    original = pool_module.standard_normal

    def recording(shape_, generator):
        sizes.append(math.prod(shape_))
        return original(shape_, generator)

    monkeypatch.setattr(pool_module, "standard_normal", recording)
    cn.Pool(pool_size=256).sample(4, shape)
    assert max(sizes) == 4 * d  # the coordinates of 256 items are 256 x 64 numbers
    seen = []
    monkeypatch.setattr(pool_module, "CHUNK_BYTES", 16 * 4 * d)  # 16 items at a time
    coupling = cn.Pool(
        pool_size=64, predictor=cn.FunctionPredictor(lambda z: seen.append(len(z)) or rms(z))
    )
    coupling.sample(4, shape)
    assert seen == [16, 16, 16, 16]


def test_specs_build_pools_and_round_trip(tmp_path):
    coupling = cn.get_coupling("pool:pool_size=64,predictor=dct:8,coupling=repulsive")
    assert isinstance(coupling, cn.Pool) and coupling.pool_size == 64
    assert coupling.predictor == cn.DCTPredictor(8) and coupling.coupling == cn.Repulsive()
    assert coupling.spec == "pool:pool_size=64,predictor=dct:8,coupling=repulsive"
    assert cn.get_coupling("pool").spec == "pool"
    path = tmp_path / "cells.pt"
    random_cells().save(path)
    learned = cn.get_coupling(f"pool:pool_size=32,predictor=learned:{path}")
    assert learned.spec == f"pool:pool_size=32,predictor=learned:{path}"
    fresh = cn.Pool(pool_size=32, predictor=random_cells())
    gen = torch.Generator().manual_seed(2)
    assert torch.equal(
        cn.get_coupling(learned.spec).sample(4, SHAPE, generator=gen),
        fresh.sample(4, SHAPE, generator=torch.Generator().manual_seed(2)),
    )
    loaded = cn.CellPredictor.load(path)
    for (n1, l1, w1), (n2, l2, w2) in zip(loaded.tables, random_cells().tables):
        assert n1 == n2 and torch.equal(l1, l2) and w1 == w2


def test_a_predictor_file_holds_no_pickled_objects(tmp_path):
    path = tmp_path / "cells.pt"
    random_cells().save(path)
    torch.load(path, weights_only=True)  # would raise on any pickled object
    evil = tmp_path / "evil.pt"
    torch.save({"format": "couplednoise.cell_predictor", "object": object()}, evil)
    with pytest.raises(ValueError, match="not a readable predictor file"):
        cn.CellPredictor.load(evil)


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("pool:pool_size=0", ValueError, "pool_size must be >= 1, got 0"),
        ("pool:pool_size=100000", ValueError, "pool_size must be <= 65536, got 100000"),
        ("pool:predictor=magic", ValueError, "unknown predictor 'magic'; valid: dct, learned"),
        ("pool:predictor=dct:x", ValueError, r"dct frequencies must be an int"),
        ("pool:predictor=learned", ValueError, r"needs a file"),
        ("pool:predictor=learned:/nope.pt", ValueError, "no learned predictor file at '/nope.pt'"),
        ("pool:block_size=-1", ValueError, r"block_size must be >= 0"),
        ("pool:keep_blocks=3", ValueError, "keep_blocks must be true or false"),
    ],
)
def test_bad_pool_specs_name_the_bound(spec, error, message):
    with pytest.raises(error, match=message):
        cn.get_coupling(spec)


@pytest.mark.parametrize(
    ("coupling", "n", "shape", "message"),
    [
        (
            cn.Pool(pool_size=30),
            4,
            SHAPE,
            r"pool_size=30 must be a multiple of the gallery size n=4",
        ),
        (cn.Pool(pool_size=32, block_size=3), 4, SHAPE, "block_size=3 must divide pool_size=32"),
        (
            cn.Pool(pool_size=48, block_size=3, keep_blocks=True),
            4,
            SHAPE,
            r"keep_blocks needs block_size dividing the gallery size n=4, got 3",
        ),
        (cn.Pool(predictor="dct:8"), 4, SHAPE, r"dct frequencies must be <= min\(H, W\) = 4"),
        (cn.Pool(), 4, (16,), r"needs spatial samples"),
        (cn.Pool(pool_size=32, predictor=random_cells()), 4, (2, 8, 8), "fitted for samples of"),
        (cn.Pool(pool_size=512, block_size=64, coupling=cn.Orthogonal()), 4, SHAPE, "n <= dim"),
    ],
)
def test_bad_requests_fail_before_drawing(coupling, n, shape, message):
    with pytest.raises(ValueError, match=message):
        coupling.sample(n, shape)


def test_predictions_are_checked():
    with pytest.raises(ValueError, match="one weight per table"):
        Categories((torch.ones(3, 2) / 2,), (1.0, 2.0))
    with pytest.raises(ValueError, match="features must be"):
        Features(torch.ones(3))
    with pytest.raises(ValueError, match="orthonormal"):
        cn.CellPredictor(
            basis_matrix=torch.ones(2, 32),
            shape=SHAPE,
            directions=torch.ones(3, 2),
            offsets=torch.zeros(3),
            tables=(("outcome", torch.arange(3), 1.0),),
        )
    with pytest.raises(TypeError, match="no single cross-sample correlation"):
        cn.Pool().correlation(4)


def test_extension_is_exactly_standard_normal_and_spreads_the_union():
    """k more samples: each exactly N(0, I) given the earlier ones, so they land in the earlier
    samples' cells exactly as often as independent noise does (no exact coupling can avoid
    them on average); what the rule controls is the rest: the union covers more cells."""
    cells = dataclasses.replace(random_cells(cells=6), temperature=0.05)
    coupling = cn.Pool(pool_size=48, predictor=cells)

    def outcome(z):
        return cells.cell_probabilities(cells.project(z)).argmax(1).tolist()

    g = torch.Generator().manual_seed(9)
    new, repeats, union = [], {"pool": 0, "independent": 0}, {"pool": 0, "independent": 0}
    for _ in range(300):
        old = cn.Independent().sample(1, SHAPE, generator=g)
        taken = set(outcome(old))
        more = coupling.extend(old, 3, generator=g)
        new.append(more)
        fresh = cn.Independent().sample(3, SHAPE, generator=g)
        for arm, z in (("pool", more), ("independent", fresh)):
            landed = outcome(z)
            repeats[arm] += sum(c in taken for c in landed)
            union[arm] += len(taken | set(landed))
    z = torch.stack(new).reshape(300, 3, -1).double()
    for i in range(3):
        assert_standard_normal(z[:, i], f"extension slot {i}")
    # 900 Bernoulli(p) repeats per arm (p about 1/6): difference within 5 standard errors
    assert abs(repeats["pool"] - repeats["independent"]) < 5 * math.sqrt(2 * 900 * 0.25)
    # distinct cells of old + new over 300 galleries: independent new ones collide (about 0.4
    # lost per gallery), the pool's rarely (sd of the difference about 15)
    assert union["pool"] > union["independent"] + 75, union
    with pytest.raises(ValueError, match="pool_size=48 must be a multiple of the gallery size n=5"):
        coupling.extend(old, 5)
