"""Shared pytest fixtures: tiny random-weight pipelines and open_clip model (built once per session).

The session pipelines are shared by every test: do not mutate them (no scheduler swap, no .to()).
For another scheduler use ``tests.tiny_models.with_scheduler(pipe, scheduler)``, which returns a new
pipeline object sharing the same modules.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.tiny_models import BUILDERS, save_tiny, save_tiny_open_clip

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two OpenMP threads
# per process made a tiny SD1.5 call 10-30x slower (measured: 0.4 s at 1 thread, 5-15 s at 2).
torch.set_num_threads(int(os.environ.get("COUPLEDNOISE_TEST_THREADS", "1")))

FAMILIES = tuple(BUILDERS)  # ("sd15", "sdxl", "sd3")


@pytest.fixture(scope="session")
def tiny_pipes():
    """family -> tiny pipeline, built on first use (a dict with lazy values)."""
    return _LazyPipes()


class _LazyPipes(dict):
    def __missing__(self, family: str):
        self[family] = BUILDERS[family]()
        return self[family]


@pytest.fixture(scope="session")
def sd15_pipe(tiny_pipes):
    return tiny_pipes["sd15"]


@pytest.fixture(scope="session")
def sdxl_pipe(tiny_pipes):
    return tiny_pipes["sdxl"]


@pytest.fixture(scope="session")
def sd3_pipe(tiny_pipes):
    return tiny_pipes["sd3"]


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_pipe(request, tiny_pipes):
    """Each tiny family in turn: a test using it runs once per family (ids sd15, sdxl, sd3)."""
    return tiny_pipes[request.param]


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory, tiny_pipes):
    """family -> a diffusers folder (safetensors) holding that tiny pipeline, saved once."""
    saved: dict[str, object] = {}

    def get(family: str = "sd15"):
        if family not in saved:
            saved[family] = save_tiny(tiny_pipes[family], tmp_path_factory.mktemp(f"tiny_{family}"))
        return saved[family]

    return get


@pytest.fixture(scope="session")
def tiny_open_clip_dir(tmp_path_factory):
    """A tiny open_clip model as a local-dir: folder, saved once (read it, do not write to it)."""
    return save_tiny_open_clip(tmp_path_factory.mktemp("tiny_open_clip"))
