# shellcheck shell=bash
# Environment for ALCF Polaris, sourced by jobs/polaris_ddp.pbs (and by hand on a login or
# compute node): `source envs/polaris.sh`.
#
# 1. The ALCF conda module: PyTorch built against Polaris's CUDA, NCCL and the AWS libfabric
#    plugin, with mpi4py linked to Cray MPICH. Loading it also exports the NCCL_*/FI_* network
#    settings listed at the top of jobs/polaris_ddp.pbs.
# 2. This repo's venv on top of it, for what conda lacks (the package itself, pinned extras).
#    Create it once, on a login node, so that it reuses conda's torch instead of a wheel:
#        module use /soft/modulefiles; module load conda; conda activate
#        python -m venv --system-site-packages .venv
#        .venv/bin/python -m pip install --no-deps -e .
#    (--no-deps: never let pip replace conda's torch with a PyPI build that lacks Polaris's
#    NCCL plugin.) Without .venv, the conda env is used as is: then run from the repo root so
#    `python -m mnist_hpc.train` finds the package.
#
# Where `module` does not exist (CI, a laptop, the tests that run the PBS template), step 1
# is skipped and only the venv is activated.
#
# Site lines a user changes: POLARIS_MODULEPATH, POLARIS_CONDA_MODULE, MNIST_HPC_VENV.

# shellcheck source=envs/venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
mnist_hpc_env_begin

if command -v module >/dev/null 2>&1; then
    # site: where ALCF keeps its modulefiles
    module use "${POLARIS_MODULEPATH:-/soft/modulefiles}"
    # site: pin a dated module (e.g. conda/2024-04-29) to keep one torch across a study
    module load "${POLARIS_CONDA_MODULE:-conda}"
    conda activate
elif [ -n "${PBS_JOBID:-}" ]; then
    # a batch shell without modules would run whatever python is on PATH: say so in the log
    echo "envs/polaris.sh: no 'module' command here; conda not loaded" >&2
fi

mnist_hpc_env_end
