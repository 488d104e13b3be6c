"""Two runs side by side (``python -m mnist_hpc.runs compare A B``): the configuration keys
whose values differ, both histories epoch by epoch, and a PNG of both curves.

Everything is read from the two metrics.json files (through ``metrics_json``): an unfinished
run compares as far as it got. Torch-free; the plot uses matplotlib's Agg backend, as the
run's own plots do (batch jobs have no display).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from ..files import atomic_write
from ..tables import fmt, text_table
from . import metrics_json

ABSENT = "(absent)"  # a key one config has and the other has not (a later version added it)
VALUE_WIDTH = 60
# the curves compared: (column title, key of metrics_json.Epoch, digits)
CURVES = (("train acc", "train_acc", 2), ("val acc", "val_acc", 2),
          ("train loss", "train_loss", 4), ("val loss", "val_loss", 4))


def value_text(value: Any) -> str:
    """As ``python -m mnist_hpc.metrics get`` prints values: strings as they are, anything
    else as JSON; cut to a table cell's width."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 1] + "…"


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, A's value, B's value) for every key whose values differ, sorted by key."""
    missing = object()
    rows = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key, missing), b.get(key, missing)
        if left != right:
            rows.append((key, ABSENT if left is missing else value_text(left),
                         ABSENT if right is missing else value_text(right)))
    return rows


def history_rows(a: list[metrics_json.Epoch], b: list[metrics_json.Epoch]) -> list[tuple]:
    """One row per epoch that either run recorded: each curve's A and B values together."""
    by_epoch = [{e["epoch"]: e for e in epochs} for epochs in (a, b)]
    header = ("epoch",) + tuple(f"{title} {side}" for title, _, _ in CURVES
                                for side in ("A", "B"))
    rows: list[tuple] = [header]
    for epoch in sorted(set(by_epoch[0]) | set(by_epoch[1])):
        cells = [str(epoch)]
        for _, key, digits in CURVES:
            for side in by_epoch:
                record = side.get(epoch)
                cells.append(fmt(None if record is None else record[key], digits))
        rows.append(tuple(cells))
    return rows


def report(a: metrics_json.Metrics, b: metrics_json.Metrics, names: tuple[str, str]) -> str:
    """The text ``compare`` prints: which run is A and B, the config differences, the
    histories and the test accuracies."""
    lines = [f"{side}: {name} ({m['status']}, epochs {len(m['epochs'])}/"
             f"{m['config'].get('epochs', '?')})" for side, name, m in zip("AB", names, (a, b))]
    lines.append("")
    diff = config_diff(a["config"], b["config"])
    if diff:
        lines += ["config keys that differ:", text_table([("key", "A", "B"), *diff])]
    else:
        lines.append("the configs are the same")
    lines.append("")
    if a["epochs"] or b["epochs"]:
        lines += ["history (accuracies in %):", text_table(history_rows(a["epochs"],
                                                                         b["epochs"]))]
    else:
        lines.append("neither run has finished an epoch")
    tests = [fmt(m["final"].get("test_acc"), 2) for m in (a, b)]
    lines += ["", f"test acc %: A {tests[0]}, B {tests[1]}"]
    return "\n".join(lines)


def plot(a: metrics_json.Metrics, b: metrics_json.Metrics, names: tuple[str, str],
         path: Path) -> None:
    """Accuracy and loss of both runs, train solid and validation dashed, A and B each in
    its own colour; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for axis, quantity in zip(axes, ("acc", "loss")):
        for metrics, side, colour in zip((a, b), "AB", ("tab:blue", "tab:orange")):
            epochs = [e["epoch"] for e in metrics["epochs"]]
            for split, style in (("train", "-"), ("val", "--")):
                axis.plot(epochs, [e[f"{split}_{quantity}"] for e in metrics["epochs"]],
                          style, marker="o", color=colour, label=f"{side} {split}")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel("accuracy (%)" if quantity == "acc" else "loss")
        axis.legend(fontsize="small")
    fig.suptitle(f"A: {names[0]}    B: {names[1]}", fontsize="medium")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
