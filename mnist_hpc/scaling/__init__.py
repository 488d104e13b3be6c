"""Scaling studies: plan a sweep, submit it (PBS or Slurm), run it here or inside one
allocation, then report.

``python -m mnist_hpc.scaling plan|submit|local|allocation|report|model``. A sweep YAML
names the points (ranks or nodes), the batch rule (strong: fixed global batch; weak: fixed per-rank
batch) and the scheduler settings. Every run of a study writes its run directory under
``<results_dir>/<study_id>/``, next to ``study.json``, the manifest of the planned runs and
their job ids; ``report`` reads that folder, so a run that failed or never started is listed,
never silently dropped.

Nothing here trains: each run is ``python -m mnist_hpc.train`` started by a launcher or a job
template. No torch import: planning and reporting work on a login node.

Modules: ``sweep`` (the sweep file and its plan), ``schedulers`` (qsub/sbatch commands and
the rules a study must meet), ``study`` (study id and manifest), ``submit``, ``local`` and
``allocation`` (the three ways to start the runs: a job each, here, job steps in this job),
``gather`` (run directories into records), ``aggregate`` (rows and CSV), ``plots``,
``perfmodel`` (the ring all-reduce model), ``report`` (the markdown report), ``tables``
(number and table formatting), ``cli`` (the command line).
"""

from .cli import main, main_exit

__all__ = ["main", "main_exit"]
