"""One training step and evaluation: the networks (``models``), dropout keyed per sample
(``dropout``), BatchNorm over ranks (``sync_batchnorm``), the recipe built from a RunConfig
(``recipe``: model, optimizer, schedule, precision, loss, seeds), the epoch and the evaluation
with exact global sums (``engine``), the step as CUDA graphs (``graphs``), the timed warm-up
(``warmup``) and auto's check of its chosen step against the plain one (``verify``).

Everything arrives as arguments: nothing here prints or writes files. May import: ``data``,
``job``, ``config``, ``seeds``, ``errors``.
"""
