"""Tables and figures from a batch run's rows (finished or still running).

    build_report("runs/sd15_coco")   # -> runs/sd15_coco/report/{summary.md, summary.csv, *.png}

Statistics: the unit is the prompt. A metric's galleries of one prompt (its seeds) are averaged
first, then the mean over prompts gets a 95% Student-t interval. The paired difference to the
reference coupling (independent by default) is taken per (prompt, seed), where both galleries
share their seed, averaged per prompt, and gets the same interval: paired data give much tighter
intervals than comparing two means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from couplednoise.eval.batch.run import read_rows
from couplednoise.eval.runs.atomic import save_figure, write_text
from couplednoise.eval.runs.galleries import slug
from couplednoise.eval.runs.stats import mean_ci
from couplednoise.eval.runs.tables import csv_text, format_ci, markdown_table

# Axes of the diversity-vs-alignment figure: the first metric present of each list.
DIVERSITY_AXIS = (
    "lab_scene_cov",
    "vendi_clip",
    "lpips_alex",
    "lpips_vgg",
    "vendi_dino",
    "clip_distance",
    "dino_distance",
    "vendi_pixel",
    "l2",
)
ALIGNMENT_AXIS = ("lab_alignment", "clip_score", "pickscore")


def metric_names(rows: list[dict]) -> list[str]:
    """Metrics present in the rows: eval.gallery.METRICS order, then lab readout, then others."""
    from couplednoise.eval.metrics.registry import METRICS

    present = {name for row in rows for name in row["metrics"]}
    ordered = [m for m in METRICS if m in present]
    return ordered + sorted(present - set(ordered))


def _per_prompt(values: dict[tuple[int, int], float]) -> list[float]:
    """Values keyed by (prompt, seed) -> one mean per prompt (prompt order)."""
    by_prompt: dict[int, list[float]] = defaultdict(list)
    for (prompt, _), value in sorted(values.items()):
        by_prompt[prompt].append(value)
    return [sum(v) / len(v) for v in by_prompt.values()]


def arm(row: dict) -> str:
    """What a row's gallery is compared as: its coupling, plus its method when not plain."""
    method = row.get("method", "plain")
    return row["coupling"] if method == "plain" else f"{row['coupling']} + {method}"


def summarise(rows: list[dict], reference: str | None) -> list[dict]:
    """One record per (model, coupling, metric): mean and CI, and the paired difference to
    ``reference`` with its CI (None for the reference itself or without one)."""
    table: dict[tuple[str, str, str], dict[tuple[int, int], float]] = defaultdict(dict)
    couplings: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if arm(row) not in couplings[row["model"]]:
            couplings[row["model"]].append(arm(row))
        for name, value in row["metrics"].items():
            table[row["model"], arm(row), name][row["prompt_index"], row["seed"]] = value
    records = []
    for model, model_couplings in couplings.items():
        for coupling in model_couplings:
            for name in metric_names(rows):
                values = table.get((model, coupling, name))
                if not values:
                    continue
                mean, low, high = mean_ci(_per_prompt(values))
                record = {
                    "model": model,
                    "coupling": coupling,
                    "metric": name,
                    "prompts": len({p for p, _ in values}),
                    "galleries": len(values),
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "diff": None,
                    "diff_low": None,
                    "diff_high": None,
                    "pairs": 0,
                }
                base = table.get((model, reference, name)) if reference else None
                if base and coupling != reference:
                    diffs = {key: values[key] - base[key] for key in values if key in base}
                    if diffs:
                        diff, diff_low, diff_high = mean_ci(_per_prompt(diffs))
                        record.update(
                            diff=diff, diff_low=diff_low, diff_high=diff_high, pairs=len(diffs)
                        )
                records.append(record)
    return records


def _header(name: str) -> str:
    from couplednoise.eval.metrics.registry import LOWER_IS_MORE_DIVERSE

    return f"{name} (↓ = more diverse)" if name in LOWER_IS_MORE_DIVERSE else name


