"""What the benchmarks share: percentiles, Markdown tables, the results directory."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from app.database import embedded


def results_dir() -> Path:
    """`bench-results/` at the project root (created on demand)."""
    directory = embedded.project_root() / "bench-results"
    directory.mkdir(exist_ok=True)
    return directory


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (0.5 = median) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(fraction * 100) - 1]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded for reading in a terminal."""
    cells = [[str(cell) for cell in header], *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
