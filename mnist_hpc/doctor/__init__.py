"""Preflight check of an allocation, run under the job's launcher like the trainer:
``python -m mnist_hpc.doctor`` (``mnist-hpc-doctor``).

Modules: ``cli`` (flags, exit codes; torch-free), ``run`` (the session and the fixed order of
collectives), ``probe`` (what one rank sees), ``checks`` (verdicts from every rank's facts;
what counts as a problem, and why), ``allreduce`` (the collective benchmark), ``report``
(the table, the findings, doctor.json).
"""
