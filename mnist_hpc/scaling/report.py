"""``report``: gather a study folder, then write ``scaling.csv``, the plots and ``scaling.md``
(hardware and software, how each figure is measured, the table, the runs that did not
complete, and the performance model when a network is given)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from ..errors import EXIT_FAILURE, EXIT_OK, UsageError
from ..files import atomic_write
from ..run import metrics_json
from .aggregate import Row, aggregate, write_csv
from .gather import RunRecord, gather
from .perfmodel import (
    GRADIENT_BYTES_PER_PARAM,
    model_markdown,
    model_ranks,
    parse_network,
    predict,
)
from .plots import write_plots
from .study import MANIFEST
from .tables import batch_text, fmt, md_table


def cmd_report(args: argparse.Namespace) -> int:
    study_dir = Path(args.study_dir).expanduser().resolve()
    manifest, records = gather(study_dir)
    if not records:
        raise UsageError(f"{study_dir} holds no run directories and no {MANIFEST}; give the "
                         f"folder a study wrote (<results_dir>/<study_id>)")
    out = Path(args.out).expanduser().resolve() if args.out else study_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(records)
    mode = (manifest or {}).get("mode") or _guess_mode(records)
    network = parse_network(args.model, "--model") if args.model else None
    completed = [r for r in records if r.status == metrics_json.COMPLETED]
    problems = [r for r in records if r.status != metrics_json.COMPLETED]
    title = f"{(manifest or {}).get('study_id', study_dir.name)} ({mode} scaling)"

    predicted, model_text = None, ""
    if rows and network:
        predicted, model_text = _model_for(rows, records, mode, network)
    write_csv(out / "scaling.csv", rows)
    plots = write_plots(out, rows, title, predicted) if rows else []
    md = _report_markdown(study_dir, manifest, mode, records, rows, problems, plots, model_text)
    atomic_write(out / "scaling.md", md)
    print(md)
    print(f"Wrote {out / 'scaling.csv'}, {out / 'scaling.md'}"
          + "".join(f", {out / p}" for p in plots))
    if not completed:
        print("error: no completed run to report on", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _guess_mode(records: list[RunRecord]) -> str:
    modes = {r.metrics["batch"]["mode"] for r in records if r.metrics}
    return "weak" if modes == {"per-rank"} else "strong"


def _model_for(rows: list[Row], records: list[RunRecord], mode: str,
               network: tuple[float, float]) -> tuple[list[dict], str]:
    base = rows[0]
    steps = base.step_ms / 1000 if base.step_ms else None
    params = next((r.parameters for r in records if r.parameters), None)
    if steps is None or params is None:
        return None, "_Model skipped: the runs do not record steps per epoch or parameters._"
    comm_per_step = (base.comm_s / (base.epoch_s / steps)) if base.comm_s and base.ranks > 1 else 0
    compute = max(steps - comm_per_step, 1e-12)
    per_sample = compute / base.per_rank_batch
    nbytes = params * GRADIENT_BYTES_PER_PARAM
    batch = base.global_batch if mode == "strong" else int(round(base.per_rank_batch))
    ranks = [n for n in model_ranks([r.ranks for r in rows]) if mode == "weak" or n <= batch]
    predicted = predict(ranks, mode, batch, per_sample, nbytes, *network, base.ranks)
    text = (f"Compute per step from the {base.ranks}-rank run: {1000 * compute:.3f} ms for "
            f"{batch_text(base.per_rank_batch)} samples per rank, assumed proportional to the "
            f"per-rank batch.\n" + model_markdown(predicted, *network, nbytes))
    return predicted, text


def _report_markdown(study_dir: Path, manifest: Optional[dict], mode: str,
                     records: list[RunRecord], rows: list[Row], problems: list[RunRecord],
                     plots: list[str], model_text: str) -> str:
    completed = [r for r in records if r.status == metrics_json.COMPLETED]
    # completed runs were read: each has its metrics
    versions = completed[0].metrics["versions"] if completed else {}
    epochs = [len(r.metrics["epochs"]) for r in completed]
    measured = sorted({r.measured_epochs for r in completed})

    def seen(key: str) -> str:
        values = {str(r.metrics["world"][key]) for r in completed
                  if r.metrics["world"][key] is not None}
        return ", ".join(sorted(values)) or "–"

    hosts = sorted({host for r in completed for host in r.metrics["world"]["hostnames"]})
    lines = [f"# Scaling report: {(manifest or {}).get('study_id', study_dir.name)}", ""]
    batch_rule = ("strong scaling: the global batch is fixed and split over the ranks"
                  if mode == "strong" else
                  "weak scaling: the per-rank batch is fixed, the global batch grows with the "
                  "ranks")
    lines += [f"- Mode: {batch_rule}.",
              f"- Runs: {len(completed)} completed of {len(records)}"
              + (f" ({len(problems)} failed or incomplete, listed below)" if problems else "")
              + ".",
              f"- Hardware: device {seen('device')}"
              + (f" ({seen('device_name')})" if seen("device_name") != "–" else "")
              + f"; backend {seen('backend')} (none for 1 rank); launcher {seen('launcher')}; "
              f"{len(hosts)} host(s): {', '.join(hosts[:8])}{' ...' if len(hosts) > 8 else ''}.",
              f"- Software: torch {versions.get('torch', '?')}, mnist_hpc "
              f"{versions.get('mnist_hpc', '?')}, commit {str(versions.get('git_commit'))[:12]}.",
              ""]
    if epochs:
        warm = ("the first epoch of each run is excluded as warm-up; throughput and epoch time "
                f"are over the remaining {', '.join(map(str, measured))} epoch(s)"
                if max(epochs) >= 2 else
                "each run trained one epoch, so the throughput includes the first (warm-up) "
                "steps")
        lines += [f"Training samples/s = training samples / training time, measured by the "
                  f"trainer with the device synchronised; {warm}. Evaluation is not timed here. "
                  f"Speedup = samples/s ÷ samples/s of the {rows[0].ranks}-rank run; "
                  f"efficiency = speedup ÷ (ranks ÷ {rows[0].ranks}) (for weak scaling this is "
                  f"the same as step-time(base) ÷ step-time(n)). Repeats: median, with the "
                  f"min–max spread. Comm = seconds per epoch during which a gradient all-reduce "
                  f"was in flight (gloo only; it overlaps the backward pass, so it bounds the "
                  f"cost from above). Slowest/median = the slowest rank's compute time ÷ the "
                  f"median rank's (the worst epoch; 1.00 is perfectly balanced); comm share = "
                  f"the median rank's communication wait ÷ training time (gloo only).", ""]
    if rows:
        header = ["ranks", "nodes", "global batch", "per-rank batch", "runs", "samples/s",
                  "min–max", "per rank", "epoch s", "step ms", "comm s", "slowest/median",
                  "comm share %", "speedup",
                  "efficiency", "val acc %", "test acc %"]
        threads = any(r.cpu_threads for r in rows)
        if threads:
            header.insert(2, "threads/rank")
        body = [[str(r.ranks), str(r.nodes), str(r.global_batch), batch_text(r.per_rank_batch),
                 str(r.runs), fmt(r.samples_per_s, 0),
                 f"{fmt(r.samples_per_s_min, 0)}–{fmt(r.samples_per_s_max, 0)}",
                 fmt(r.samples_per_s_per_rank, 0), fmt(r.epoch_s, 2), fmt(r.step_ms, 1),
                 fmt(r.comm_s, 2), fmt(r.compute_ratio, 2),
                 fmt(None if r.comm_share is None else 100 * r.comm_share, 1),
                 f"{r.speedup:.2f}", f"{r.efficiency:.2f}",
                 fmt(r.val_acc, 2), fmt(r.test_acc, 2)] for r in rows]
        if threads:
            for row, r in zip(body, rows):
                row.insert(2, str(r.cpu_threads or "–"))
        lines += [md_table(header, body), ""]
        lines += [f"![{p}]({p})" for p in plots] + [""]
    if problems:
        lines += ["## Failed or incomplete runs", "",
                  "Not in the table above:", ""]
        for r in problems:
            where = f" ({r.run_dir.name})" if r.run_dir else ""
            job = f", job {r.job_id}" if r.job_id else ""
            size = f", {r.ranks} ranks" if r.ranks else ""
            detail = f": {r.detail}" if r.detail else ""
            lines.append(f"- {r.label}{where}{job}{size}: **{r.status}**{detail}")
        lines.append("")
    if model_text:
        lines += ["## Performance model", "",
                  "Per-step time = compute + ring all-reduce of the fp32 gradients, "
                  "2(n−1)/n × bytes ÷ bandwidth + 2(n−1) × latency, with no overlap (see "
                  "mnist_hpc/sweeps/README.md).", "", model_text, ""]
    return "\n".join(lines)
