"""What a run is asked to do: every option declared once (name, type, choices, default, help,
recipe or not), the presets, YAML reading and the command line, all torch-free.

Modules: ``declare`` (``option``: how one option is declared, and how a flag's text is read),
``options`` (RunConfig, its declarations and checks), ``flags`` (``python -m mnist_hpc.train``'s
command line and the presets), ``resolve`` (the config as it ran: what config.yaml records).

May import: ``errors``, ``files``. Nothing here imports torch: ``--help`` and bad input are
answered before torch loads.
"""
