"""Packaging: one import name (couplednoise) in a built wheel, every package folder listed,
eval/ holding only its entry modules at the root, and a torch-only `import couplednoise`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
ROOTS = {
    "couplednoise": "couplednoise",
    "eval": "couplednoise.eval",
    "pipelines": "couplednoise.pipelines",
}


def package_folders() -> set[str]:
    """Every folder with an __init__.py under the three roots, as its installed package name."""
    names = set()
    for folder, package in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            names.add(".".join([package, *parts]))
    return names


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == package_folders()
    assert config["package-dir"] == {package: folder for folder, package in ROOTS.items()}


def test_eval_root_holds_only_entry_modules_and_rooms():
    files = sorted(p.name for p in (REPO / "eval").iterdir() if p.is_file())
    assert files == ["__init__.py", "__main__.py"]


def test_a_built_wheel_has_one_top_level_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("couplednoise-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"couplednoise"}
    assert "couplednoise/eval/metrics/registry.py" in names
    assert "couplednoise/pipelines/lab/pipeline.py" in names
    assert "couplednoise/eval/batch/data/prompts.txt" in names  # package data travels too
    weights = "couplednoise/pipelines/learned_lab/weights/"
    for name in ("unet/diffusion_pytorch_model.safetensors", "classifier.safetensors"):
        assert weights + name in names  # the learned lab works from an installed wheel


def test_import_couplednoise_loads_torch_only():
    code = (
        "import sys, couplednoise; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'diffusers', 'transformers', 'gradio', 'open_clip', 'scipy'}), "
        "any(m.startswith(('couplednoise.eval', 'couplednoise.pipelines')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False"
