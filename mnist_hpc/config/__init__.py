"""What a run is asked to do: every option declared once (name, type, choices, default, help,
recipe or not), the presets, YAML reading and the command line, all torch-free.

Modules: ``options`` (RunConfig and its checks), ``flags`` (``python -m mnist_hpc.train``'s
command line and the presets).

May import: ``errors``, ``files``. Nothing here imports torch: ``--help`` and bad input are
answered before torch loads.
"""
