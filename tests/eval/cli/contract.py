"""The CLI's error contract, checked the same way by every subcommand's tests."""

from __future__ import annotations

import re

from couplednoise.eval.cli import main


def fails_cleanly(capsys, argv: list[str], match: str) -> str:
    """Run ``couplednoise ARGV``: exit code 2 and exactly one stderr line matching ``match``
    (a regex), no traceback. Returns that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(match, lines[0]), lines[0]
    return lines[0]
