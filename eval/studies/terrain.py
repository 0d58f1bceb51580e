"""Every coupling vs independent noise on a real trained network: the terrain consistency model.

    couplednoise study terrain --reference          # the issue's quick check, printed beside it
    couplednoise study terrain --plan               # the cells and network evaluations, no work
    couplednoise study terrain                      # the grid, then docs/terrain_study.*

A cell is (difficulty, steps, coupling, K[, coupled re-noise]): one gallery of K heightfields per
seed of ``--seeds`` (gallery s drawn from seed s for every coupling, so arms are paired on seeds),
scored with the project's metric functions: pairwise L2, MS-SSIM and Vendi (cosine kernel) on the
images (the heightfield mapped to [0, 1], 3 channels), Vendi and mean cosine distance on
EfficientNet-Lite0 features, and the mean relief (max - min height) as a check that each image's
law is unchanged. Finished galleries are kept per cell in ``--work`` (an atomic JSON per cell,
rewritten after every chunk of galleries): a killed run resumes where it stopped, and runs on
disjoint cells (e.g. one per difficulty) can share one ``--work`` folder.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from couplednoise.eval.cli.options import MAX_IMAGES, float_list, int_in, int_list, seed_list
from couplednoise.eval.runs.atomic import write_text
from couplednoise.eval.studies.common import claim_work_folder

DEFAULT_COUPLINGS = (
    "independent",
    "repulsive",
    "orthogonal",
    "antithetic",
    "equicorrelated:rho=0.5",
)
DEFAULT_MULTISTEP = ("independent", "repulsive", "antithetic", "equicorrelated:rho=0.5")
DEFAULT_RENOISE = ("repulsive",)
METRICS = ("l2", "ms_ssim", "vendi_pixel", "vendi_effnet", "effnet_distance", "relief")
# The quick check (K = 4, 60 galleries, one step, network difficulty input 0.5).
REFERENCE = {
    "difficulty": 50.5,  # (50.5 - 1) / 99 = 0.5
    "k": 4,
    "seeds": "0-59",
    "couplings": ("independent", "repulsive", "orthogonal", "antithetic"),
    "independent": {"l2": (35.3, 2.4), "ms_ssim": (0.617, 0.027)},
    "paired": {
        "repulsive": {"l2": (5.9, 1.1), "ms_ssim": (-0.145, 0.025)},
        "antithetic": {"l2": (7.0, None), "ms_ssim": (-0.163, None)},
    },
}
IMAGES_PER_CALL = 32  # galleries are generated in chunks of about this many images


@dataclass(frozen=True)
class Cell:
    """One arm of the grid: ``renoise`` names the coupling of multistep re-noise (None: fresh)."""

    difficulty: float
    steps: int
    coupling: str
    k: int
    renoise: str | None = None

    @property
    def prompt(self) -> str:
        return f"difficulty {self.difficulty:g}"

    @property
    def key(self) -> str:
        tail = f"_renoise-{self.renoise}" if self.renoise else ""
        name = f"d{self.difficulty:g}_steps{self.steps}_K{self.k}_{self.coupling}{tail}"
        return re.sub(r"[^A-Za-z0-9.=_-]+", "_", name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="terrain", help="terrain spec, e.g. terrain:floor=40")
    parser.add_argument(
        "--difficulties",
        type=float_list(1, 100),
        default=[50.5, 90.0],
        help="difficulties d in 1..100 (network input (d - 1) / 99); default 50.5,90",
    )
    parser.add_argument(
        "--couplings", nargs="+", default=list(DEFAULT_COUPLINGS), help="arms at one step"
    )
    parser.add_argument(
        "--multistep-couplings",
        nargs="+",
        default=list(DEFAULT_MULTISTEP),
        help="arms at steps > 1 (re-noise independent)",
    )
    parser.add_argument(
        "--sizes", type=int_list(2, MAX_IMAGES), default=[2, 4, 8, 16], help="K at one step"
    )
    parser.add_argument(
        "--steps", type=int_list(1, 50), default=[1, 2], help="sampling steps (1 = one step)"
    )
    parser.add_argument(
        "--multistep-sizes",
        type=int_list(2, MAX_IMAGES),
        default=[4, 8],
        help="K for steps > 1 (default 4,8)",
    )
    parser.add_argument(
        "--renoise-couplings",
        nargs="*",
        default=list(DEFAULT_RENOISE),
        help="extra multistep arms whose re-noise is drawn from the same coupling",
    )
    parser.add_argument(
        "--seeds", type=seed_list, default=seed_list("0-99"), help="gallery seeds (default 0-99)"
    )
    parser.add_argument("--threads", type=int_in(1, 64), default=1, help="torch + onnx threads")
    parser.add_argument(
        "--work", type=Path, default=Path("runs/terrain_study"), help="resumable per-cell results"
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for tables/figures")
    parser.add_argument(
        "--picture-seeds",
        type=seed_list,
        default=seed_list("0-3"),
        help="seeds of the independent vs repulsive picture (default 0-3)",
    )
    parser.add_argument(
        "--picture-size", type=int_in(2, 16), default=4, help="K of that picture (default 4)"
    )
    parser.add_argument(
        "--reference", action="store_true", help="only the issue's quick check (K=4, 60 seeds)"
    )
    parser.add_argument(
        "--plan", action="store_true", help="print the cells and evaluations left, do nothing"
    )
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="compute cells only (tables written by a later run)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="compute nothing: tables of every finished cell in --work",
    )


def grid(args: argparse.Namespace) -> list[Cell]:
    """The cells in priority order: one step (difficulty, K, coupling), then multistep."""
    from couplednoise import get_coupling

    if args.reference:
        return [
            Cell(REFERENCE["difficulty"], 1, get_coupling(c).spec, REFERENCE["k"])
            for c in REFERENCE["couplings"]
        ]
    one_step = [get_coupling(c).spec for c in args.couplings]
    multistep = [get_coupling(c).spec for c in args.multistep_couplings]
    for flag, specs in (("--couplings", one_step), ("--multistep-couplings", multistep)):
        if "independent" not in specs:
            raise ValueError(f"{flag} must include independent (the paired baseline)")
    renoise = [get_coupling(c).spec for c in args.renoise_couplings]
    cells = []
    for steps in args.steps:
        sizes = args.sizes if steps == 1 else args.multistep_sizes
        arms = [(c, None) for c in (one_step if steps == 1 else multistep)]
        if steps > 1:
            arms += [(c, c) for c in renoise if c != "independent"]
        for difficulty in args.difficulties:
            for k in sizes:
                cells += [Cell(difficulty, steps, c, k, r) for c, r in arms]
    return cells


def study_seeds(args: argparse.Namespace) -> list[int]:
    return seed_list(REFERENCE["seeds"]) if args.reference else list(args.seeds)


class CellStore:
    """Per-cell results in ``folder``: {seed: metrics} as one JSON file per cell (atomic writes)."""

    def __init__(self, folder: Path, provenance: dict):
        self.folder = folder
        claim_work_folder(folder, provenance)

    def path(self, cell: Cell) -> Path:
        return self.folder / f"{cell.key}.json"

    def cells(self) -> list[Cell]:
        """Every cell with a results file in the folder."""
        files = sorted(p for p in self.folder.glob("*.json") if p.name != "study.json")
        return [Cell(**json.loads(p.read_text())["cell"]) for p in files]

    def load(self, cell: Cell) -> dict[int, dict]:
        path = self.path(cell)
        if not path.is_file():
            return {}
        return {int(s): row for s, row in json.loads(path.read_text())["galleries"].items()}

    def save(self, cell: Cell, rows: dict[int, dict]) -> None:
        """Write ``rows`` merged with what the file holds now (another run may add seeds)."""
        rows = {**self.load(cell), **rows}
        data = {"cell": asdict(cell), "galleries": {str(s): rows[s] for s in sorted(rows)}}
        write_text(self.path(cell), json.dumps(data))


def grey_ms_ssim(images: torch.Tensor) -> torch.Tensor:
    """``pairwise_ms_ssim`` of grey images [K, 3, H, W] (three equal channels), a third the cost.

    MS-SSIM of a multi-channel pair is the mean of its per-channel values, which are equal here,
    so one channel is scored with the same settings (and, like ``pairwise_ms_ssim``, torchmetrics'
    function, data range 1, normalize="relu"); MS-SSIM was 30% of the study's compute at K = 16.
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    from couplednoise.eval.metrics.checks import check_images
    from couplednoise.eval.metrics.ms_ssim import ms_ssim_settings

    check_images(images, min_count=2)
    if not torch.equal(images[:, :1].expand_as(images), images):
        raise ValueError("grey_ms_ssim needs images whose three channels are equal")
    settings = ms_ssim_settings(*images.shape[-2:])
    rows, cols = torch.triu_indices(images.shape[0], images.shape[0], offset=1)
    return multiscale_structural_similarity_index_measure(
        images[rows, :1],
        images[cols, :1],
        data_range=1.0,
        kernel_size=settings.kernel_size,
        sigma=settings.sigma,
        betas=settings.betas,
        normalize="relu",
        reduction="none",
    ).mean()


