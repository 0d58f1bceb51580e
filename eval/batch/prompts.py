"""Prompt sources for batch runs: shipped sets, text files, COCO captions, PartiPrompts-style tables.

    load_prompts("builtin")                       # eval/data/prompts.txt, 48 diverse prompts
    load_prompts("builtin:lab")                   # prompts the closed-form lab model understands
    load_prompts("my_prompts.txt")                # one prompt per line ("#" starts a comment)
    load_prompts("captions_val2014.json")         # COCO captions layout ("annotations"[*]["caption"])
    load_prompts("PartiPrompts.tsv", column="Prompt")   # TSV / CSV with a header row
    sample_prompts(prompts, n=200, seed=0)        # [(index in source, prompt), ...]

Nothing is downloaded: a path that does not exist is a ValueError naming it.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
BUILTIN = {"builtin": DATA_DIR / "prompts.txt", "builtin:lab": DATA_DIR / "lab_prompts.txt"}
FORMATS = ("auto", "text", "coco", "csv", "tsv")
PROMPT_COLUMNS = ("prompt", "prompts", "caption", "text")  # auto-detected, case-insensitive


def resolve_source(source: str, *, base: Path | None = None) -> Path:
    """The file behind ``source``: a builtin name or a path (relative to ``base`` if given)."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"prompt source must be a non-empty string, got {source!r}")
    if source in BUILTIN:
        return BUILTIN[source]
    if source.startswith("builtin"):
        raise ValueError(f"unknown builtin prompt set {source!r}; valid: {', '.join(BUILTIN)}")
    path = Path(source).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise ValueError(
            f"prompt file not found: {path}. Nothing is downloaded: give a local text file, a COCO "
            f"captions JSON (captions_val2014.json), a TSV/CSV with a prompt column, or one of "
            f"{', '.join(BUILTIN)}"
        )
    return path


def detect_format(path: Path) -> str:
    """text / coco / csv / tsv from the file suffix (.txt, .json, .csv, .tsv)."""
    suffix = path.suffix.lower()
    formats = {".txt": "text", ".json": "coco", ".csv": "csv", ".tsv": "tsv"}
    if suffix not in formats:
        raise ValueError(
            f"cannot tell the format of {path.name} from its suffix; set format to one of "
            f"{', '.join(FORMATS[1:])}"
        )
    return formats[suffix]


def _read_text(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _read_coco(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        annotations = data["annotations"]
        return [str(a["caption"]).strip() for a in annotations]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not a COCO captions file (expected {{'annotations': [{{'caption': ...}}]}}"
            f" as in captions_val2014.json): {error!r}"
        ) from error


def _read_table(path: Path, delimiter: str, column: str | None) -> list[str]:
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        header = reader.fieldnames or []
        if column is None:
            lowered = {name.strip().lower(): name for name in header}
            column = next((lowered[c] for c in PROMPT_COLUMNS if c in lowered), None)
            if column is None:
                raise ValueError(
                    f"{path.name} has no prompt column ({', '.join(PROMPT_COLUMNS)}); its columns "
                    f"are {header}: set prompts.column"
                )
        elif column not in header:
            raise ValueError(f"column {column!r} is not in {path.name}; its columns are {header}")
        return [(row[column] or "").strip() for row in reader]


def load_prompts(
    source: str, *, format: str = "auto", column: str | None = None, base: Path | None = None
) -> list[str]:
    """All prompts of ``source`` in file order: empty entries dropped, exact duplicates kept once."""
    if format not in FORMATS:
        raise ValueError(f"prompt format must be one of {', '.join(FORMATS)}, got {format!r}")
    path = resolve_source(source, base=base)
    kind = detect_format(path) if format == "auto" else format
    if kind == "text":
        prompts = _read_text(path)
    elif kind == "coco":
        prompts = _read_coco(path)
    else:
        prompts = _read_table(path, "\t" if kind == "tsv" else ",", column)
    unique = list(dict.fromkeys(p for p in prompts if p))
    if not unique:
        raise ValueError(f"{path} holds no prompts")
    return unique


def sample_prompts(prompts: list[str], n: int | None, seed: int) -> list[tuple[int, str]]:
    """``n`` prompts drawn without replacement with ``seed`` (all if n is None), in source order.

    Returns (index in ``prompts``, prompt) pairs: the index names a prompt for seeds and rows,
    so the same prompt keeps its index (and its seeds) whatever ``n`` is.
    """
    if n is None:
        return list(enumerate(prompts))
    if n < 1 or n > len(prompts):
        raise ValueError(f"prompts.n must be in 1..{len(prompts)} (the source's size), got {n}")
    chosen = sorted(random.Random(seed).sample(range(len(prompts)), n))
    return [(i, prompts[i]) for i in chosen]
