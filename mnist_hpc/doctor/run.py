"""One doctor run under any launcher: the session, the probes, the collectives in one fixed
order on every rank, and rank 0's report.

The checks travel over a gloo process group whatever the job's backend: gloo forms a group
even when ranks share a GPU or lack one (NCCL would refuse or hang there), and those are the
allocations the doctor must be able to describe. The benchmark then uses the job's backend.
No collective sits under ``if rank == 0``, and no probe raises: a broken rank reports its
problem through the same gathers as everyone else, so no rank waits on it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import torch

from .. import files
from ..config.options import RunConfig
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError
from ..job import process_group
from ..job.layout import DistEnv
from ..run import rundir
from . import allreduce, checks, probe, report
from .options import Options


def out_path(options: Options, config: RunConfig) -> tuple[Optional[Path], Optional[str]]:
    """Rank 0's doctor.json path (its directory created, as the trainer creates
    --results-dir), or a bad-input problem where an explicit --out cannot be written."""
    if options.out is None:
        return Path(config.results_dir) / f"doctor-{rundir.new_run_id()}.json", None
    parent = options.out.expanduser().resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return None, (f"--out {options.out}: cannot create directory {parent} "
                      f"({exc.strerror or exc}); choose another --out")
    if not os.access(parent, os.W_OK):
        return None, (f"--out {options.out}: directory {parent} is not writable; "
                      f"choose another --out")
    return options.out, None


def benchmark_backend(requested: str, facts: list[dict],
                      findings: list[checks.Finding]) -> tuple[str, Optional[str]]:
    """The job's backend (``auto``: NCCL when every rank has a GPU), or gloo with a note
    where NCCL cannot run: a rank without a GPU, or two ranks on one."""
    all_gpus = all(f["device"]["kind"] == "cuda" for f in facts)
    wanted = ("nccl" if all_gpus else "gloo") if requested == "auto" else requested
    if wanted != "nccl":
        return wanted, None
    blocked = [f.problem for f in findings if f.check in ("gpu_sharing", "gpu_missing")]
    if not all_gpus or blocked:
        reason = "; ".join(blocked) or "no rank has a GPU"
        return "gloo", f"NCCL cannot run here ({reason}): measured gloo on the CPU instead"
    return "nccl", None


def run_benchmark(env: DistEnv, options: Options, config: RunConfig, facts: list[dict],
                  findings: list[checks.Finding]) -> dict:
    if not env.distributed:
        return {"skipped": "one process, nothing to all-reduce; run the doctor under the "
                           "job's launcher to measure the network"}
    backend, note = benchmark_backend(config.backend, facts, findings)
    device = torch.device(env.device) if note is None else torch.device("cpu")
    plan = allreduce.make_plan(options.max_bytes, options.quick)
    measured = allreduce.run(env, plan, backend, device)
    return {**measured, "note": note} if note else measured


def world(env: DistEnv, facts: list[dict], backend: Optional[str]) -> dict:
    hosts = [f["host"] for f in facts]
    return {"world_size": env.world_size, "nodes": len(set(hosts)), "launcher": env.launcher,
            "backend": backend, "job_id": env.job_id, "master_addr": env.master_addr,
            "hostnames": hosts, "init_process_group_s": env.init_s}


def doctor(options: Options, config: RunConfig) -> int:
    """Run every check and the benchmark; return the exit code every rank agreed on."""
    started = time.perf_counter()
    # GPUs torch cannot see are a finding here (gpu_unseen), not a refusal to start
    with process_group.session(config.device, "gloo", config.timeout,
                               refuse_unseen_gpus=False) as env:
        out, problem = out_path(options, config) if env.is_main else (None, None)
        problem = process_group.broadcast_object(problem, env)
        if problem:
            raise UsageError(problem)  # on every rank at once: nobody waits

        facts = probe.rank_facts(env, config.data_dir)
        # what --device auto would refuse in training (--device cpu chose the CPU on purpose)
        facts["unseen_gpus"] = process_group.unseen_gpus() if config.device == "auto" else []
        facts["setup_s"] = time.perf_counter() - started  # session and probes
        marker, marker_problem = (probe.write_marker(config.results_dir) if env.is_main
                                  else (None, None))
        marker, marker_problem = process_group.broadcast_object((marker, marker_problem), env)
        facts["results_dir"] = probe.read_marker(marker, marker_problem)
        process_group.barrier(env)  # the clocks are read as close together as the ranks can manage
        facts["time"] = time.time()
        gathered = process_group.all_gather_objects(facts, env)
        if env.is_main:
            probe.remove_marker(marker)  # every rank has looked: the gather is past its read

        findings = checks.evaluate(gathered)
        checked = time.perf_counter()
        benchmark = run_benchmark(env, options, config, gathered, findings)
        benchmark["seconds"] = time.perf_counter() - checked
        code = EXIT_FAILURE if checks.failed(findings) else EXIT_OK
        if env.is_main:
            code = write_report(out, gathered, findings, benchmark,
                                world(env, gathered, benchmark.get("backend")),
                                time.perf_counter() - started, code)
        # every rank leaves only after rank 0 has printed and written: a launcher ends the
        # others as soon as one rank exits non-zero
        return process_group.broadcast_object(code, env)


def write_report(out: Path, facts: list[dict], findings: list[checks.Finding],
                 benchmark: dict, world_info: dict, elapsed_s: float, code: int) -> int:
    print(report.ranks_table(facts), flush=True)
    print("\n" + report.findings_text(findings), flush=True)
    print("\n" + report.benchmark_text(benchmark), flush=True)
    try:
        files.write_json(out, report.payload(facts, findings, benchmark, world_info, elapsed_s))
    except OSError as exc:
        print(f"error: doctor.json not written to {out} ({exc.strerror or exc}); pass --out "
              f"with a writable path", flush=True)
        return EXIT_FAILURE
    verdict = "FAILED" if code != EXIT_OK else "OK"
    print(f"\nDoctor {verdict} in {elapsed_s:.1f} s; wrote {out}", flush=True)
    return code
