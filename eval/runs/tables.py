"""Tables for reports: Markdown and CSV from rows of cells (one writer for every command).

markdown_table(["coupling", "L2"], [["independent", "35.3"], ["repulsive", "41.2"]])
csv_text([{"coupling": "independent", "l2": 35.3}])      # columns: the keys, in first-seen order
format_ci(0.79, 0.77, 0.81) -> "0.79 [0.77, 0.81]";  format_pm(0.79, 0.02) -> "0.790 ± 0.020"
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table (no trailing newline); cells are str()-ed, '|' escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"table row has {len(row)} cells for {len(headers)} columns")
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines)


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV with a header; ``columns`` default to every key of the rows in first-seen order."""
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def format_number(value: float | None, digits: int = 4) -> str:
    """``digits`` significant digits; "–" for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}"


def format_ci(mean: float | None, low: float | None, high: float | None) -> str:
    """ "mean [low, high]" (just the mean when the interval is unknown)."""
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return format_number(mean)
    return f"{format_number(mean)} [{format_number(low)}, {format_number(high)}]"


def format_pm(mean: float, half: float, decimals: int = 3, signed: bool = False) -> str:
    """ "mean ± half" with fixed decimals (``signed``: a leading + for differences)."""
    sign = "+" if signed else ""
    if isinstance(half, float) and math.isnan(half):
        return f"{mean:{sign}.{decimals}f}"
    return f"{mean:{sign}.{decimals}f} ± {half:.{decimals}f}"
