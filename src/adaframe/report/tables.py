"""Result tables as plain aligned text (printed) and as Markdown (report.md, table.md)."""

from __future__ import annotations

import math


def format_cell(v: object) -> str:
    """A table cell: floats with 2 decimals (NaN as 'n/a'), None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def format_table(header: list[str], rows: list[list[object]]) -> str:
    """Plain aligned text: numeric columns right-aligned, cells as ``format_cell``."""
    cells = [[format_cell(v) for v in r] for r in rows]
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) for i in range(len(header))]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table: columns of text left-aligned, the others right-aligned, cells as ``format_cell``."""
    align = ["---" if all(isinstance(r[i], str) for r in rows) else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(format_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
