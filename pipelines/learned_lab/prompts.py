"""Learned-lab prompts: words naming attributes -> attribute codes (null for the open ones).

    parse_prompt("a red sneaker on brick, on the left")
    -> {"colour": "red", "object": "sneaker", "background": "brick", "position": "left"}
    prompt_codes("a red sneaker")  -> tensor([[4, 0, 4, 6]])   # position, background open

Every value's word (and a few synonyms: "pants", "shoe", "grey", ...) names its attribute; the
words in ``FILLER`` are ignored; any other word is an error listing the vocabulary. The empty
prompt leaves every attribute open (the unconditional model).
"""

from __future__ import annotations

import re

import torch

from couplednoise.pipelines.learned_lab.world import ATTRIBUTES, NUM_VALUES

FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "on",
        "in",
        "at",
        "of",
        "with",
        "and",
        "to",
        "is",
        "some",
        "image",
        "picture",
        "photo",
        "scene",
        "background",
        "side",
        "wall",
        "floor",
        "texture",
        "thing",
        "object",
    ]
)
SYNONYMS = {
    "tshirt": "t-shirt",
    "t-shirts": "t-shirt",
    "tee": "t-shirt",
    "trousers": "trouser",
    "pants": "trouser",
    "dresses": "dress",
    "sandals": "sandal",
    "sneakers": "sneaker",
    "shoe": "sneaker",
    "trainer": "sneaker",
    "bags": "bag",
    "handbag": "bag",
    "boots": "boot",
    "ankle-boot": "boot",
    "grey": "gray",
    "bricks": "brick",
    "stones": "gravel",
    "pebbles": "gravel",
    "violet": "purple",
    "lawn": "grass",
    "upper": "top",
    "lower": "bottom",
}
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_VALUE_OF = {value: name for name, values in ATTRIBUTES.items() for value in values}


def describe_vocabulary() -> str:
    """The vocabulary, one attribute a line (for error messages and --help)."""
    return "\n".join(f"  {name}: {', '.join(values)}" for name, values in ATTRIBUTES.items())


def parse_prompt(prompt: str) -> dict[str, str]:
    """The attribute values ``prompt`` names; ValueError on unknown words or two values of one
    attribute, TypeError if it is not a string."""
    if not isinstance(prompt, str):
        raise TypeError(f"a learned-lab prompt must be a str, got {type(prompt).__name__}")
    constraints: dict[str, str] = {}
    unknown = []
    for word in _WORD.findall(prompt.lower()):
        if word in FILLER:
            continue
        word = SYNONYMS.get(word, word)
        name = _VALUE_OF.get(word)
        if name is None:
            unknown.append(word)
            continue
        if constraints.get(name, word) != word:
            raise ValueError(
                f"prompt {prompt!r} names two values for {name}: {constraints[name]!r} and {word!r}"
            )
        constraints[name] = word
    if unknown:
        raise ValueError(
            f"unknown word(s) {', '.join(map(repr, unknown))} in learned-lab prompt {prompt!r}. "
            f"The learned lab knows:\n{describe_vocabulary()}"
        )
    return constraints


def codes_of(constraints: dict[str, str]) -> torch.Tensor:
    """Attribute codes int64 [4]: each named value's index, ``len(values)`` (null) if open."""
    return torch.tensor(
        [
            values.index(constraints[name]) if name in constraints else NUM_VALUES[j]
            for j, (name, values) in enumerate(ATTRIBUTES.items())
        ],
        dtype=torch.int64,
    )


def prompt_codes(prompts: str | list[str]) -> torch.Tensor:
    """Codes int64 [P, 4] of one prompt or a list of them."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    return torch.stack([codes_of(parse_prompt(p)) for p in prompts])


def prompt_of(constraints: dict[str, str]) -> str:
    """Words for ``constraints``: {"colour": "red", "object": "bag"} -> "a red bag"."""
    words = ["a", constraints.get("colour", ""), constraints.get("object", "thing")]
    if "background" in constraints:
        words += ["on", constraints["background"]]
    if "position" in constraints:
        words += ["at the", constraints["position"]]
    return " ".join(w for w in words if w)
