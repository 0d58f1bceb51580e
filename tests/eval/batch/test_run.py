"""Batch runs end to end on the lab model and a tiny SD1.5: rows, resume after SIGKILL, 2 processes.

One uninterrupted in-process run of a lab config is the reference; a run killed with SIGKILL and
resumed, a run with a torn last line, and a 2-process ``accelerate launch`` run must all give
exactly its rows (ignoring the timing fields). Subprocesses are few: each pays ~10 s of imports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from couplednoise.eval.batch.config import validate_config
from couplednoise.eval.batch.run import (
    TIMING_KEY,
    build_items,
    part_path,
    read_jsonl,
    read_rows,
    run_batch,
)

REPO = Path(__file__).resolve().parents[3]
N_PROMPTS, COUPLINGS, K = 6, ["independent", "repulsive", "orthogonal"], 3


def lab_data(out: Path, **extra) -> dict:
    return {
        "models": ["lab"],
        "couplings": COUPLINGS,
        "prompts": {"source": "builtin:lab", "n": N_PROMPTS, "seed": 0},
        "generation": {"num_images": K, "steps": 5},
        "metrics": {"names": ["l2", "ms_ssim", "vendi_pixel", "lab"]},
        "output": {"dir": str(out), "grids": 2},
        **extra,
    }


def comparable(rows: list[dict]) -> list[dict]:
    """Rows without their timing fields, in item order."""
    return sorted(
        ({k: v for k, v in r.items() if k != TIMING_KEY} for r in rows), key=lambda r: r["index"]
    )


def merged_rows(out: Path) -> list[dict]:
    return read_jsonl(out / "rows.jsonl")


def write_config(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def subprocess_env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-process run: (run folder, rows)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    data = lab_data(out)
    counts = run_batch(validate_config(data), progress=False)
    assert counts == {
        "items": N_PROMPTS * len(COUPLINGS),
        "done_before": 0,
        "computed_here": N_PROMPTS * len(COUPLINGS),
    }
    return out, merged_rows(out)


def test_lab_run_writes_traceable_paired_rows_grids_and_report(reference):
    out, rows = reference
    config = validate_config(lab_data(out))
    items = build_items(config)
    assert [r["id"] for r in rows] == [i.id for i in items]
    for row in rows:
        assert row["model"] == "lab" and row["family"] == "lab"
        assert row["num_images"] == K and row["gallery"]["seed"] == row["seed"]
        assert row["gallery"]["steps"] == 5 and row["gallery"]["coupling"] == row["coupling"]
        assert set(row["metrics"]) == {
            "l2",
            "ms_ssim",
            "vendi_pixel",
            "lab_alignment",
            "lab_scene_cov",
            "lab_attr_cov",
            "lab_scenes",
        }
        assert 1.0 <= row["metrics"]["vendi_pixel"] <= K
        assert row["metrics"]["lab_alignment"] == 1.0  # exact denoiser, guidance 1: on prompt
    # couplings of one (prompt, seed) share the seed; different prompts have different seeds
    seeds = {}
    for row in rows:
        seeds.setdefault(row["prompt_index"], set()).add(row["seed"])
    assert all(len(s) == 1 for s in seeds.values()) and len(set.union(*seeds.values())) == N_PROMPTS
    # the couplings give different galleries from the same seed. Lab images snap to scenes and an
    # orthogonal frame from one seed is its Gaussian matrix barely rotated (3 rows in 3,072 dims),
    # so a single group may repeat a gallery: each coupling must differ from independent somewhere.
    by_group = {}
    for row in rows:
        by_group.setdefault(row["prompt_index"], {})[row["coupling"]] = row["metrics"]["l2"]
    for coupling in COUPLINGS[1:]:
        assert any(g[coupling] != g["independent"] for g in by_group.values()), coupling
    grids = [r["files"]["grid"] for r in rows if "grid" in r["files"]]
    assert len(grids) == 2 * len(COUPLINGS) and all((out / g).is_file() for g in grids)
    stored = json.loads((out / "config.json").read_text())
    assert stored["items"] == len(items) and stored["versions"]["torch"]
    report = out / "report"
    for name in ("summary.md", "summary.csv", "metrics_lab.png", "tradeoff_lab.png"):
        assert (report / name).is_file(), name
    assert len(list(report.glob("gallery_lab_*.png"))) == 2
    assert (
        f"{len(items)} of {len(items)} galleries: run complete"
        in (report / "summary.md").read_text()
    )


def test_rerunning_a_finished_run_computes_nothing(reference, tmp_path):
    out, rows = reference
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    counts = run_batch(validate_config(lab_data(copy)), progress=False)
    assert counts["done_before"] == len(rows) and counts["computed_here"] == 0
    assert merged_rows(copy) == rows


def test_adding_a_coupling_extends_a_finished_run(reference, tmp_path):
    """A run of two couplings, extended with the third, computes only the new items and ends
    with exactly the rows of the three-coupling run; config.json records the extension."""
    out = tmp_path / "run"
    run_batch(validate_config(lab_data(out, couplings=COUPLINGS[:2])), progress=False)
    first = json.loads((out / "config.json").read_text())
    counts = run_batch(validate_config(lab_data(out)), progress=False)
    assert counts == {
        "items": N_PROMPTS * len(COUPLINGS),
        "done_before": N_PROMPTS * 2,
        "computed_here": N_PROMPTS,
    }
    assert comparable(merged_rows(out)) == comparable(reference[1])
    stored = json.loads((out / "config.json").read_text())
    assert stored["extended_from"] == [first["fingerprint"]]
    assert stored["config"]["couplings"] == COUPLINGS


def test_torn_last_line_is_dropped_and_its_item_recomputed(reference, tmp_path):
    out, rows = reference
    run = tmp_path / "run"
    part = part_path(run, 0)
    part.parent.mkdir(parents=True)
    shutil.copy(out / "config.json", run / "config.json")
    lines = [json.dumps(r) + "\n" for r in rows[:5]]
    torn = json.dumps(rows[5])[:100]  # the 6th write, cut by a kill
    part.write_text("".join(lines) + torn)
    assert len(read_rows(run)) == 5
    counts = run_batch(validate_config(lab_data(run)), progress=False)
    assert counts["done_before"] == 5 and counts["computed_here"] == len(rows) - 5
    assert comparable(merged_rows(run)) == comparable(rows)
    assert all(line.endswith("}") for line in part.read_text().splitlines())


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_rows(reference, tmp_path):
    _, rows = reference
    run = tmp_path / "run"
    config_path = write_config(tmp_path / "config.yaml", lab_data(run))
    process = subprocess.Popen(
        [sys.executable, "-m", "couplednoise", "eval", str(config_path), "--no-progress"],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    part = part_path(run, 0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if part.is_file() and part.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, process.stdout.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(read_rows(run))
    assert 3 <= done < len(rows), f"kill came too late: {done} of {len(rows)} rows done"
    assert not (run / "rows.jsonl").exists()
    counts = run_batch(validate_config(lab_data(run)), progress=False)
    assert counts["done_before"] == done
    assert comparable(merged_rows(run)) == comparable(rows)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launcher(name: str) -> list[str]:
    """The command prefix that starts 2 CPU processes with ``name``'s launcher."""
    if name == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
        ]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
    ]


