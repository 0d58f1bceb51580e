"""The batch run: galleries for every (model, prompt, seed, coupling), scored, one JSONL row each.

Run folder (``config.output``):
    config.json          resolved config, fingerprint, versions (written once; resume checks it)
    sessions.jsonl       one line per start: time, command, processes, items done before
    parts/part-RRR.jsonl rows of process RRR, appended, flushed and fsynced as galleries finish
    rows.jsonl           all rows in item order, merged from the parts at the end of a run
    grids/MODEL/pPPPPP_sSEED/COUPLING.png   gallery grids of the first ``grids`` prompts per model
    images/MODEL/pPPPPP_sSEED/COUPLING/K.png  every image, when ``save_images``
    report/              tables and figures (eval.report)

Every gallery's noise depends only on its seed (config.seeds_for(prompt index)), shared by all
couplings, so couplings are compared on paired data and a run on N processes writes the same rows
as one. Resume: finished rows are read back (a torn last line from a kill is dropped), only the
missing items run; a config whose fingerprint differs from config.json is refused.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from couplednoise.eval.batch.config import LAB_METRIC, LAB_VALUES, BatchConfig, ModelSpec
from couplednoise.eval.runs.atomic import write_text
from couplednoise.eval.runs.galleries import slug
from couplednoise.pipelines.provenance import versions

TIMING_KEY = "timing"  # row fields that differ between identical runs (durations, rank, time)


@dataclass(frozen=True)
class Item:
    """One gallery to generate and score."""

    index: int  # position in the run's item order
    model: ModelSpec
    prompt_index: int
    prompt: str
    seed: int
    coupling: str
    method: str = "plain"

    @property
    def id(self) -> str:
        """model|prompt|seed|coupling (|method when not plain: older runs keep their ids)."""
        suffix = "" if self.method == "plain" else f"|{self.method}"
        return f"{self.model.name}|p{self.prompt_index}|s{self.seed}|{self.coupling}{suffix}"

    @property
    def arm(self) -> str:
        """What a report compares: the coupling, and the gallery method when it is not plain."""
        return self.coupling if self.method == "plain" else f"{self.coupling} + {self.method}"

    @property
    def folder(self) -> Path:
        """Relative folder of this item's (prompt, seed) group, e.g. lab/p00003_s3."""
        return Path(slug(self.model.name)) / f"p{self.prompt_index:05d}_s{self.seed}"


def build_items(config: BatchConfig) -> list[Item]:
    """All items, model-major, then prompt, seed, coupling, method (one seed: paired arms)."""
    items = []
    for model in config.models:
        for prompt_index, prompt in config.prompts:
            for seed in config.seeds_for(prompt_index):
                for coupling in config.couplings:
                    for method in config.methods:
                        items.append(
                            Item(len(items), model, prompt_index, prompt, seed, coupling, method)
                        )
    return items


def grid_items(config: BatchConfig, items: list[Item]) -> set[str]:
    """Ids of the items whose gallery grid is saved: the first ``grids`` prompts of each model."""
    chosen = {p for p, _ in config.prompts[: config.grids]}
    return {
        i.id
        for i in items
        if i.prompt_index in chosen and i.seed == config.seeds_for(i.prompt_index)[0]
    }


# ---------------------------------------------------------------- rows on disk


def part_path(out: Path, rank: int) -> Path:
    return out / "parts" / f"part-{rank:03d}.jsonl"


def read_jsonl(path: Path, *, repair: bool = False) -> list[dict]:
    """Rows of a JSONL file; a torn last line (kill -9, power loss) is dropped.

    With ``repair`` the file is truncated after its last complete row, so appending continues on
    a clean line. A broken line before the last one is a ValueError (the file was edited).
    """
    if not path.is_file():
        return []
    data = path.read_bytes()
    good_bytes = data.rfind(b"\n") + 1  # a last line without newline is torn: dropped
    lines = data[:good_bytes].split(b"\n")[:-1]
    rows, offset = [], 0
    for number, line in enumerate(lines):
        if line.strip(b"\0 \r\t"):
            try:
                rows.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                if number < len(lines) - 1:
                    raise ValueError(f"{path}: line {number + 1} is not a JSON row") from error
                good_bytes = offset  # a garbled last line (power loss): dropped
        offset += len(line) + 1
    if repair and good_bytes != len(data):
        with path.open("r+b") as file:
            file.truncate(good_bytes)
            os.fsync(file.fileno())
    return rows


