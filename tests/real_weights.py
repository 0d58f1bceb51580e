"""Tests on real trained weights that install from a package registry (the ``terrain`` extra).

``require(module)`` skips a test module when the package is absent on a developer's machine, and
fails it under CI (CI=1), where the extra is installed: a missing wheel is never a silent skip.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

EXTRA = 'pip install "couplednoise[terrain]"'


def require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed: {EXTRA}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)
