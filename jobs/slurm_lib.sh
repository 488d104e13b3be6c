# shellcheck shell=bash
# What jobs/slurm.sh and jobs/slurm_torchrun.sh share, sourced from the repo root:
#   slurm_job_setup   check the job, load the environment, read the knobs into variables
#                     (job_args of jobs/common.sh, sourced here, as are preflight and the rest)
#   print_header TITLE [NAME VALUE]...   job_header with the allocation's lines
#   run_step CMD...   run the job step with preemption handling, then exit with its status
#
# Preemption: Slurm sends SIGUSR1 to the batch shell before the time limit
# (--signal=B:USR1@120). run_step forwards it to srun, which forwards it to its tasks (or, if
# FORWARD_USR1_AS names another signal, has Slurm send that one to the tasks); the trainer
# writes a checkpoint and exits 75; run_step then requeues the job (at most MAX_RESTARTS
# times), which starts again under the same job id and resumes the run directory
# (--resume auto). `scancel --signal=USR1 --batch <jobid>` does the same by hand.
# SIGTERM (scancel, or preemption with PreemptMode=REQUEUE, where Slurm requeues by itself)
# is forwarded too but never leads to a requeue from here: a cancelled job stays cancelled.

die() {
    echo "slurm job: error: $*" >&2
    exit 2
}

# shellcheck source=jobs/common.sh
source jobs/common.sh

# Sets REPO and CPU_ONLY, and job_args's variables (train_args among them).
# shellcheck disable=SC2034  # the variables are the interface to the caller
slurm_job_setup() {
    : "${SLURM_JOB_ID:?is not set: submit this script with sbatch}"
    # Slurm runs a spooled copy of the script; the working directory is the repo
    if [ ! -d mnist_hpc ] || [ ! -f envs/slurm.sh ]; then
        die "$PWD is not the mnist_hpc repo: sbatch from the repo root or pass --chdir=<repo>"
    fi
    REPO="$PWD"
    # shellcheck source=envs/slurm.sh
    source envs/slurm.sh

    CPU_ONLY="${CPU_ONLY:-0}"
    local device_args=()
    if [ "$CPU_ONLY" = 1 ]; then
        device_args=(--device cpu --backend gloo)
    fi
    # an array task's run is named as Slurm names its log, %A_%a
    local run_id="slurm-$SLURM_JOB_ID"
    if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
        run_id="slurm-${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID"
    fi
    job_args "$run_id" "${device_args[@]}"
}

print_header() {
    local title="$1"
    shift
    job_header "$title: job $SLURM_JOB_ID, attempt $((${SLURM_RESTART_COUNT:-0} + 1))" \
        cluster "${SLURM_CLUSTER_NAME:-?}, partition ${SLURM_JOB_PARTITION:-?}" \
        workdir "$REPO" \
        nodes "$SLURM_JOB_NUM_NODES ($SLURM_JOB_NODELIST)" \
        devices "$(if [ "$CPU_ONLY" = 1 ]; then echo "CPU only"; else echo "GPUs per node: ${SLURM_GPUS_PER_NODE:-none}"; fi)" \
        "$@"
}

# The trainer's own record of how this attempt ended: metrics.json's status, if rank 0 wrote
# it during this attempt (a file left by the attempt before says nothing about this one).
_run_status() {
    local metrics="$RESULTS_DIR/$RUN_ID/metrics.json"
    if [ -f "$metrics" ] && [ "$(stat -c %Y "$metrics")" -ge "$_attempt_started" ]; then
        python -m mnist_hpc.metrics status "$RESULTS_DIR/$RUN_ID" 2>/dev/null || true
    fi
}

_step_pid=""
_terminated=0
_interrupted=0
# shellcheck disable=SC2317  # reached through the traps set in run_step
_forward() {
    _interrupted=1
    if [ "$1" = TERM ]; then
        _terminated=1
    fi
    if [ "$1" = USR1 ] && [ "${FORWARD_USR1_AS:-USR1}" != USR1 ]; then
        # srun takes SIGTERM as "cancel the step" (SIGKILL after KillWait, no time for a
        # checkpoint): have Slurm deliver the signal to the step's tasks instead
        echo "slurm job: SIGUSR1 received, sending SIG$FORWARD_USR1_AS to the tasks" >&2
        scancel --signal="$FORWARD_USR1_AS" "$SLURM_JOB_ID" || true
    elif [ -n "$_step_pid" ]; then
        echo "slurm job: SIG$1 received, forwarding it to srun and the tasks" >&2
        kill "-$1" "$_step_pid" 2>/dev/null || true
    fi
}

