"""Aggregate completed runs into one Row per point (ranks, nodes, global batch): median and
spread over repeats, speedup and efficiency against the smallest point; and the CSV of rows."""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..files import atomic_write
from ..run import metrics_json
from .gather import RunRecord


@dataclass
class Row:
    ranks: int
    nodes: int
    global_batch: int
    per_rank_batch: float
    runs: int
    samples_per_s: float  # median over repeats
    samples_per_s_min: float
    samples_per_s_max: float
    epoch_s: float
    epoch_s_min: float
    epoch_s_max: float
    step_ms: Optional[float]
    comm_s: Optional[float]
    compute_ratio: Optional[float]  # slowest rank's compute / median rank's (worst epoch)
    comm_share: Optional[float]  # median rank's communication wait / training time
    cpu_threads: Optional[int]  # per rank, CPU runs only: explains CPU speedups
    val_acc: Optional[float]
    test_acc: Optional[float]
    run_ids: list
    speedup: float = 1.0
    efficiency: float = 1.0

    @property
    def samples_per_s_per_rank(self) -> float:
        return self.samples_per_s / self.ranks

    @property
    def comm_fraction(self) -> Optional[float]:
        return None if self.comm_s is None else self.comm_s / self.epoch_s


CSV_COLUMNS = ("ranks", "nodes", "global_batch", "per_rank_batch", "runs", "samples_per_s",
               "samples_per_s_min", "samples_per_s_max", "samples_per_s_per_rank", "epoch_s",
               "epoch_s_min", "epoch_s_max", "step_ms", "comm_s", "comm_fraction", "compute_ratio",
               "comm_share", "speedup",
               "efficiency", "val_acc", "test_acc", "cpu_threads", "run_ids")


def _median(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(records: list[RunRecord]) -> list[Row]:
    """Completed runs grouped by (ranks, nodes, global batch); speedup and efficiency against
    the group with the fewest ranks (then fewest nodes)."""
    groups: dict[tuple, list[RunRecord]] = {}
    for record in records:
        if record.status == metrics_json.COMPLETED:
            key = (record.ranks, record.nodes, record.global_batch)
            groups.setdefault(key, []).append(record)
    rows = []
    for (ranks, nodes, global_batch), members in sorted(groups.items()):
        throughput = [m.samples_per_s for m in members]
        epoch = [m.epoch_s for m in members]
        steps = members[0].steps_per_epoch
        epoch_median = statistics.median(epoch)
        comms = [m.comm_s for m in members]
        rows.append(Row(
            ranks=ranks, nodes=nodes, global_batch=global_batch,
            per_rank_batch=members[0].per_rank_batch, runs=len(members),
            samples_per_s=statistics.median(throughput), samples_per_s_min=min(throughput),
            samples_per_s_max=max(throughput), epoch_s=epoch_median, epoch_s_min=min(epoch),
            epoch_s_max=max(epoch), step_ms=1000 * epoch_median / steps if steps else None,
            comm_s=_median(comms) if all(c is not None for c in comms) else None,
            compute_ratio=_median([m.compute_ratio for m in members]),
            comm_share=_median([m.comm_share for m in members]),
            cpu_threads=members[0].cpu_threads,
            val_acc=_median([m.val_acc for m in members]),
            test_acc=_median([m.test_acc for m in members]),
            run_ids=[m.run_dir.name for m in members]))
    if rows:
        base = rows[0]  # sorted: fewest ranks, then fewest nodes
        for row in rows:
            row.speedup = row.samples_per_s / base.samples_per_s
            row.efficiency = row.speedup / (row.ranks / base.ranks)
    return rows


def write_csv(path: Path, rows: list[Row]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = []
        for column in CSV_COLUMNS:
            value = getattr(row, column)
            if column == "run_ids":
                value = " ".join(value)
            values.append("" if value is None else
                          repr(value) if isinstance(value, float) else value)
        writer.writerow(values)
    atomic_write(path, buffer.getvalue())
