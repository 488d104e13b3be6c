"""``python -m mnist_hpc.grid``: a grid of trainer flags (seeds, learning rates, ...) run as one
job array, one run directory per array task, and the sweep's summary. Torch-free.

    show GRID              the points, numbered as array tasks, and the sbatch/qsub lines
    flags GRID INDEX       point INDEX's trainer flags, one per line (what the templates read)
    summary GRID RUN...    test accuracy per point: runs, mean, standard deviation, min, max

GRID is a YAML file whose ``grid`` maps trainer options to lists of values; the points are
every combination, the last key varying fastest (mnist_hpc/grids/seeds.yaml). ``seed`` is the
repeat axis: the summary pools the seeds of a point. Array task N of
``sbatch --array=0-<points-1> --export=ALL,GRID=<file> jobs/slurm.sh`` (or
``qsub -J 0-<points-1> -v GRID=<file> jobs/polaris_ddp.pbs``) trains point N in
``slurm-<array job id>_N`` (``pbs-<array id>_N``). Bad input exits 2 naming the fix.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .config.flags import flag_name
from .config.options import make_config
from .errors import UsageError, run_command
from .files import UsageParser, check_path, read_yaml
from .run import metrics_json
from .tables import fmt, text_table

PROG = "python -m mnist_hpc.grid"
REPEAT_KEY = "seed"  # pooled by the summary: a point is everything else


@dataclass(frozen=True)
class Grid:
    path: Path
    keys: tuple[str, ...]
    points: tuple[dict[str, Any], ...]

    def flags(self, index: int) -> list[str]:
        """Point ``index``'s trainer flags; an index outside the grid names the array to use."""
        if not 0 <= index < len(self.points):
            raise UsageError(f"array index {index} is outside {self.path}'s "
                             f"{len(self.points)} points: submit {self.array_range()}")
        flags = []
        for key, value in self.points[index].items():
            if isinstance(value, bool):  # a switch: --name or --no-name
                flags.append(flag_name(key) if value else "--no-" + flag_name(key)[2:])
            else:
                flags += [flag_name(key), str(value)]
        return flags

    def array_range(self) -> str:
        return f"--array=0-{len(self.points) - 1} (PBS: -J 0-{len(self.points) - 1})"


def load(path: Path) -> Grid:
    """Read and check a grid file: every key a trainer option, every value one it accepts."""
    check_path(str(path), "grid file")
    if not path.is_file():
        raise UsageError(f"grid file {path} not found; give the path of a YAML file such as "
                         "mnist_hpc/grids/seeds.yaml")
    data = read_yaml(path, "grid file")
    grid = data.get("grid") if isinstance(data, dict) else None
    if not isinstance(grid, dict) or not grid:
        raise UsageError(f"grid file {path} must hold 'grid:', a mapping of trainer options "
                         "to lists of values, e.g. grid: {seed: [1, 2, 3], lr: [0.01, 0.003]}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values or any(
                isinstance(v, (list, dict)) or v is None for v in values):
            raise UsageError(f"grid file {path}: {key} must be a list of one or more plain "
                             f"values, not {values!r}")
        for value in values:  # unknown keys and bad values, with RunConfig's own messages
            try:
                make_config({key: value}, f"grid file {path}")
            except UsageError as exc:
                raise UsageError(f"grid file {path}: {exc}") from None
    keys = tuple(grid)
    points = tuple(dict(zip(keys, combo)) for combo in itertools.product(*grid.values()))
    return Grid(path, keys, points)


def point_label(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items()) or "(all)"


def show(grid: Grid) -> str:
    rows = [("task", "flags"), *((str(i), " ".join(grid.flags(i)))
                                 for i in range(len(grid.points)))]
    last = len(grid.points) - 1
    return (f"{grid.path}: {len(grid.points)} points\n{text_table(rows)}\n\n"
            f"sbatch --array=0-{last} --export=ALL,GRID={grid.path} jobs/slurm.sh\n"
            f"qsub -J 0-{last} -v GRID={grid.path} jobs/polaris_ddp.pbs")


def summary(grid: Grid, run_dirs: list[Path]) -> str:
    """One row per point (the grid's values but the seed): how many runs completed, and their
    test accuracy's mean, sample standard deviation, min and max. A run that cannot be read,
    has not completed or matches no point is listed under the table, never averaged."""
    point_keys = [key for key in grid.keys if key != REPEAT_KEY]
    points = {point_label({k: p[k] for k in point_keys}): [] for p in grid.points}
    expected = len(grid.points) // len(points)
    notes = []
    for run_dir in run_dirs:
        try:
            metrics = metrics_json.read(run_dir)
        except (OSError, metrics_json.MetricsError) as exc:
            notes.append(f"{run_dir.name}: unreadable ({exc})")
            continue
        label = point_label({k: metrics["config"].get(k) for k in point_keys})
        if label not in points:
            notes.append(f"{run_dir.name}: {label} is not a point of {grid.path}")
        elif metrics["status"] != metrics_json.COMPLETED:
            notes.append(f"{run_dir.name}: {metrics['status']} {metrics.get('error', '')}".rstrip())
        else:
            points[label].append(metrics["final"]["test_acc"])
    rows = [("point", "runs", "test acc %", "std", "min", "max")]
    for label, accs in points.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else None
        rows.append((label, f"{len(accs)}/{expected}",
                     fmt(statistics.mean(accs) if accs else None, 2), fmt(spread, 2),
                     fmt(min(accs, default=None), 2), fmt(max(accs, default=None), 2)))
    text = f"{grid.path}: {len(run_dirs)} run(s)\n{text_table(rows)}"
    return text + "".join(f"\n  not counted: {note}" for note in notes)


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog=PROG, description="A grid of trainer flags run as one job array "
                         "(sbatch --array, qsub -J; GRID=<file> in the job templates), and the "
                         "summary of its runs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)
    grid_help = "the grid YAML: 'grid:' maps trainer options to lists of values"
    p = sub.add_parser("show", help="the points, numbered as array tasks, and the "
                                    "sbatch/qsub lines", description="The points of a grid, "
                                    "numbered as array tasks, and the lines that submit it.")
    p.add_argument("grid", help=grid_help)
    p = sub.add_parser("flags", help="one point's trainer flags, one per line (what the job "
                                     "templates read)", description="Point INDEX's trainer "
                                     "flags, one per line.")
    p.add_argument("grid", help=grid_help)
    p.add_argument("index", type=int, help="the array task's index (SLURM_ARRAY_TASK_ID, "
                                           "PBS_ARRAY_INDEX)")
    p = sub.add_parser("summary", help="test accuracy per point over the finished runs",
                       description="Per point (the grid's values but seed): runs completed, "
                                   "test accuracy's mean, standard deviation, min and max.")
    p.add_argument("grid", help=grid_help)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="the array's run directories, e.g. results/slurm-<array job id>_*")
    return parser


def run(argv: Optional[list[str]]) -> None:
    args = build_parser().parse_args(argv)
    grid = load(Path(args.grid))
    if args.command == "show":
        print(show(grid))
    elif args.command == "flags":
        print("\n".join(grid.flags(args.index)))
    else:
        print(summary(grid, [Path(d) for d in args.run_dirs]))


def main(argv: Optional[list[str]] = None) -> int:
    return run_command(lambda: run(argv))


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
