"""Numbers and tables as the command lines print them: aligned text, markdown and CSV.

Torch-free, shared by ``scaling`` (plan, report, model) and ``runs`` (the run listing).
"""

from __future__ import annotations

import csv
import io
from typing import Optional


def fmt(value: Optional[float], digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def text_table(rows: list[tuple]) -> str:
    """Rows (the first one the header) as columns aligned by padding, two spaces apart."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def csv_text(header: list[str], body: list[list]) -> str:
    """CSV with a header line; None as an empty field, floats in full (``repr``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in body:
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v
                         for v in row])
    return buffer.getvalue()