def markdown_summary(records: list[dict], reference: str | None, status: str) -> str:
    """Per model: means with 95% CIs per coupling, then paired differences to ``reference``."""
    lines = ["# Batch report", "", status, ""]
    lines.append(
        "Mean over prompts [95% CI]; galleries of one prompt (its seeds) are averaged first. "
        "Δ: paired difference to the reference coupling on the same prompts and seeds; "
        "* marks an interval that excludes 0."
    )
    for model in dict.fromkeys(r["model"] for r in records):
        rows = [r for r in records if r["model"] == model]
        metrics = list(dict.fromkeys(r["metric"] for r in rows))
        couplings = list(dict.fromkeys(r["coupling"] for r in rows))
        cell = {(r["coupling"], r["metric"]): r for r in rows}
        means = []
        for coupling in couplings:
            first = next(r for r in rows if r["coupling"] == coupling)
            cells = [
                format_ci(c["mean"], c["ci_low"], c["ci_high"])
                if (c := cell.get((coupling, m)))
                else ""
                for m in metrics
            ]
            means.append([coupling, first["prompts"], first["galleries"], *cells])
        headers = ["coupling", "prompts", "galleries", *(_header(m) for m in metrics)]
        lines += ["", f"## {model}", "", markdown_table(headers, means)]
        diffs = [c for c in couplings if any(cell.get((c, m), {}).get("pairs") for m in metrics)]
        if reference and diffs:
            table = []
            for coupling in diffs:
                cells, pairs = [], 0
                for m in metrics:
                    c = cell.get((coupling, m))
                    if not c or not c["pairs"]:
                        cells.append("")
                        continue
                    pairs = max(pairs, c["pairs"])
                    low, high = c["diff_low"], c["diff_high"]
                    star = " *" if not math.isnan(low) and (low > 0 or high < 0) else ""
                    cells.append(format_ci(c["diff"], low, high) + star)
                table.append([coupling, pairs, *cells])
            lines += [
                "",
                f"Paired difference to {reference} (Δ [95% CI]):",
                "",
                markdown_table(["coupling", "pairs", *metrics], table),
            ]
    return "\n".join(lines) + "\n"


def csv_summary(records: list[dict]) -> str:
    """The records as CSV, one row per (model, coupling, metric)."""
    return csv_text(records, list(records[0]) if records else ["model"])


def stored_config(run_dir: Path) -> dict | None:
    """The batch run's config.json (None without one); ValueError if it is not a batch run's."""
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    from couplednoise.pipelines.loading import read_json

    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f"{path} is not the config.json of a batch run (couplednoise eval)")
    return data


def run_status(run_dir: Path, rows: list[dict]) -> str:
    """'N of M galleries' and whether the run is still in progress (from config.json)."""
    stored = stored_config(run_dir)
    total = stored.get("items") if stored is not None else None
    if total is None:
        return f"{len(rows)} galleries (no config.json: total unknown)."
    state = "complete" if len(rows) >= total else "in progress (or interrupted)"
    return f"{len(rows)} of {total} galleries: run {state}."


def _error_bars(records: list[dict]) -> list[list[float]]:
    low = [r["mean"] - r["ci_low"] if not math.isnan(r["ci_low"]) else 0.0 for r in records]
    high = [r["ci_high"] - r["mean"] if not math.isnan(r["ci_high"]) else 0.0 for r in records]
    return [low, high]


