# shellcheck shell=bash
# What envs/polaris.sh and envs/slurm.sh share: the site's set-up runs between
# mnist_hpc_env_begin and mnist_hpc_env_end, which then activates this repo's venv (or
# MNIST_HPC_VENV) on top of it.
#
# Module and activate scripts read unset variables and return non-zero on benign paths:
# begin relaxes the caller's strict mode while they run, end restores the caller's -e and -u.

mnist_hpc_env_begin() {
    _mnist_hpc_flags="$-"
    set +eu
}

mnist_hpc_env_end() {
    # site: a venv elsewhere (a shared one, one on a project filesystem) instead of .venv
    local venv="${MNIST_HPC_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}"
    if [ -f "$venv/bin/activate" ]; then
        # shellcheck disable=SC1091
        source "$venv/bin/activate"
    fi
    case "$_mnist_hpc_flags" in *e*) set -e ;; esac
    case "$_mnist_hpc_flags" in *u*) set -u ;; esac
    unset _mnist_hpc_flags
    unset -f mnist_hpc_env_begin mnist_hpc_env_end
}
