"""Where this process is in the job and how it talks to the others.

``layout``, ``port``, ``hostlist``, ``watchdog`` and ``preemption`` are torch-free: the
launcher's variables (rank, local rank, node layout, rendezvous address), the job id and the
rendezvous port derived from it (also ``python -m mnist_hpc.job port``), Slurm host lists,
deadlines on waits that have none, and the preemption signals and time limit.
``process_group`` is the torch side: device binding, backend, the process group session and
the collectives (no-ops on one process).

May import: ``config``, ``errors``, ``files``. Only ``job`` and ``config`` read the
environment.
"""
