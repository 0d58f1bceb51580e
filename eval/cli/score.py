"""Score folders of galleries: diversity and alignment metrics into metrics.json / .csv / .md.

    couplednoise score RUN_DIR [--metrics l2,ms_ssim,lpips_alex,vendi_clip,clip_score] [--out DIR]

RUN_DIR is a run written by ``couplednoise generate`` (galleries.json) or any folder of image
folders (one gallery per folder; prompt from prompt.txt, else the folder name). A gallery that
cannot be scored (unreadable image, empty, fewer than 2 images) is reported and skipped; the
exit code is then 1. Missing backbone weights stop the command before any scoring (exit 2).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import tempfile
from pathlib import Path

from couplednoise.eval.backbones.defaults import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_CLIP_PRETRAINED,
    DEFAULT_DINO,
    DEFAULT_PICKSCORE,
)

DEFAULT_METRICS = "l2,ms_ssim,vendi_pixel,lpips_alex,vendi_clip,clip_distance,clip_score"
DTYPES = ("float32", "float16", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``score`` subcommand's options."""
    parser.add_argument("run_dir", type=Path, help="run folder (galleries.json) or image folders")
    parser.add_argument("--out", type=Path, help="where metrics.json/.csv/.md go (default RUN_DIR)")
    parser.add_argument(
        "--metrics",
        default=DEFAULT_METRICS,
        help=f"comma-separated metric names (default {DEFAULT_METRICS}); weight-free: "
        "l2,ms_ssim,vendi_pixel; also lpips_vgg, vendi_dino, dino_distance, pickscore",
    )
    parser.add_argument("--clip-model", default=DEFAULT_CLIP_MODEL, help="open_clip model name")
    parser.add_argument(
        "--clip-pretrained",
        default=DEFAULT_CLIP_PRETRAINED,
        help="open_clip pretrained tag or checkpoint file",
    )
    parser.add_argument("--dino", default=DEFAULT_DINO, help="DINOv2 hub id or local folder")
    parser.add_argument(
        "--pickscore", default=DEFAULT_PICKSCORE, help="PickScore hub id or local folder"
    )
    parser.add_argument(
        "--lpips-trunk",
        action="append",
        default=[],
        metavar="NET=PATH",
        help="torchvision trunk weights file for an LPIPS net, e.g. alex=alexnet-owt-7be5be79.pth",
    )
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="backbone dtype")
    parser.add_argument("--batch-size", type=int, default=16, help="images per backbone call")
    parser.add_argument("--vendi-q", type=float, default=1.0, help="Vendi order q (inf allowed)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random backbone weights (tests and smoke runs only; numbers are meaningless)",
    )


def _backbone_plan(metrics: list[str], args: argparse.Namespace) -> dict:
    """Which backbones the metrics need: keyword arguments for ``Backbones.load``."""
    trunks = {}
    for item in args.lpips_trunk:
        net, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--lpips-trunk expects NET=PATH, got {item!r}")
        trunks[net] = path
    needs_clip = any(m in ("vendi_clip", "clip_distance", "clip_score") for m in metrics)
    return {
        "lpips": tuple(m[len("lpips_") :] for m in metrics if m.startswith("lpips_")),
        "clip": (args.clip_model, args.clip_pretrained) if needs_clip else None,
        "dino": args.dino if any(m in ("vendi_dino", "dino_distance") for m in metrics) else None,
        "pickscore": args.pickscore if "pickscore" in metrics else None,
        "lpips_trunks": trunks,
    }


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def _means(rows: list[dict], metrics: list[str]) -> dict[str, float]:
    return {
        m: sum(r["metrics"][m] for r in rows) / len(rows)
        for m in metrics
        if rows and all(m in r["metrics"] for r in rows)
    }


def summarize(rows: list[dict], metrics: list[str]) -> dict:
    """Means over galleries, overall and per coupling (when galleries name one)."""
    summary = {"all": _means(rows, metrics), "by_coupling": {}}
    couplings = sorted({str(r["coupling"]) for r in rows if r.get("coupling") is not None})
    for coupling in couplings:
        group = [r for r in rows if str(r.get("coupling")) == coupling]
        summary["by_coupling"][coupling] = _means(group, metrics)
    return summary


