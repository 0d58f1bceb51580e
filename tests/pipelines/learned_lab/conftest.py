"""Learned-lab test fixtures: a small Fashion-MNIST sample committed beside the tests (8 training
and 40 test images per kept class, from Debian's dataset-fashion-mnist), so the tests need neither
the Debian package nor a download; and the committed pipeline and classifier, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fashion_mnist"


@pytest.fixture(autouse=True)
def fashion_mnist_fixture(monkeypatch):
    from couplednoise.pipelines.learned_lab.world import FMNIST_DIR_ENV

    monkeypatch.setenv(FMNIST_DIR_ENV, str(FIXTURE))


@pytest.fixture(scope="session")
def learned_pipe():
    """The committed learned-lab pipeline (DDIM). Do not mutate: use ``with_scheduler``."""
    from couplednoise.pipelines.learned_lab import load_learned_lab

    return load_learned_lab()


@pytest.fixture(scope="session")
def learned_classifier():
    from couplednoise.pipelines.learned_lab import load_classifier

    return load_classifier()
