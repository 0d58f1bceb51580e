"""The terrain model's prompt grammar, sigma schedule and spec options (no weights needed)."""

from __future__ import annotations

import math

import pytest

from couplednoise.pipelines.builtin import check_model_spec, model_defaults
from couplednoise.pipelines.terrain import (
    ConsistencySchedule,
    MissingPackageError,
    difficulty_input,
    parse_difficulty,
    parse_terrain_spec,
)
from couplednoise.pipelines.terrain import denoiser as denoiser_module


@pytest.mark.parametrize(
    ("prompt", "value"),
    [
        ("difficulty 50", 50.0),
        ("50", 50.0),
        ("Difficulty: 50.5", 50.5),
        ("difficulty=1", 1.0),
        ("  DIFFICULTY 100 ", 100.0),
        ("difficulty 12.25", 12.25),
    ],
)
def test_a_difficulty_prompt_names_its_number(prompt, value):
    assert parse_difficulty(prompt) == value


def test_the_network_input_maps_1_to_100_onto_0_to_1():
    assert difficulty_input(1) == 0.0
    assert difficulty_input(100) == 1.0
    assert difficulty_input(50.5) == 0.5
    assert math.isclose(difficulty_input(parse_difficulty("difficulty 12.25")), 11.25 / 99)


@pytest.mark.parametrize("prompt", ["a red car", "", "difficulty", "difficulty 50 hills", "5 0"])
def test_a_prompt_that_is_not_a_difficulty_says_the_grammar(prompt):
    with pytest.raises(ValueError, match=r"is not a difficulty: write 'difficulty 50' or '50'"):
        parse_difficulty(prompt)


@pytest.mark.parametrize("prompt", ["0", "difficulty 100.5", "-3", "difficulty 0.99"])
def test_a_difficulty_outside_1_to_100_names_the_bound(prompt):
    with pytest.raises(ValueError, match=r"is outside 1\.\.100"):
        parse_difficulty(prompt)


def test_a_non_string_prompt_is_a_type_error():
    with pytest.raises(TypeError, match="must be a string"):
        parse_difficulty(50)


def test_one_step_uses_sigma_max_and_more_steps_space_down_to_the_floor_log_evenly():
    schedule = ConsistencySchedule()
    assert schedule.sigmas(1) == [80.0]
    assert schedule.sigmas(2) == [80.0, 40.0]
    three = schedule.sigmas(3)
    assert three[0] == 80.0 and math.isclose(three[1], 40 * 2**0.5) and math.isclose(three[2], 40)
    assert schedule.renoise_scale(40.0) == math.sqrt(40.0**2 - 0.002**2)
    assert ConsistencySchedule(floor=10).sigmas(3)[1] == pytest.approx(80 * (10 / 80) ** 0.5)


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_step_counts_are_refused(steps):
    with pytest.raises(ValueError, match="num_inference_steps must be a positive int"):
        ConsistencySchedule().sigmas(steps)


def test_a_floor_outside_sigma_min_to_sigma_max_is_refused():
    with pytest.raises(ValueError, match="sigma_min < floor <= sigma_max"):
        ConsistencySchedule(floor=81)


def test_spec_options_are_parsed_and_checked():
    assert parse_terrain_spec("terrain") == {"threads": 0, "batch": 4, "floor": 40.0}
    assert parse_terrain_spec("Terrain:threads=2, floor=30") == {
        "threads": 2,
        "batch": 4,
        "floor": 30.0,
    }
    with pytest.raises(ValueError, match="key one of threads, batch, floor"):
        parse_terrain_spec("terrain:steps=4")
    with pytest.raises(ValueError, match="is not a int"):
        parse_terrain_spec("terrain:batch=many")
    with pytest.raises(ValueError, match=r"floor=0\.0 is outside \[0\.01, 80\.0\]"):
        parse_terrain_spec("terrain:floor=0")


def test_the_builtin_registry_knows_the_terrain_model():
    entry = check_model_spec("terrain:threads=1")
    assert entry.name == "terrain" and entry.requires == "terrain"
    assert model_defaults("terrain") == {"steps": 1, "guidance": 1.0}
    with pytest.raises(ValueError, match="terrain option"):
        check_model_spec("terrain:size=64")


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    real = denoiser_module.importlib.util.find_spec
    monkeypatch.setattr(
        denoiser_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "terrain_diffusion" else real(name, *a),
    )
    from couplednoise.pipelines.loading import load_pipeline

    with pytest.raises(MissingPackageError, match=r'pip install "couplednoise\[terrain\]"'):
        load_pipeline("terrain", device="cpu")
    with pytest.raises(ValueError, match="needs the adaptive-terrain-diffusion package"):
        check_model_spec("terrain")  # a user error for the CLI, raised before anything loads
