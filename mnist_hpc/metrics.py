"""``python -m mnist_hpc.metrics``: a run's metrics.json for shell scripts, read through its one
schema (``mnist_hpc.run.metrics_json``). Torch-free.

    status RUN_DIR        the status (empty when there is none to read; never fails)
    get RUN_DIR KEY       one value by its dotted path: final.test_acc, epochs.0.train_s
                          (strings as they are, anything else as JSON)
    summary RUN_DIR       one line: start-up, warm-up and training time, test accuracy,
                          precision and CUDA graphs (what jobs/gpu_check.sh prints per run)

A file that is missing or is not a metrics.json this version reads: exit 2 and a message
naming the file and the key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from .errors import EXIT_OK, EXIT_USAGE, UsageError
from .run import metrics_json

USAGE = ("usage: python -m mnist_hpc.metrics status RUN_DIR | get RUN_DIR KEY | "
         "summary RUN_DIR")


def lookup(metrics: metrics_json.Metrics, key: str) -> Any:
    """The value at a dotted path; list items by their index."""
    value: Any = metrics
    where = []
    for part in key.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            inside = ".".join(where) or "the top level"
            choices = (f"an index below {len(value)}" if isinstance(value, list) else
                       "one of " + ", ".join(value) if isinstance(value, dict) and value else
                       "nothing: it is not an object or a list, or it is empty")
            raise UsageError(f"{key}: no '{part}' in {inside}; it holds {choices}")
        where.append(part)
    return value


def summary(metrics: metrics_json.Metrics) -> str:
    if metrics["status"] != metrics_json.COMPLETED:
        raise UsageError(f"run {metrics['run_id']} is {metrics['status']}, not completed: "
                         f"it has no final figures to summarise")
    final, batch = metrics["final"], metrics["batch"]
    epochs = ", ".join(f"{e['train_s']:.2f}" for e in metrics["epochs"])
    return (f"startup_s {final['startup_s']:.2f}, warmup_s {final['warmup_s']:.2f}, train_s "
            f"{final['train_s']:.2f} (epochs: {epochs}), test {final['test_acc']:.2f} %, "
            f"{batch['precision']}, cuda_graphs {batch['cuda_graphs']}")


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else None
    wanted = {"status": 2, "get": 3, "summary": 2}
    if command not in wanted or len(args) != wanted[command]:
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    if command == "status":  # for the job scripts' retry logic: never an error
        print(metrics_json.status(Path(args[1])) or "")
        return EXIT_OK
    try:
        metrics = metrics_json.read_for_user(Path(args[1]))
        if command == "summary":
            print(summary(metrics))
        else:
            value = lookup(metrics, args[2])
            print(value if isinstance(value, str) else json.dumps(value))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
