# shellcheck shell=bash
# PREFLIGHT=1, in every job template: run the doctor (python -m mnist_hpc.doctor) under the
# training step's own launcher line first, and end the job with its status if a check fails,
# so a wrong launch, a GPU shared by two ranks, missing data or mismatched software on a node
# stop the job before any training. Sourced from the repo root by jobs/slurm_lib.sh and
# jobs/polaris_ddp.pbs:
#   preflight_knob    read PREFLIGHT (0 or 1, default 0); a bad value ends the job at once
#   preflight CMD...  with PREFLIGHT=1, run CMD (the doctor's launch); exit with its status
#                     if it fails

preflight_knob() {
    PREFLIGHT="${PREFLIGHT:-0}"
    if [ "$PREFLIGHT" != 0 ] && [ "$PREFLIGHT" != 1 ]; then
        echo "job: error: PREFLIGHT=$PREFLIGHT: use 1 (run python -m mnist_hpc.doctor" \
            "before training) or 0" >&2
        exit 2
    fi
}

preflight() {
    if [ "$PREFLIGHT" != 1 ]; then
        return 0
    fi
    echo "=== preflight: python -m mnist_hpc.doctor under the job's launcher ==="
    local status=0
    "$@" || status=$?
    if [ "$status" != 0 ]; then
        echo "=== preflight failed with exit code $status: not training (the doctor's" \
            "report above names each problem and its fix) ==="
        exit "$status"
    fi
}
