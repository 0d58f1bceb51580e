"""The galleries.json layout: writing galleries into a run folder, finding and reading them.

    entries = write_galleries(folder, [GalleryRecord("p000_s0_repulsive", prompt, images, info)])
    sources = find_galleries(folder)      # galleries.json, else every folder holding images
    images = load_gallery(sources[0])     # float [K, 3, H, W] in [0, 1]

A run folder lists its galleries in ``galleries.json``: ``[{"id", "prompt", "files": [png paths
relative to the folder], ...info (coupling, seed, ...)}]``, images under ``images/<id>/<k>.png``.
Every command that writes galleries (generate, demo, the web demo's run zip, background) writes
them through ``write_galleries``; ``couplednoise score`` reads any of them. Without an index,
every folder (the root included) that directly holds images is one gallery, its prompt read from a
``prompt.txt`` inside, else the folder's name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from couplednoise.eval.runs.atomic import write_text
from couplednoise.eval.runs.images import save_png

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def slug(text: str) -> str:
    """A file-name-safe version of a model name, coupling spec or gallery id ("_" for empty)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(text)).strip("_") or "_"


@dataclass(frozen=True, eq=False)
class GalleryRecord:
    """A gallery to write: its id (a folder name), prompt, images [K, 3, H, W] in [0, 1], and
    the extra galleries.json fields (coupling, seed, label, ...)."""

    id: str
    prompt: str
    images: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    folder: str | None = None  # relative image folder; default images/<slug(id)>


def save_gallery(folder: Path, record: GalleryRecord) -> dict[str, Any]:
    """A record's images as PNGs under ``folder``; returns its galleries.json entry."""
    base = record.folder or f"images/{slug(record.id)}"
    files = [f"{base}/{k}.png" for k in range(record.images.shape[0])]
    for image, relative in zip(record.images, files):
        save_png(image, Path(folder) / relative)
    return {"id": record.id, "prompt": record.prompt, **record.info, "files": files}


def write_gallery_index(folder: Path, entries: Sequence[dict[str, Any]]) -> None:
    """``galleries.json`` listing ``entries`` (ids must be unique)."""
    ids = [e["id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"gallery ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    write_text(
        Path(folder) / "galleries.json", json.dumps(list(entries), indent=2, default=str) + "\n"
    )


def write_galleries(folder: Path, records: Sequence[GalleryRecord]) -> list[dict[str, Any]]:
    """Every record's images as PNGs and ``galleries.json`` listing them; returns its entries."""
    entries = [save_gallery(folder, record) for record in records]
    write_gallery_index(folder, entries)
    return entries


@dataclass(frozen=True)
class GallerySource:
    """Where one gallery's images are, and what it shows."""

    id: str
    prompt: str
    files: tuple[Path, ...]
    info: dict = field(default_factory=dict)  # extra galleries.json fields (coupling, seed, ...)


def _from_index(root: Path, index: Path) -> list[GallerySource]:
    try:
        entries = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {index}: {error}") from error
    if not isinstance(entries, list):
        raise ValueError(
            f"{index} must hold a JSON list of galleries, got {type(entries).__name__}"
        )
    galleries = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"id", "prompt", "files"} <= entry.keys():
            raise ValueError(f"{index} entry {position} needs the keys id, prompt and files")
        if not isinstance(entry["files"], list) or not all(
            isinstance(f, str) for f in entry["files"]
        ):
            raise ValueError(f"{index} entry {position}: files must be a list of relative paths")
        info = {k: v for k, v in entry.items() if k not in ("id", "prompt", "files")}
        files = tuple(root / f for f in entry["files"])
        galleries.append(GallerySource(str(entry["id"]), str(entry["prompt"]), files, info))
    ids = [g.id for g in galleries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{index} has duplicate gallery ids")
    return galleries


def _from_folders(root: Path) -> list[GallerySource]:
    galleries = []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        files = tuple(
            sorted(
                p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        )
        if not files:
            continue
        prompt_file = folder / "prompt.txt"
        prompt = prompt_file.read_text().strip() if prompt_file.is_file() else folder.name
        gallery_id = folder.relative_to(root).as_posix() if folder != root else root.name
        galleries.append(GallerySource(gallery_id, prompt, files))
    return galleries


def find_galleries(root: str | Path) -> list[GallerySource]:
    """The galleries under ``root`` (``galleries.json`` if present, else image folders)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    index = root / "galleries.json"
    galleries = _from_index(root, index) if index.is_file() else _from_folders(root)
    if not galleries:
        raise ValueError(f"no galleries in {root}: no galleries.json and no folder with images")
    return galleries


def load_gallery(source: GallerySource) -> torch.Tensor:
    """The gallery's images as float [K, 3, H, W] in [0, 1] (RGB); ValueError naming a bad file."""
    import numpy as np

    from couplednoise.pipelines.images import open_image

    if not source.files:
        raise ValueError("empty gallery: no image files")
    images = []
    for path in source.files:
        try:
            array = np.asarray(open_image(path).convert("RGB"), dtype=np.uint8)
        except ValueError as error:
            raise ValueError(f"cannot read image {path}: {error}") from error
        images.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
    sizes = {tuple(image.shape[1:]) for image in images}
    if len(sizes) > 1:
        raise ValueError(f"images differ in size {sorted(sizes)}; a gallery needs one size")
    return torch.stack(images).float() / 255
