"""Output folders: which folder a command may write, and building a run folder out of sight.

    check_output_folder(out, "generate", overwrite=False)   # ValueError if out cannot be used
    with staged_run(out, "generate", overwrite=False) as folder:  # a temporary sibling of out
        ...write everything into folder...                       # moved into place on success

A command writes only into a new or empty folder, or into a run of its own kind (``config.json``
with ``"command": KIND``; a batch run is recognised by its fingerprint). Replacing such a run
needs ``overwrite`` (``demo`` always replaces its own earlier run). Nothing else is ever deleted:
a user's folder, another kind of run or a finished batch run stays as it is. The staging folder
is created before any model loads, so an unwritable destination fails at once; on any error
(Ctrl-C included) it is removed and ``out`` is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from couplednoise.eval.runs.atomic import umask


def run_kind(folder: Path) -> str | None:
    """The command that wrote run folder ``folder`` (from its config.json), or None."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    if "fingerprint" in config and "sections" in config:
        return "eval"
    kind = config.get("command")
    return kind if isinstance(kind, str) else None


def check_output_folder(
    out: Path, kind: str, *, overwrite: bool = False, flag: str = "--out"
) -> None:
    """ValueError unless ``out`` is new, an empty folder, or (with ``overwrite``) a ``kind`` run."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} exists and is not a folder")
    if not out.is_dir():
        parent = next(p for p in out.absolute().parents if p.exists())
        if not parent.is_dir():
            raise ValueError(f"{flag} {out} cannot be created: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {out} cannot be created: {parent} is not writable")
        return
    if not any(out.iterdir()):
        return
    found = run_kind(out)
    if found != kind:
        what = f"a {found} run" if found else "a folder that is not a couplednoise run"
        raise ValueError(
            f"{flag} {out} is {what}, not a {kind} run; couplednoise only replaces its own "
            f"{kind} runs. Choose a new or empty folder"
        )
    if not overwrite:
        raise ValueError(
            f"{flag} {out} holds an earlier {kind} run; pass --overwrite to replace it, or "
            "choose a new folder"
        )


@contextlib.contextmanager
def staged_run(
    out: Path, kind: str, *, overwrite: bool = False, flag: str = "--out"
) -> Iterator[Path]:
    """A fresh staging folder beside ``out``; on success it replaces ``out`` (checked first)."""
    out = Path(out).resolve()
    check_output_folder(out, kind, overwrite=overwrite, flag=flag)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    staging.chmod(0o777 & ~umask())  # mkdtemp makes it owner-only
    try:
        yield staging
        check_output_folder(out, kind, overwrite=overwrite, flag=flag)  # nothing new appeared
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
