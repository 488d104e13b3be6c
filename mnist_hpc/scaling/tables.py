"""Numbers and tables as the plan, the report and the model print them: the generic ones
live in ``mnist_hpc.tables`` (the run listing prints them too); batch sizes are scaling's."""

from __future__ import annotations

from typing import Optional

from ..tables import fmt, md_table, text_table

__all__ = ["batch_text", "fmt", "md_table", "text_table"]


def batch_text(value: Optional[float]) -> str:
    """Batches are whole numbers except a strong-scaling share that does not divide evenly."""
    if value is None:
        return "–"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
