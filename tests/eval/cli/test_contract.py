"""The one error contract, for every subcommand and every study: a bad argument is one line on
stderr and exit 2 (no usage block, no traceback); Ctrl-C is 130; --help is 0."""

from __future__ import annotations

import pytest

from couplednoise.eval.cli import SUBCOMMANDS, main
from couplednoise.eval.cli.errors import EXIT_INTERRUPTED, run_guarded
from couplednoise.eval.studies import STUDIES
from tests.eval.cli.contract import fails_cleanly

# A subcommand's required arguments, so that only the bad one is wrong.
REQUIRED = {
    "generate": ["--model", "lab", "--prompt", "a circle", "--out", "OUT"],
    "score": ["RUN"],
    "eval": ["CONFIG"],
    "report": ["RUN"],
    "background": ["--model", "lab", "--lab-scene", "1", "--out", "OUT"],
    "learned-lab": ["check"],
}
# One typed bad value per subcommand: the check that names it.
BAD_VALUES = {
    "demo": (["--num-images", "1"], r"--num-images: 1 is not a whole number in \[2,"),
    "generate": (["--steps", "zero"], r"--steps: 'zero' is not a whole number"),
    "score": (["--vendi-q", "-1"], r"--vendi-q"),
    "eval": (["--num-images", "1"], r"--num-images: 1 is not a whole number in"),
    "report": (["--max-grids", "-1"], r"--max-grids: -1 is not a whole number in"),
    "background": (["--share", "2"], r"--share: 2 is not a number in \[0.0, 1.0\]"),
    "learned-lab": (["--guidance", "-1"], r"--guidance: -1 is not a number in"),
}


def argv_for(command: str, tmp_path) -> list[str]:
    values = {
        "OUT": str(tmp_path / "out"),
        "RUN": str(tmp_path),
        "CONFIG": str(tmp_path / "c.toml"),
    }
    return [command, *(values.get(a, a) for a in REQUIRED.get(command, []))]


@pytest.mark.parametrize("command", [c for c in SUBCOMMANDS if c != "study"])
def test_an_unknown_option_is_one_line_and_exit_2(command, tmp_path, capsys):
    fails_cleanly(capsys, [*argv_for(command, tmp_path), "--no-such-option"], "unrecognized")


@pytest.mark.parametrize("command", list(BAD_VALUES))
def test_a_bad_value_names_the_option_and_its_bound(command, tmp_path, capsys):
    extra, message = BAD_VALUES[command]
    fails_cleanly(capsys, [*argv_for(command, tmp_path), *extra], message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("study", list(STUDIES))
def test_every_study_refuses_an_unknown_option_in_one_line(study, capsys):
    fails_cleanly(capsys, ["study", study, "--no-such-option"], "unrecognized")


def test_no_or_unknown_subcommand_is_one_line(capsys):
    fails_cleanly(capsys, [], "required")
    fails_cleanly(capsys, ["bogus"], "invalid choice")
    fails_cleanly(capsys, ["study", "bogus"], "invalid choice")


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "study" in capsys.readouterr().out


def test_ctrl_c_exits_130_with_one_line(capsys):
    def interrupted() -> int:
        raise KeyboardInterrupt

    assert run_guarded("couplednoise eval", interrupted) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "couplednoise eval: interrupted"


def test_a_bug_keeps_its_traceback():
    def bug() -> int:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_guarded("couplednoise demo", bug)
