"""The CLI's error contract, checked the same way by every subcommand's tests."""

from __future__ import annotations

import re

from couplednoise.eval.cli import main


def fails_cleanly(capsys, argv: list[str], match: str, *, before_work: bool = True) -> str:
    """Run ``couplednoise ARGV``: exit code 2, one error line ``couplednoise ...: error: ...``
    matching ``match`` (a regex), no traceback. ``before_work``: stderr holds nothing else (no
    progress bar ran). Returns the error line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if re.match(r"couplednoise[\w -]*: error: ", line)]
    assert len(errors) == 1, err
    if before_work:
        assert err.strip() == errors[0], err
    assert re.search(match, errors[0]), errors[0]
    return errors[0]
