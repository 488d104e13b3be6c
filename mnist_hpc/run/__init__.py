"""A training run: the loop (``loop``: set up, epochs, finish), the ``Run`` it carries
(``state``), the run directory and its lock, history and plots (``rundir``), checkpoints
(``checkpoint``), the resolved config it records and ``--print-config`` (``record``) and the
one description of ``metrics.json`` (``metrics_json``).

May import everything below it: ``observe``, ``step``, ``data``, ``job``, ``config``,
``seeds``, ``errors``, ``files``. ``metrics_json`` is torch-free, for the scaling report and
the job scripts.
"""
