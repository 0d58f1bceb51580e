"""Run-folder plumbing: atomic writes (whole or nothing, no temp left, the umask's mode) and the
output-folder policy (only new, empty or own-kind runs; staging removed on failure)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from couplednoise.eval.runs.atomic import atomic_file, write_text
from couplednoise.eval.runs.folders import check_output_folder, run_kind, staged_run


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_the_umask_gives(tmp_path, mask):
    old = os.umask(mask)
    try:
        path = write_text(tmp_path / f"f{mask}.txt", "x")
        with staged_run(tmp_path / f"run{mask}", "demo") as folder:
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / f"run{mask}").stat().st_mode) == 0o777 & ~mask
    assert not folder.exists()


def test_only_new_empty_or_own_kind_folders_are_accepted(tmp_path):
    check_output_folder(tmp_path / "new", "generate")
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty", "generate")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not a couplednoise run"):
            check_output_folder(mine, "generate", overwrite=overwrite)
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "config.json").write_text(json.dumps({"command": "demo"}))
    assert run_kind(demo) == "demo"
    with pytest.raises(ValueError, match="is a demo run, not a generate run"):
        check_output_folder(demo, "generate", overwrite=True)
    with pytest.raises(ValueError, match="pass --overwrite"):
        check_output_folder(demo, "demo")
    check_output_folder(demo, "demo", overwrite=True)
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "config.json").write_text(json.dumps({"fingerprint": "x", "sections": {}}))
    assert run_kind(batch) == "eval"
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        check_output_folder(tmp_path / "file", "generate")
    with pytest.raises(ValueError, match="is not a folder"):
        check_output_folder(tmp_path / "file" / "run", "generate")


def test_a_staged_run_replaces_only_on_success(tmp_path):
    out = tmp_path / "run"
    with staged_run(out, "generate") as folder:
        (folder / "config.json").write_text(json.dumps({"command": "generate", "n": 1}))
    assert json.loads((out / "config.json").read_text())["n"] == 1
    with pytest.raises(KeyboardInterrupt), staged_run(out, "generate", overwrite=True) as folder:
        (folder / "config.json").write_text(json.dumps({"command": "generate", "n": 2}))
        raise KeyboardInterrupt
    assert json.loads((out / "config.json").read_text())["n"] == 1  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # staging removed