@pytest.mark.parametrize("name", ["accelerate", "torchrun"])
def test_two_processes_give_the_rows_of_one(reference, tmp_path, name):
    _, rows = reference
    run = tmp_path / "run"
    config_path = write_config(tmp_path / "config.yaml", lab_data(run))
    command = [
        *launcher(name),
        "-m",
        "couplednoise",
        "eval",
        str(config_path),
        "--no-progress",
        "--no-report",
    ]
    result = subprocess.run(
        command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    merged = merged_rows(run)
    assert comparable(merged) == comparable(rows)
    assert {r[TIMING_KEY]["rank"] for r in merged} == {0, 1}
    assert part_path(run, 0).is_file() and part_path(run, 1).is_file()
    sessions = [json.loads(line) for line in (run / "sessions.jsonl").read_text().splitlines()]
    assert [s["processes"] for s in sessions] == [2]


def test_tiny_sd15_run_with_alignment_metric(tmp_path, tiny_pipeline_dir, tiny_open_clip_dir):
    out = tmp_path / "run"
    data = {
        "models": [{"path": str(tiny_pipeline_dir("sd15")), "name": "tiny-sd15"}],
        "couplings": ["independent", "repulsive"],
        "prompts": {"source": "builtin", "n": 2, "seed": 0},
        "generation": {"num_images": 2, "steps": 2, "guidance": 3.0},
        "metrics": {
            "names": ["l2", "ms_ssim", "clip_score"],
            "clip_model": f"local-dir:{tiny_open_clip_dir}",
        },
        "output": {"dir": str(out), "save_images": True, "grids": 1},
    }
    run_batch(validate_config(data), progress=False)
    rows = merged_rows(out)
    assert len(rows) == 4
    for row in rows:
        assert row["family"] == "sd15" and row["gallery"]["size"] == [64, 64]
        assert set(row["metrics"]) == {"l2", "ms_ssim", "clip_score"}
        assert 0.0 <= row["metrics"]["clip_score"] <= 100.0
        assert len(row["files"]["images"]) == 2
        assert all((out / p).is_file() for p in row["files"]["images"])
    summary = (out / "report" / "summary.md").read_text()
    assert "## tiny-sd15" in summary and "Paired difference to independent" in summary
    assert (out / "report" / "tradeoff_tiny-sd15.png").is_file()


def test_gallery_methods_are_arms_of_the_run_paired_with_plain_sampling(tmp_path):
    from couplednoise.eval.batch.report import build_report

    out = tmp_path / "run"
    data = lab_data(out, methods=["plain", "cads:noise_scale=0.5"])
    data["couplings"] = ["independent", "repulsive"]
    data["prompts"]["n"] = 2
    config = validate_config(data)
    assert len(build_items(config)) == 2 * 2 * 2
    run_batch(config, progress=False)
    rows = merged_rows(out)
    methods = [r.get("method", "plain") for r in rows]
    assert methods.count("plain") == 4 and all(
        m.startswith("cads:") for m in methods if m != "plain"
    )
    cads = [r for r in rows if "method" in r]
    assert all(r["gallery"]["method"]["name"] == "cads" for r in cads)
    assert all(r["id"].endswith("|" + r["method"]) for r in cads)
    summary = (build_report(out) / "summary.md").read_text()
    assert "independent + cads:" in summary and "repulsive + cads:" in summary
    # plain-only configs keep their fingerprint: methods enter the sections only when used
    plain = validate_config(lab_data(tmp_path / "other"))
    assert "methods" not in plain.fingerprint_sections()