def markdown_table(rows: list[dict], summary: dict, metrics: list[str]) -> str:
    """Per-gallery rows, then the means, as a Markdown table."""
    header = ["gallery", "coupling", "n", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [f"{row['metrics'][m]:.4g}" for m in metrics]
        cells = [row["id"], str(row.get("coupling") or ""), str(row["n_images"]), *values]
        lines.append("| " + " | ".join(cells) + " |")
    groups = [("**mean**", summary["all"])]
    groups += [(f"**mean {c}**", v) for c, v in summary["by_coupling"].items()]
    for label, means in groups:
        cells = [label, "", "", *(f"{means[m]:.4g}" if m in means else "" for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict], metrics: list[str]) -> str:
    """One CSV row per scored gallery."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["gallery", "prompt", "coupling", "seed", "n_images", *metrics])
    for row in rows:
        writer.writerow(
            [row["id"], row["prompt"], row.get("coupling"), row.get("seed"), row["n_images"]]
            + [row["metrics"][m] for m in metrics]
        )
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    """Score every gallery of ``args.run_dir``; 0 = all scored, 1 = some failed, 2 = nothing ran."""
    import torch
    from tqdm import tqdm

    from couplednoise.eval.backbones.loading import Backbones, MissingWeightsError
    from couplednoise.eval.metrics.registry import METRICS, check_metric_names, gallery_metrics
    from couplednoise.eval.runs.galleries import find_galleries, load_gallery
    from couplednoise.pipelines.provenance import versions

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        if not metrics:
            raise ValueError("--metrics is empty")
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        plan = _backbone_plan(metrics, args)
        galleries = find_galleries(args.run_dir)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    try:
        backbones = Backbones.load(
            **plan, device=device, dtype=dtype, random_weights=args.random_weights
        )
        check_metric_names(metrics, backbones, with_prompt=True)
    except (ValueError, MissingWeightsError) as error:
        print(f"error: {error}")
        return 2
    if args.random_weights:
        print("warning: --random-weights: backbones are random, the numbers are meaningless")

    rows, failed = [], []
    for source in tqdm(galleries, desc="scoring galleries", unit="gallery"):
        try:
            images = load_gallery(source)
            if images.shape[0] < 2:
                raise ValueError(f"needs at least 2 images to measure diversity, has {len(images)}")
            values = gallery_metrics(
                images.to(device),
                backbones=backbones,
                metrics=metrics,
                prompt=source.prompt,
                vendi_q=args.vendi_q,
                batch_size=args.batch_size,
            )
        except (ValueError, OSError) as error:
            tqdm.write(f"error: gallery {source.id!r}: {error}")
            failed.append({"id": source.id, "error": str(error)})
            continue
        row = {"id": source.id, "prompt": source.prompt, "n_images": int(images.shape[0])}
        rows.append({**row, **source.info, "metrics": values})

    summary = summarize(rows, metrics)
    out = args.out or args.run_dir
    backbone_names = {
        "lpips": list(backbones.lpips),
        "clip": backbones.clip.name if backbones.clip else None,
        "dino": backbones.dino.name if backbones.dino else None,
        "pickscore": backbones.pickscore.name if backbones.pickscore else None,
    }
    config = {
        "run_dir": str(args.run_dir),
        "metrics": metrics,
        "backbones": backbone_names,
        "random_weights": args.random_weights,
        "device": device,
        "dtype": args.dtype,
        "vendi_q": args.vendi_q,
        "versions": versions(),
    }
    report = {"config": config, "galleries": rows, "summary": summary, "failed": failed}
    table = markdown_table(rows, summary, metrics)
    _write_atomic(out / "metrics.json", json.dumps(report, indent=2, default=str) + "\n")
    _write_atomic(out / "metrics.csv", csv_table(rows, metrics))
    _write_atomic(out / "metrics.md", table)
    print(table)
    print(f"scored {len(rows)} of {len(galleries)} galleries -> {out / 'metrics.json'}")
    if failed:
        print(f"{len(failed)} galleries failed: {', '.join(f['id'] for f in failed)}")
    return 1 if failed else 0
