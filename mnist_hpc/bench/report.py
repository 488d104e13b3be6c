"""The report: the table printed to stdout, the headline ratios, and what failed."""

from __future__ import annotations

from typing import Optional


def _fmt(value: Optional[float], spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [f"mnist_hpc.bench on {m['device']} ({m['gpu_name'] or m['cpu_model']}; "
             f"{m['cpu_count']} CPUs, {m['torch_threads']} torch threads; torch {m['torch']})",
             f"load average at start {m['loadavg_start'][0]:.2f}, at end "
             f"{m['loadavg_end'][0]:.2f}"]
    if report.get("throughput"):
        s = report["settings"]
        lines += ["", f"Training throughput ({s['repeats']} repeats of ~{s['samples']} samples "
                      f"after {s['warmup']} warm-up steps; median [min-max])",
                  f"{'case':<14} {'batch':>5} {'samples/s':>10} {'[min-max]':>17} "
                  f"{'x notebook':>10} {'warm-up s':>9}  description"]
        for name, row in report["throughput"].items():
            if "samples_per_s" not in row:
                lines.append(f"{name:<14} {row['batch_size']:>5} {'failed':>10}  "
                             f"{row.get('error', '')}")
                continue
            rate = row["samples_per_s"]
            spread = f"[{rate['min']:,.0f}-{rate['max']:,.0f}]"
            lines.append(f"{name:<14} {row['batch_size']:>5} {rate['median']:>10,.0f} "
                         f"{spread:>17} {_fmt(row['ratio_to_notebook']):>10} "
                         f"{row['warmup_s']:>9.1f}  {row['description']}")
    if report.get("overhead"):
        o = report["overhead"]
        lines += ["", f"Per-rank timing + steps.jsonl every {o['log_every']} steps: {o['steps']} "
                      f"steps of batch {o['batch_size']} take {o['ratio']:.3f}x the plain time "
                      f"({100 * (o['ratio'] - 1):+.1f} %)"]
    if report.get("epochs"):
        e = report["epochs"]
        nb, pk = e["notebook"], e["package"]
        lines += ["", f"Seed recipe, {e['epochs']} epochs with the notebook's evaluations "
                      f"(train + val splits) after each",
                  f"{'':<10} {'wall s':>8} {'train s':>8} {'eval s':>8} {'samples/s':>10} "
                  f"{'val acc':>8}",
                  f"{'notebook':<10} {nb['wall_s']:>8.1f} {nb['train_s']:>8.1f} "
                  f"{nb['eval_s']:>8.1f} {nb['train_samples_per_s']:>10,.0f} "
                  f"{nb['history'][-1][2]:>8.2f}",
                  f"{'package':<10} {pk['wall_s']:>8.1f} {pk['train_s']:>8.1f} "
                  f"{pk['eval_s']:>8.1f} {pk['train_samples_per_s']:>10,.0f} "
                  f"{pk['history'][-1][2]:>8.2f}   (wall includes "
                  f"{pk['data_load_s']:.1f} s loading data)",
                  f"wall-time ratio package/notebook: {e['wall_ratio']:.2f}; training speed-up "
                  f"{e['train_speedup']:.2f}x; largest accuracy difference "
                  f"{e['accuracy_max_abs_diff']:.3g} points"]
    if report.get("time_to_accuracy"):
        targets = report["settings"]["targets"]
        lines += ["", "Time to test accuracy (training s + evaluation s beside it; "
                      "evaluated on the test split as training goes)",
                  f"{'preset':<10} {'prec':>5} "
                  + " ".join(f"{'to ' + format(t, 'g') + ' %':>18}" for t in targets)
                  + f" {'final %':>8} {'train s':>8} {'eval s':>7}"]
        for preset, row in report["time_to_accuracy"].items():
            if "error" in row:
                lines.append(f"{preset:<10} failed: {row['error']}")
                continue
            cells = []
            for target in targets:
                hit = row["reached"][f"{target:g}"]
                cells.append(f"{'not reached':>18}" if hit is None else
                             f"{hit['train_s']:>8.1f} +{hit['eval_s']:>5.1f} @{hit['epoch']:.2f}")
            lines.append(f"{preset:<10} {row['precision']:>5} " + " ".join(cells)
                         + f" {row['final_test_acc']:>8.2f} {row['train_s']:>8.1f} "
                           f"{row['eval_s']:>7.1f}")
        lines.append("(@: epochs trained when first reached)")
    s = report.get("summary") or {}
    if any(v is not None for v in s.values()):
        lines += ["", "Summary (x notebook: ratio to the notebook's figure on this machine)",
                  f"  seed recipe training throughput (fp32, channels_last): "
                  f"{_fmt(s['seed_recipe_throughput_x_notebook'])} x",
                  f"  bf16 + channels_last training throughput: "
                  f"{_fmt(s['bf16_cl_throughput_x_notebook'])} x; best case "
                  f"{_fmt(s['best_throughput_x_notebook'])} x",
                  f"  seed recipe's whole run, wall time: "
                  f"{_fmt(s['seed_epochs_wall_x_notebook'])} x",
                  f"  fast preset to 99 % test (training + evaluation): "
                  f"{_fmt(s['fast_to_99_s'], '.1f')} s = "
                  f"{_fmt(s['fast_to_99_x_notebook_epochs'])} x the notebook's whole run "
                  f"({_fmt(s['notebook_epochs_wall_s'], '.1f')} s)"]
    return "\n".join(lines)


def summary(report: dict) -> dict:
    """The headline ratios, each None when its parts were not measured."""
    rows = report["throughput"]

    def ratio(name: str) -> Optional[float]:
        return rows.get(name, {}).get("ratio_to_notebook")

    epochs = report["epochs"] or {}
    fast = report["time_to_accuracy"].get("fast", {})
    hit = (fast.get("reached") or {}).get("99")
    notebook_wall = epochs.get("notebook", {}).get("wall_s")
    return {
        # the seed preset's own path: device-resident, fp32, channels_last
        "seed_recipe_throughput_x_notebook": ratio("device_cl"),
        "bf16_cl_throughput_x_notebook": ratio("bf16_cl"),
        "best_throughput_x_notebook": max((r for r in map(ratio, rows) if r), default=None),
        "seed_epochs_wall_x_notebook": epochs.get("wall_ratio"),
        "fast_to_99_s": hit["wall_s"] if hit else None,
        "notebook_epochs_wall_s": notebook_wall,
        "fast_to_99_x_notebook_epochs": (hit["wall_s"] / notebook_wall
                                         if hit and notebook_wall else None),
    }


def failures(report: dict) -> list[str]:
    """One line per measurement that failed; any of them makes the exit status 1."""
    found = [f"{name}: {row['error']}" for name, row in report["throughput"].items()
             if "error" in row]
    found += [f"tta_{name}: {row['error']}" for name, row in report["time_to_accuracy"].items()
              if "error" in row]
    return found
