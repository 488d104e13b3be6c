"""A training run: the loop (``loop``: set up, epochs, finish), the ``Run`` it carries
(``state``), the run directory and its lock, history and plots (``rundir``), checkpoints
(``checkpoint``), the one description of ``metrics.json`` (``metrics_json``), the console's
epoch lines and summary (``report``), the trained model's ``model.pt`` (``model_file``) and
its evaluation again, on the test split or on image files (``evaluation``).

May import everything below it: ``observe``, ``step``, ``data``, ``job``, ``config``,
``seeds``, ``errors``, ``files``. ``metrics_json`` and ``report`` are torch-free, for the
scaling report and the job scripts.
"""
