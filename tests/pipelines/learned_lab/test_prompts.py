import pytest
import torch

from couplednoise.pipelines.learned_lab.prompts import parse_prompt, prompt_codes, prompt_of
from couplednoise.pipelines.learned_lab.world import ATTRIBUTES, NUM_VALUES


def test_words_name_attributes():
    assert parse_prompt("a red sneaker on brick, on the left") == {
        "colour": "red",
        "object": "sneaker",
        "background": "brick",
        "position": "left",
    }
    assert parse_prompt("A T-shirt on grey, at the top") == {
        "object": "t-shirt",
        "background": "gray",
        "position": "top",
    }
    assert parse_prompt("purple pants") == {"colour": "purple", "object": "trouser"}
    assert parse_prompt("") == {}


def test_codes_put_null_on_open_attributes():
    codes = prompt_codes(["a blue bag", ""])
    assert codes.tolist() == [
        [ATTRIBUTES["object"].index("bag"), ATTRIBUTES["colour"].index("blue"), *NUM_VALUES[2:]],
        list(NUM_VALUES),
    ]
    assert codes.dtype == torch.int64


def test_prompt_of_round_trips_every_combination_of_named_attributes():
    values = {name: vals[-1] for name, vals in ATTRIBUTES.items()}
    for mask in range(16):
        named = {n: v for i, (n, v) in enumerate(values.items()) if mask >> i & 1}
        assert parse_prompt(prompt_of(named)) == named


def test_bad_prompts_are_clear_errors():
    with pytest.raises(ValueError, match=r"(?s)unknown word\(s\) 'hat'.*object: t-shirt"):
        parse_prompt("a red hat")
    with pytest.raises(ValueError, match="two values for colour: 'red' and 'blue'"):
        parse_prompt("a red blue bag")
    with pytest.raises(TypeError, match="must be a str"):
        parse_prompt(3)