def gallery_scores(images: torch.Tensor, features: torch.Tensor) -> dict[str, float]:
    """The study's metrics of one gallery: images [K, 3, H, W] in [0, 1], features [K, 1280]."""
    from couplednoise.eval.metrics.pairwise import pairwise_cosine_distance, pairwise_l2
    from couplednoise.eval.metrics.vendi import vendi_score

    heights = images[:, 0]
    return {
        "l2": float(pairwise_l2(images)),
        "ms_ssim": float(grey_ms_ssim(images)),
        "vendi_pixel": float(vendi_score(images.flatten(1))),
        "vendi_effnet": float(vendi_score(features)),
        "effnet_distance": float(pairwise_cosine_distance(features)),
        "relief": float((heights.amax(dim=(1, 2)) - heights.amin(dim=(1, 2))).mean()),
    }


def run_chunk(pipe, embedder, cell: Cell, seeds: list[int]) -> dict[int, dict]:
    """Scores of one gallery per seed (gallery s from torch.Generator().manual_seed(s))."""
    from couplednoise import latents_for

    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    latents = latents_for(
        pipe,
        cell.coupling,
        num_images_per_prompt=cell.k,
        num_prompts=len(seeds),
        generator=generators,
    )
    images = pipe(
        [cell.prompt] * len(seeds),
        num_images_per_prompt=cell.k,
        latents=latents,
        num_inference_steps=cell.steps,
        generator=[g for g in generators for _ in range(cell.k)],
        renoise_coupling=cell.renoise,
        output_type="pt",
    ).images
    features = embedder.embed_images(images)
    return {
        s: gallery_scores(
            images[i * cell.k : (i + 1) * cell.k], features[i * cell.k : (i + 1) * cell.k]
        )
        for i, s in enumerate(seeds)
    }