def read_rows(out: Path) -> list[dict]:
    """Every finished row of a run (merged rows.jsonl and the part files), each id once."""
    rows: dict[str, dict] = {}
    sources = [out / "rows.jsonl", *sorted((out / "parts").glob("part-*.jsonl"))]
    for path in sources:
        for row in read_jsonl(path):
            rows.setdefault(row["id"], row)
    return list(rows.values())


def append_row(file, row: dict) -> None:
    """One JSON line, flushed and fsynced: a finished gallery survives a crash right after."""
    file.write((json.dumps(row, sort_keys=True) + "\n").encode())
    file.flush()
    os.fsync(file.fileno())


def merge_rows(out: Path, items: list[Item]) -> list[dict]:
    """Write rows.jsonl: the finished rows in item order (atomic); returns them."""
    order = {item.id: item.index for item in items}
    rows = sorted((r for r in read_rows(out) if r["id"] in order), key=lambda r: order[r["id"]])
    for row in rows:  # an extended run's items are re-numbered: rows follow the current order
        row["index"] = order[row["id"]]
    write_text(out / "rows.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows


# ---------------------------------------------------------------- run folder and fingerprint


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{where}.{k}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{where}.{i}")
        ]
    if isinstance(old, list) and isinstance(new, list) and old != new:
        return [f"{where.lstrip('.')}: {len(old)} entries -> {len(new)} entries"]
    if old != new:
        shown = [json.dumps(v)[:60] for v in (old, new)]
        return [f"{where.lstrip('.')}: {shown[0]} -> {shown[1]}"]
    return []


def extension_problems(stored: dict, new: dict) -> list[str]:
    """Why the sections ``new`` do not merely add couplings or models to ``stored`` ([] if they
    do). Rows are keyed by model, prompt, seed and coupling, so an extended run keeps every
    stored row valid only when prompts, seeds, gallery size, metrics and the stored models'
    settings are unchanged."""
    problems = [
        d
        for key in ("prompts", "generation", "metrics")
        for d in _differences(stored.get(key), new.get(key), key)
    ]
    problems += [
        f"models: {m['name']!r} changed or removed"
        for m in stored.get("models", [])
        if m not in new["models"]
    ]
    problems += [
        f"couplings: {c!r} removed"
        for c in stored.get("couplings", [])
        if c not in new["couplings"]
    ]
    return problems


