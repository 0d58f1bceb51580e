"""Small pieces every study shares."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def study_args(args: argparse.Namespace) -> dict[str, Any]:
    """A study's arguments as JSON-able data (paths as strings), for its .json output."""
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key not in ("command", "study")
    }
