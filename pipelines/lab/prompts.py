"""Lab prompts: a few words naming scene attributes -> the constraints that define its scenes.

    parse_prompt("a small red circle on a blue background")
    -> {"size": "small", "colour": "red", "shape": "circle", "background": "blue"}

A colour word followed by "background" names the background; otherwise a colour names the
object. Words that only exist as backgrounds ("white", "striped", ...) name the background
anywhere. The empty prompt names nothing: its scenes are the whole world. Any other word is an
error that lists the vocabulary.
"""

from __future__ import annotations

import re

from couplednoise.pipelines.lab.world import ATTRIBUTES

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
        "image",
        "picture",
        "photo",
        "scene",
        "object",
        "shape",
        "thing",
        "is",
        "side",
    ]
)
SYNONYMS = {
    "grey": "gray",
    "centre": "center",
    "middle": "center",
    "big": "large",
    "little": "small",
    "rhombus": "diamond",
    "stripes": "striped",
    "stripy": "striped",
    "checkerboard": "checkered",
    "checked": "checkered",
    "circles": "circle",
    "squares": "square",
    "triangles": "triangle",
    "diamonds": "diamond",
}
BACKGROUND_WORD = "background"


def describe_vocabulary() -> str:
    """The vocabulary as text, one attribute a line (for error messages and --help)."""
    lines = [f"  {name}: {', '.join(values)}" for name, values in ATTRIBUTES.items()]
    lines.append("  (colour + 'background' names the background, e.g. 'on a blue background')")
    return "\n".join(lines)


def parse_prompt(prompt: str) -> dict[str, str]:
    """The attribute constraints a prompt names; ValueError on unknown or conflicting words."""
    if not isinstance(prompt, str):
        raise TypeError(f"a lab prompt must be a str, got {type(prompt).__name__}")
    words = [SYNONYMS.get(w, w) for w in re.findall(r"[a-z]+", prompt.lower())]
    words = [w for w in words if w not in FILLER]
    constraints: dict[str, str] = {}
    unknown: list[str] = []
    for i, word in enumerate(words):
        if word == BACKGROUND_WORD:
            continue
        before_background = i + 1 < len(words) and words[i + 1] == BACKGROUND_WORD
        name = _attribute_of(word, before_background)
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
            f"unknown word(s) {', '.join(map(repr, unknown))} in lab prompt {prompt!r}. "
            f"The lab world knows:\n{describe_vocabulary()}"
        )
    return constraints


def _attribute_of(word: str, before_background: bool) -> str | None:
    if before_background and word in ATTRIBUTES["background"]:
        return "background"
    for name, values in ATTRIBUTES.items():
        if name != "background" and word in values:
            return name
    return "background" if word in ATTRIBUTES["background"] else None