def metric_bars(records: list[dict], model: str, path: Path) -> Path:
    """Bars of every metric's mean per coupling with 95% CIs, one panel per metric."""
    import matplotlib.pyplot as plt

    rows = [r for r in records if r["model"] == model]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    columns = min(4, len(metrics))
    lines = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.8 * lines), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        part = [r for r in rows if r["metric"] == metric]
        ax.bar(
            range(len(part)),
            [r["mean"] for r in part],
            yerr=_error_bars(part),
            capsize=3,
            color=[f"C{i}" for i in range(len(part))],
        )
        ax.set_xticks(
            range(len(part)), [r["coupling"] for r in part], rotation=30, ha="right", fontsize=7
        )
        ax.set_title(_header(metric), fontsize=9)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    figure.suptitle(f"{model}: mean and 95% CI over prompts", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
    return path


def tradeoff_plot(records: list[dict], model: str, path: Path) -> Path | None:
    """Diversity (x) vs alignment (y) per coupling with 95% CIs; None without both metrics."""
    import matplotlib.pyplot as plt

    rows = [r for r in records if r["model"] == model]
    present = {r["metric"] for r in rows}
    x_name = next((m for m in DIVERSITY_AXIS if m in present), None)
    y_name = next((m for m in ALIGNMENT_AXIS if m in present), None)
    if x_name is None or y_name is None:
        return None
    figure, ax = plt.subplots(figsize=(5, 4))
    couplings = list(dict.fromkeys(r["coupling"] for r in rows))
    for i, coupling in enumerate(couplings):
        x = next(r for r in rows if r["coupling"] == coupling and r["metric"] == x_name)
        y = next(r for r in rows if r["coupling"] == coupling and r["metric"] == y_name)
        ax.errorbar(
            [x["mean"]],
            [y["mean"]],
            xerr=[[e[0]] for e in _error_bars([x])],
            yerr=[[e[0]] for e in _error_bars([y])],
            fmt="o",
            capsize=3,
            color=f"C{i}",
            label=coupling,
        )
    ax.set_xlabel(_header(x_name))
    ax.set_ylabel(y_name)
    ax.set_title(f"{model}: diversity vs alignment (95% CI)", fontsize=10)
    ax.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
    return path


def gallery_figures(run_dir: Path, rows: list[dict], out: Path, max_grids: int) -> list[Path]:
    """Per sampled (model, prompt, seed): its couplings' saved grids stacked, labelled."""
    from PIL import Image

    from couplednoise.eval.runs.images import enlarge, image_grid, save_image
    from couplednoise.pipelines.images import from_pil

    groups: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["index"]):
        grid = row.get("files", {}).get("grid")
        if grid and (run_dir / grid).is_file():
            groups[row["model"], row["prompt_index"], row["seed"]].append(row)
    written = []
    per_model: dict[str, int] = defaultdict(int)
    for (model, prompt_index, seed), members in groups.items():
        if per_model[model] >= max_grids:
            continue
        per_model[model] += 1
        images = [enlarge(from_pil(Image.open(run_dir / r["files"]["grid"])), 128) for r in members]
        width = max(i.shape[-1] for i in images)
        rows_ = [_pad_width(i, width)[None] for i in images]
        labels = [arm(r) for r in members]
        labels[0] += f"  |  {members[0]['prompt'][:70]}  (seed {seed})"
        path = out / f"gallery_{slug(model)}_p{prompt_index:05d}_s{seed}.png"
        save_image(image_grid(rows_, labels=labels), path)
        written.append(path)
    return written


def _pad_width(image, width: int):
    """[3, H, W] padded with white on the right to ``width`` (grids of different K line up)."""
    import torch

    return torch.nn.functional.pad(image, (0, width - image.shape[-1]), value=1.0)


def build_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    reference: str | None = None,
    max_grids: int = 4,
) -> Path:
    """Write summary.md, summary.csv and figures for ``run_dir`` into ``out`` (run_dir/report).

    ``reference`` defaults to the run's configured reference coupling. Works while the run is
    still writing rows: it reads the part files and drops a torn last line.
    """
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report"
    rows = read_rows(run_dir)
    if not rows:
        raise ValueError(f"{run_dir} has no finished rows yet (rows.jsonl or parts/*.jsonl)")
    if reference is None:
        stored = stored_config(run_dir)
        if stored is not None:
            reference = stored["config"].get("reference")
    records = summarise(rows, reference)
    status = run_status(run_dir, rows)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "summary.md", markdown_summary(records, reference, status))
    write_text(out / "summary.csv", csv_summary(records))
    for model in dict.fromkeys(r["model"] for r in records):
        metric_bars(records, model, out / f"metrics_{slug(model)}.png")
        tradeoff_plot(records, model, out / f"tradeoff_{slug(model)}.png")
    gallery_figures(run_dir, rows, out, max_grids)
    return out