# A lost node (its slurmd and tasks gone) leaves srun waiting for its tasks until Slurm
# declares the node down (SlurmdTimeout, often 300 s), long after the ranks still alive have
# failed. Once rank 0 has recorded the run as failed (its error names the ranks that vanished
# and their nodes), the step has STEP_GRACE seconds to end before it is killed.
_step_killed=0
_watch_step() {
    local failed_at="" seen="" stamp
    while kill -0 "$_step_pid" 2>/dev/null; do
        sleep 1 &
        wait $! 2>/dev/null || true  # a trapped signal cuts the nap short
        stamp="$(stat -c %Y "$RESULTS_DIR/$RUN_ID/metrics.json" 2>/dev/null || true)"
        if [ -z "$failed_at" ] && [ -n "$stamp" ] && [ "$stamp" != "$seen" ]; then
            seen="$stamp"
            if [ "$(_run_status)" = failed ]; then
                failed_at="$SECONDS"
            fi
        fi
        if [ -n "$failed_at" ] && [ $((SECONDS - failed_at)) -ge "${STEP_GRACE:-30}" ]; then
            echo "slurm job: the run failed $((SECONDS - failed_at)) s ago and the step still" \
                "waits for a task (a lost node?): ending the step" >&2
            kill -KILL "$_step_pid" 2>/dev/null || true
            _step_killed=1
            return
        fi
    done
}

# Run the step in the background (bash runs a trap only between commands, and `wait` is one
# it can interrupt), forward signals to it, end it if it outlives its failed run, requeue
# after a checkpoint, exit with its status.
run_step() {
    _attempt_started="$(date +%s)"
    trap '_forward USR1' USR1
    trap '_forward TERM' TERM
    "$@" &
    _step_pid=$!
    _watch_step

    local status
    # wait returns early (status > 128) when a trapped signal arrives: wait for the step itself
    while :; do
        _interrupted=0
        status=0
        wait "$_step_pid" || status=$?
        if [ "$_interrupted" = 0 ]; then
            break
        fi
    done

    if [ "$_step_killed" = 1 ]; then
        status=1  # the run's own failure, not the kill
    fi
    # 75 means "checkpointed, run me again". With --kill-on-bad-exit, the first rank to exit
    # 75 gets the others killed (SIGTERM), and srun may then report 143 instead: the run's
    # own status decides.
    if [ "$status" != 0 ] && [ "$status" != 75 ] && [ "$(_run_status)" = preempted ]; then
        echo "slurm job: the step exited $status after the run stopped with a checkpoint;" \
            "treating it as 75" >&2
        status=75
    fi

    local stopped="stopped early with a checkpoint: requeueing job $SLURM_JOB_ID" requeue=0
    if [ "$_terminated" = 1 ]; then
        # SIGTERM: scancel, or Slurm requeueing the job itself (scontrol requeue, preemption)
        stopped="stopped by SIGTERM after a checkpoint: a job Slurm requeues resumes it;\
 a cancelled one resumes with --export=ALL,RUN_ID=$RUN_ID"
    elif [ "${SLURM_RESTART_COUNT:-0}" -ge "${MAX_RESTARTS:-20}" ]; then
        # a run that stops without progress would otherwise requeue forever
        stopped="stopped early again after ${SLURM_RESTART_COUNT} restarts (MAX_RESTARTS);\
 not requeueing: resume with --export=ALL,RUN_ID=$RUN_ID"
    elif [ "$status" = 75 ]; then
        requeue=1
    fi
    job_report "$status" "$stopped"
    if [ "$requeue" = 1 ]; then
        # ends this attempt at once; the next one resumes from the checkpoint
        scontrol requeue "$SLURM_JOB_ID" ||
            echo "slurm job: requeue refused; resume with --export=ALL,RUN_ID=$RUN_ID" >&2
    fi
    exit "$status"
}
