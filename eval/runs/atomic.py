"""Atomic files: written whole to a temporary sibling, fsynced, then renamed over the target.

    write_text(path, text)          # a reader sees the old file or the new one, never a part
    write_bytes(path, data)
    save_figure(figure, path)       # a matplotlib figure as PNG, the same way

A failed write removes its temporary file and leaves the target as it was. Files get the mode a
plain ``open()`` would give (0666 minus the umask), not mkstemp's owner-only 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def umask() -> int:
    """The process umask: read from /proc where possible (os.umask must set it to read it, which
    would race with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """An open temporary file beside ``path``; on success it replaces ``path``, on error it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_file(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def save_figure(figure, path: str | Path, *, dpi: int = 120) -> Path:
    """A matplotlib figure as a PNG at ``path``, atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path, "wb") as handle:
            figure.savefig(handle, format="png", dpi=dpi)
    finally:
        plt.close(figure)
    return Path(path)
