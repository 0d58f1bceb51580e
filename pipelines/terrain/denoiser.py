"""The terrain network: adaptive-terrain-diffusion's ONNX consistency UNet through onnxruntime.

    denoiser = load_denoiser(threads=1)
    x0 = denoiser(noisy, sigma=80.0, difficulty=difficulty)   # [B, 1, 128, 128] in [-1, 1]

The ONNX graph (10.46 M parameters, float32) maps ``noisy`` [B, 1, 128, 128] = x0 + sigma * z,
``sigma`` [B] and ``difficulty`` [B] in [0, 1] to ``denoised`` [B, 1, 128, 128]. onnxruntime is
used because the graph does not convert to torch (onnx2torch 1.5.15 lacks ONNX Split v18). Its
CPU kernels are deterministic and batch-invariant, so results do not depend on ``batch_size``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "terrain_diffusion"  # import name of PyPI adaptive-terrain-diffusion
WEIGHTS = "weights/terrain_consistency_unet_difficulty100.onnx"
INSTALL = 'pip install "couplednoise[terrain]" (adaptive-terrain-diffusion + onnxruntime)'
SIZE = 128


class MissingPackageError(ImportError, ValueError):
    """A package the terrain model needs is not installed.

    An ImportError by nature, and a ValueError so that the CLI reports it as a user error (one
    line, exit 2) like every other setting the user can fix.
    """


def _package_folder(name: str) -> Path | None:
    """Where an installed package lives, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def weights_path() -> Path:
    """The ONNX file inside the installed adaptive-terrain-diffusion wheel."""
    folder = _package_folder(PACKAGE)
    if folder is None:
        raise MissingPackageError(
            f"the terrain model needs the adaptive-terrain-diffusion package: {INSTALL}"
        )
    path = folder / WEIGHTS
    if not path.is_file():
        raise MissingPackageError(
            f"adaptive-terrain-diffusion at {folder} has no {WEIGHTS}; reinstall it: {INSTALL}"
        )
    return path


def check_installed() -> None:
    """MissingPackageError unless the weights and onnxruntime are there (imports nothing)."""
    weights_path()
    if importlib.util.find_spec("onnxruntime") is None:
        raise MissingPackageError(f"the terrain model needs onnxruntime: {INSTALL}")


@dataclass(eq=False)
class TerrainDenoiser:
    """The ONNX network, called ``batch_size`` samples at a time."""

    session: Any  # an onnxruntime.InferenceSession
    batch_size: int = 4
    path: str = ""

    def __call__(self, noisy: np.ndarray, sigma: float, difficulty: np.ndarray) -> np.ndarray:
        """Denoised heightfields [B, 1, 128, 128] float32 of ``noisy`` [B, 1, 128, 128] at level
        ``sigma`` with conditioning ``difficulty`` [B] (each in [0, 1])."""
        noisy = np.ascontiguousarray(noisy, dtype=np.float32)
        difficulty = np.ascontiguousarray(difficulty, dtype=np.float32)
        if noisy.ndim != 4 or noisy.shape[1:] != (1, SIZE, SIZE):
            raise ValueError(f"noisy must be [B, 1, {SIZE}, {SIZE}], got {list(noisy.shape)}")
        if difficulty.shape != (noisy.shape[0],):
            raise ValueError(f"difficulty must be [{noisy.shape[0]}], got {list(difficulty.shape)}")
        outputs = []
        for start in range(0, noisy.shape[0], self.batch_size):
            stop = min(start + self.batch_size, noisy.shape[0])
            feeds = {
                "noisy": noisy[start:stop],
                "sigma": np.full(stop - start, sigma, dtype=np.float32),
                "difficulty": difficulty[start:stop],
            }
            outputs.append(self.session.run(["denoised"], feeds)[0])
        return np.concatenate(outputs).astype(np.float32, copy=False)


def providers_for(device: str) -> list:
    """onnxruntime execution providers for a torch device name ("cpu", "cuda", "cuda:1")."""
    import onnxruntime

    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise ValueError(
                "device cuda: this onnxruntime has no CUDAExecutionProvider (install "
                "onnxruntime-gpu with its CUDA libraries), or pass device cpu"
            )
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    raise ValueError(f"the terrain model runs on cpu or cuda, got device {device!r}")


def load_denoiser(*, threads: int, batch_size: int = 4, device: str = "cpu") -> TerrainDenoiser:
    """An onnxruntime session on the bundled weights; ``threads`` intra-op threads (0: all)."""
    check_installed()
    import onnxruntime

    path = weights_path()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=providers_for(device)
    )
    if device.startswith("cuda") and session.get_providers()[0] != "CUDAExecutionProvider":
        raise ValueError(
            "onnxruntime could not start its CUDA provider for the terrain model (CUDA libraries "
            "missing?); pass device cpu"
        )
    return TerrainDenoiser(session=session, batch_size=batch_size, path=str(path))
