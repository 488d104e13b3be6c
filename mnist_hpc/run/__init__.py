"""A training run: the loop (``loop``: set up, epochs, finish), the ``Run`` it carries
(``state``), the run directory and its lock, history and plots (``rundir``), checkpoints
(``checkpoint``), the resolved config it records and ``--print-config`` (``record``), the one
description of ``metrics.json`` (``metrics_json``; its shape check, ``json_shape``), the
console's epoch lines and summary (``report``), the trained model's ``model.pt``
(``model_file``) and its evaluation again, on the test split or on image files
(``evaluation``); the runs of a results directory listed (``listing``) and two runs compared
(``compare``), for ``python -m mnist_hpc.runs``.

May import everything below it: ``observe``, ``step``, ``data``, ``job``, ``config``,
``seeds``, ``errors``, ``files``, ``tables``. ``metrics_json``, ``json_shape``, ``report``,
``listing`` and ``compare`` are torch-free, for the scaling report, the job scripts and a
login node.
"""