def check_compatible(out: Path, config: BatchConfig) -> dict | None:
    """The stored config.json of ``out`` (None if new); ValueError if its results would not mix.

    ``out`` must be new, empty, or a batch run. A config that only adds couplings or models
    extends the run: the stored dict is returned with ``"extends": True`` and the missing items
    run on the next call of ``run_batch``. A run that holds no finished row yet (a start that
    failed) takes any corrected config: ``"replaces": True``.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    path = out / "config.json"
    if not path.is_file():
        if (out / "parts").is_dir() or (out / "rows.jsonl").is_file():
            raise ValueError(f"{out} holds rows but no config.json: use a new output folder")
        if out.is_dir() and any(out.iterdir()):
            raise ValueError(
                f"output folder {out} is not empty and holds no batch run (no config.json): "
                "choose a new or empty folder (output.dir / --output)"
            )
        return None
    from couplednoise.eval.runs.folders import run_kind

    if run_kind(out) != "eval":
        raise ValueError(
            f"output folder {out} holds a {run_kind(out) or 'foreign'} config.json, not a batch "
            "run: choose a new or empty folder (output.dir / --output)"
        )
    stored = json.loads(path.read_text())
    if stored.get("fingerprint") == config.fingerprint():
        return stored
    sections = json.loads(json.dumps(config.fingerprint_sections()))  # tuples -> lists
    if not extension_problems(stored.get("sections", {}), sections):
        return {**stored, "extends": True}
    if not read_rows(out):
        return {**stored, "replaces": True}
    changes = _differences(stored.get("sections", {}), sections)
    raise ValueError(
        f"{out} holds a run with a different config; resuming would mix incompatible rows. "
        f"Changed: {'; '.join(changes[:8])}{' ...' if len(changes) > 8 else ''}. "
        "Restore the config to resume, or set another output folder (output.dir / --output); "
        "adding couplings or models to a run is allowed."
    )


def write_run_config(
    out: Path, config: BatchConfig, n_items: int, extended: dict | None = None
) -> None:
    """config.json of the run; ``extended``: the stored config this one adds couplings or models
    to (its fingerprints are kept under ``extended_from``)."""
    data = {
        "fingerprint": config.fingerprint(),
        "sections": config.fingerprint_sections(),
        "config": config.to_json(),
        "items": n_items,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if extended is not None:
        data["created"] = extended.get("created", data["created"])
        data["extended"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        data["extended_from"] = [*extended.get("extended_from", []), extended["fingerprint"]]
    write_text(out / "config.json", json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------- generation and scoring


class Runner:
    """Generates, scores and records the items of one process (backbones loaded once)."""

    def __init__(self, config: BatchConfig, device, items: list[Item], rank: int):
        from couplednoise.eval.backbones.loading import Backbones, plan_backbones_for
        from couplednoise.eval.metrics.registry import check_metric_names
        from couplednoise.pipelines.loading import DTYPES

        self.config = config
        self.device = device
        self.rank = rank
        self.out = config.output
        self.grid_ids = grid_items(config, items)
        spec = config.metrics
        self.metric_names = [n for n in spec.names if n != LAB_METRIC]
        plan = plan_backbones_for(self.metric_names, spec, spec.lpips_trunks)
        self.backbones = Backbones.load(
            **plan,
            device=device,
            dtype=DTYPES[spec.dtype],
            random_weights=spec.random_weights,
        )
        check_metric_names(self.metric_names, self.backbones, with_prompt=True)
        self.pipe = None
        self.family = None

    def load_model(self, model: ModelSpec) -> None:
        from couplednoise.pipelines.loading import detect_family, load_pipeline

        self.pipe = load_pipeline(model.path, device=self.device, dtype=model.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.family = detect_family(self.pipe)

    def generate(self, item: Item):
        """The item's gallery (images [K, 3, H, W] in [0, 1] on the CPU) and its duration."""
        from couplednoise.pipelines.generation import generate_gallery

        model = item.model
        options = {
            "num_inference_steps": model.steps,
            "guidance_scale": model.guidance,
            "negative_prompt": model.negative_prompt,
            "height": model.height,
            "width": model.width,
        }
        start = time.perf_counter()
        gallery = generate_gallery(
            self.pipe,
            item.prompt,
            item.coupling,
            num_images=self.config.num_images,
            seed=item.seed,
            method=item.method,
            **{k: v for k, v in options.items() if v is not None},
        )
        return gallery, time.perf_counter() - start

    def score(self, item: Item, images) -> dict[str, float]:
        from couplednoise.eval.metrics.registry import gallery_metrics

        spec = self.config.metrics
        values = (
            gallery_metrics(
                images.to(self.device),
                backbones=self.backbones,
                metrics=self.metric_names,
                prompt=item.prompt,
                vendi_q=spec.vendi_q,
                batch_size=spec.batch_size,
            )
            if self.metric_names
            else {}
        )
        if LAB_METRIC in spec.names:
            from couplednoise.pipelines.lab.readout import gallery_readout

            summary = gallery_readout(images, item.prompt, self.pipe.world).summary()
            values.update({name: summary[name[len("lab_") :]] for name in LAB_VALUES})
        return values

    def save_files(self, item: Item, images) -> dict[str, Any]:
        """The item's grid (when sampled) and images (when ``save_images``): relative paths."""
        from couplednoise.eval.runs.images import image_grid, save_image, save_png

        files: dict[str, Any] = {}
        name = slug(item.arm)
        if item.id in self.grid_ids:
            files["grid"] = str(Path("grids") / item.folder / f"{name}.png")
            save_image(image_grid([images]), self.out / files["grid"])
        if self.config.save_images:
            folder = Path("images") / item.folder / name
            files["images"] = [str(folder / f"{k}.png") for k in range(images.shape[0])]
            for image, path in zip(images, files["images"]):
                save_png(image, self.out / path)
        return files

    def score_and_record(self, item: Item, gallery, generate_s: float, file) -> None:
        """Score, save files and append the item's row."""
        start = time.perf_counter()
        metrics = self.score(item, gallery.images)
        files = self.save_files(item, gallery.images)
        model = item.model
        gallery_info = json.loads(json.dumps(gallery.metadata, default=str, sort_keys=True))
        device = gallery_info.pop("device", None)  # differs between ranks (cuda:0, cuda:1)
        scheduler = gallery_info.get("scheduler_config", {})
        for key in [k for k in scheduler if k.startswith("_")]:  # diffusers' bookkeeping, a set
            del scheduler[key]
        row = {
            "id": item.id,
            "index": item.index,
            "model": model.name,
            "model_path": model.path,
            "family": self.family,
            "prompt_index": item.prompt_index,
            "prompt": item.prompt,
            "seed": item.seed,
            "coupling": item.coupling,
            **({"method": item.method} if item.method != "plain" else {}),
            "num_images": int(gallery.images.shape[0]),
            "settings": {
                "steps": model.steps,
                "guidance": model.guidance,
                "height": model.height,
                "width": model.width,
                "dtype": model.dtype,
                "negative_prompt": model.negative_prompt,
            },
            "gallery": gallery_info,
            "metrics": metrics,
            "files": files,
            TIMING_KEY: {
                "generate_s": round(generate_s, 4),
                "score_s": round(time.perf_counter() - start, 4),
                "rank": self.rank,
                "device": device,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        }
        append_row(file, row)


# ---------------------------------------------------------------- the run


def run_batch(config: BatchConfig, *, progress: bool = True) -> dict[str, int]:
    """Run (or resume) ``config`` on this process group; returns item counts.

    Call it on every process of an ``accelerate launch`` / ``torchrun`` group (or alone): items are
    split between processes per model, each process appends its rows to its own part file, and
    the main process merges them into rows.jsonl (and builds the report) at the end.
    """
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    state = PartialState(cpu=not torch.cuda.is_available())
    out = config.output
    items = build_items(config)
    stored = check_compatible(out, config)  # every process raises the same error before work
    state.wait_for_everyone()  # every process has read the stored config before it changes
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if stored is None or stored.get("replaces"):
            write_run_config(out, config, len(items))
        elif stored.get("extends"):
            write_run_config(out, config, len(items), extended=stored)
        for path in sorted((out / "parts").glob("part-*.jsonl")):
            read_jsonl(path, repair=True)
    state.wait_for_everyone()
    done = {row["id"] for row in read_rows(out)}
    state.wait_for_everyone()  # every process has the same snapshot before any row is written

    shares = []
    for model in config.models:
        pending = [i for i in items if i.model == model and i.id not in done]
        with state.split_between_processes(pending) as mine:
            shares.append((model, list(mine)))
    if state.is_main_process:
        session = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv,
            "host": socket.gethostname(),
            "processes": state.num_processes,
            "items": len(items),
            "done_before": len(done),
        }
        with (out / "sessions.jsonl").open("a") as file:
            file.write(json.dumps(session) + "\n")

    computed = sum(len(mine) for _, mine in shares)
    if computed:
        _run_share(config, state, items, shares, progress, tqdm)
    state.wait_for_everyone()
    if state.is_main_process:
        rows = merge_rows(out, items)
        if config.report and rows:
            from couplednoise.eval.batch.report import build_report

            build_report(out)
    state.wait_for_everyone()
    return {"items": len(items), "done_before": len(done), "computed_here": computed}


