"""What a run shows of itself beyond its numbers, one ``observer.Observer`` per rank: per-rank
timing and stragglers (``timing``), gradient all-reduce time (``comm_timer``), FLOPs and MFU
(``flops``), the step log (``steplog``), the profiler (``profiling``), failure and hang
reports (``failures``), rank-tagged output and rank logs (``ranklog``), the process's age
(``startup``).

May import: ``step``, ``data``, ``job``, ``config``, ``errors``, ``files``.
"""
