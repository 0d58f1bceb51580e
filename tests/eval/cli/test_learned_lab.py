"""`couplednoise learned-lab`: user errors follow the contract (one line, exit 2, no work)."""

from __future__ import annotations

import pytest

from tests.eval.cli.contract import fails_cleanly


@pytest.fixture(autouse=True)
def fashion_mnist_fixture(monkeypatch):
    from couplednoise.pipelines.learned_lab.world import FMNIST_DIR_ENV
    from tests.pipelines.learned_lab.conftest import FIXTURE

    monkeypatch.setenv(FMNIST_DIR_ENV, str(FIXTURE))


def test_bad_arguments_are_one_line_errors(capsys, tmp_path):
    fails_cleanly(capsys, ["learned-lab", "train", "--out", str(tmp_path), "--steps", "0"], "steps")
    fails_cleanly(capsys, ["learned-lab", "check", "--guidance", "-1"], "guidance")
    fails_cleanly(
        capsys,
        ["learned-lab", "export", "--run", str(tmp_path), "--classifiers", str(tmp_path)],
        "no training checkpoint at",
    )
    fails_cleanly(
        capsys, ["learned-lab", "check", "--weights", str(tmp_path)], "lacks unet/config.json"
    )
