# shellcheck shell=bash
# Environment for a generic Slurm cluster, sourced by jobs/slurm.sh and jobs/slurm_torchrun.sh.
# A site adapts the job templates here, in one place:
#
#   MODULES        modules to load, space separated (e.g. "cuda/12.4 nccl"); empty: none
#   MNIST_HPC_VENV the Python environment to activate; default: this repo's .venv if present
#
# Both can also be set per job: sbatch --export=ALL,MODULES="gcc cuda" jobs/slurm.sh
# With no module system and no venv (a bare test cluster), the caller's PATH is kept as is.

# shellcheck source=envs/venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
mnist_hpc_env_begin

# site: the modules your cluster's PyTorch needs
MODULES="${MODULES:-}"
if [ -n "$MODULES" ]; then
    if command -v module >/dev/null 2>&1; then
        # word splitting is the point: MODULES is a list
        # shellcheck disable=SC2086
        module load $MODULES
    else
        echo "envs/slurm.sh: MODULES='$MODULES' but this node has no 'module' command" >&2
    fi
fi

mnist_hpc_env_end
