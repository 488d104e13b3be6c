"""The report's plots: throughput against the ideal line, parallel efficiency, and epoch time
with the all-reduce time beside it; the model's prediction drawn on the first two when given.

matplotlib is imported only when plotting, so the rest of the package loads fast."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

from ..files import atomic_write
from .aggregate import Row


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # batch jobs and login nodes have no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(path, buffer.getvalue())


def write_plots(out: Path, rows: list[Row], title: str,
                predicted: Optional[list[dict]] = None) -> list[str]:
    plt = _plt()
    ranks = [r.ranks for r in rows]
    base = rows[0]
    names = []

    model_x = sorted(set(ranks + [p["ranks"] for p in predicted or []]))

    def axis(ax, ylabel: str, ticks: list) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("ranks")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.set_title(title, fontsize=9)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    median = [r.samples_per_s for r in rows]
    spread = [[r.samples_per_s - r.samples_per_s_min for r in rows],
              [r.samples_per_s_max - r.samples_per_s for r in rows]]
    ax.errorbar(ranks, median, yerr=spread, marker="o", capsize=3,
                label="measured (median, min–max)")
    ax.plot(model_x, [base.samples_per_s * x / base.ranks for x in model_x], "k--", lw=1,
            label="ideal (linear)")
    if predicted:
        ax.plot([p["ranks"] for p in predicted], [p["samples_per_s"] for p in predicted],
                ":", marker=".", label="model")
    ys = median + [base.samples_per_s * x / base.ranks for x in model_x]
    if max(ys) / min(ys) > 8:  # many doublings: log axes show each one the same size
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plt.matplotlib.ticker.FuncFormatter(
            lambda value, _: f"{value:,.0f}"))
        ax.yaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    else:
        ax.set_ylim(bottom=0)
    axis(ax, "training samples/s", model_x)
    ax.legend(fontsize=8)
    _save(fig, out / "throughput.png")
    plt.close(fig)
    names.append("throughput.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(ranks, [r.efficiency for r in rows], marker="o", label="measured")
    if predicted:
        ax.plot([p["ranks"] for p in predicted], [p["efficiency"] for p in predicted], ":",
                marker=".", label="model")
    ax.axhline(1.0, color="k", ls="--", lw=1, label="ideal")
    ax.set_ylim(0, max(1.1, max(r.efficiency for r in rows) * 1.1))
    axis(ax, f"parallel efficiency (vs {base.ranks} rank{'s' * (base.ranks > 1)})", model_x)
    ax.legend(fontsize=8)
    _save(fig, out / "efficiency.png")
    plt.close(fig)
    names.append("efficiency.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.errorbar(ranks, [r.epoch_s for r in rows],
                yerr=[[r.epoch_s - r.epoch_s_min for r in rows],
                      [r.epoch_s_max - r.epoch_s for r in rows]],
                marker="o", capsize=3, label="training time per epoch")
    comm = [(r.ranks, r.comm_s) for r in rows if r.comm_s is not None and r.ranks > 1]
    if comm:
        ax.plot(*zip(*comm), marker="s", label="all-reduce in flight (gloo)")
    axis(ax, "seconds per epoch", ranks)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    _save(fig, out / "epoch_time.png")
    plt.close(fig)
    names.append("epoch_time.png")
    return names