def provenance(args: argparse.Namespace) -> dict:
    """What decides a cell's numbers besides the cell itself (a --work folder holds one setup)."""
    from couplednoise.eval.backbones.efficientnet import default_preprocessing
    from couplednoise.pipelines.terrain import parse_terrain_spec

    options = parse_terrain_spec(args.model)
    return {
        "model": {"floor": options["floor"]},  # threads and batch do not change results
        "effnet": default_preprocessing(),
        "seed_semantics": "gallery s: torch.Generator('cpu').manual_seed(s) draws the coupled "
        "latents, then the re-noise",
    }


def evaluations(cells: list[Cell], seeds: list[int], store: CellStore) -> int:
    """Network evaluations left: missing galleries x K x steps."""
    return sum(len(set(seeds) - set(store.load(c))) * c.k * c.steps for c in cells)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    cells = grid(args)
    seeds = study_seeds(args)
    store = CellStore(args.work, provenance(args))
    left = evaluations(cells, seeds, store)
    if args.plan:
        for cell in cells:
            done = len(set(seeds) & set(store.load(cell)))
            print(f"{cell.key}: {done}/{len(seeds)} galleries")
        print(f"{len(cells)} cells, {left} network evaluations left")
        return 0
    if left and not args.report_only:
        compute(args, cells, seeds, store, left, tqdm)
    if args.no_report:
        return 0
    from couplednoise.eval.studies import terrain_report

    if args.reference:
        results = {cell: store.load(cell) for cell in cells}
        print(terrain_report.write_reference(results, seeds, args))
        return 0
    finished = sorted(
        (c for c in store.cells() if set(seeds) <= set(store.load(c))), key=report_order
    )
    if not finished:
        raise ValueError(f"--work {args.work} holds no cell with all {len(seeds)} seeds yet")
    results = {cell: store.load(cell) for cell in finished}
    print(terrain_report.write_report(results, finished, seeds, args))
    return 0


def report_order(cell: Cell) -> tuple:
    """Tables list steps, difficulty, K, then independent first and the arms in default order."""
    known = list(DEFAULT_COUPLINGS)
    rank = known.index(cell.coupling) if cell.coupling in known else len(known)
    return (cell.steps, cell.difficulty, cell.k, cell.renoise is not None, rank, cell.coupling)


def compute(args, cells, seeds, store: CellStore, left: int, tqdm) -> None:
    """Generate and score every missing gallery, saving each cell after every chunk."""
    from couplednoise.eval.backbones.efficientnet import load_efficientnet_lite0
    from couplednoise.pipelines.loading import load_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    embedder = load_efficientnet_lite0()
    bar = tqdm(total=left, desc="terrain study", unit="eval", mininterval=30)
    for cell in cells:
        rows = store.load(cell)
        missing = [s for s in seeds if s not in rows]
        chunk = max(1, IMAGES_PER_CALL // cell.k)
        start = time.perf_counter()
        for i in range(0, len(missing), chunk):
            rows.update(run_chunk(pipe, embedder, cell, missing[i : i + chunk]))
            store.save(cell, rows)
            bar.update(len(missing[i : i + chunk]) * cell.k * cell.steps)
        if missing:
            seconds = time.perf_counter() - start
            bar.write(f"{cell.key}: {len(missing)} galleries in {seconds:.0f} s")
    bar.close()