def _run_share(config, state, items, shares, progress, tqdm) -> None:
    runner = Runner(config, state.device, items, state.process_index)
    path = part_path(config.output, state.process_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=sum(len(mine) for _, mine in shares),
        desc=f"galleries (process 1 of {state.num_processes})",
        unit="gallery",
        disable=not (progress and state.is_main_process),
        dynamic_ncols=True,
    )
    # Scoring (and writing) item i on a worker thread while item i + 1 generates overlaps the
    # two where the device and the GIL allow it; at most one item is in flight. By default on
    # CUDA only: on CPU both halves compete for the same cores (bench/bench_batch.py).
    overlap = config.overlap if config.overlap is not None else state.device.type == "cuda"
    pool = ThreadPoolExecutor(max_workers=1) if overlap else None
    with path.open("ab") as file, bar:
        for model, mine in shares:
            if not mine:
                continue
            runner.load_model(model)
            in_flight: Future | None = None
            for item in mine:
                gallery, seconds = runner.generate(item)
                if pool is None:
                    runner.score_and_record(item, gallery, seconds, file)
                    bar.update()
                    continue
                if in_flight is not None:
                    in_flight.result()
                    bar.update()
                in_flight = pool.submit(runner.score_and_record, item, gallery, seconds, file)
            if in_flight is not None:
                in_flight.result()
                bar.update()
    if pool is not None:
        pool.shutdown()
