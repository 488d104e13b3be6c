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
    if report.get("allocator"):
        a = report["allocator"]
        raised = ", ".join(f"{k}={v}" for k, v in a["thresholds"].items())
        lines += ["", f"Whole CPU trainer runs, {a['repeats']} each, alternating: with {raised}, "
                      f"CPU time {a['cpu_ratio']:.3f}x and wall time {a['wall_ratio']:.3f}x "
                      f"glibc's defaults (median CPU s {a['raised']['cpu_s']:.2f} against "
                      f"{a['glibc']['cpu_s']:.2f})"]
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
    if report.get("race"):
        lines += [""] + _race_lines(report["race"])
    s = report.get("summary") or {}
    headlines = [  # (the figure a line needs, the line)
        (s.get("best_throughput_x_notebook"),
         f"  seed recipe training throughput (fp32, channels_last): "
         f"{_fmt(s.get('seed_recipe_throughput_x_notebook'))} x"),
        (s.get("best_throughput_x_notebook"),
         f"  bf16 + channels_last training throughput: "
         f"{_fmt(s.get('bf16_cl_throughput_x_notebook'))} x; best case "
         f"{_fmt(s.get('best_throughput_x_notebook'))} x"),
        (s.get("seed_epochs_wall_x_notebook"),
         f"  seed recipe's whole run, wall time: {_fmt(s.get('seed_epochs_wall_x_notebook'))} x"),
        (s.get("fast_to_99_s"),
         f"  fast preset to 99 % test (training + evaluation): "
         f"{_fmt(s.get('fast_to_99_s'), '.1f')} s = "
         f"{_fmt(s.get('fast_to_99_x_notebook_epochs'))} x the notebook's whole run "
         f"({_fmt(s.get('notebook_epochs_wall_s'), '.1f')} s)"),
        (s.get("fast_train_x_published"),
         f"  fast preset against the published recipe: training "
         f"{_fmt(s.get('fast_train_x_published'))} x, whole command "
         f"{_fmt(s.get('fast_command_x_published'))} x its in-process time")]
    shown = [line for figure, line in headlines if figure is not None]
    if shown:
        lines += ["", "Summary (x notebook: ratio to the notebook's figure on this machine)",
                  *shown]
    return "\n".join(lines)


def _race_lines(race: dict) -> list[str]:
    lines = ["The fast preset against the fastest published recipe (tuomaso/train_mnist_fast), "
             "alternating seed by seed; test accuracy %, seconds to the end of training",
             f"{'seed':>4} {'published':>9} {'train s':>8} {'fast':>6} {'train s':>8} "
             f"{'command':>8} {'wall s':>7}"]
    for row in race["seeds"]:
        p, o, c = row["published"], row["ours"], row["command"]
        lines.append(f"{row['seed']:>4} {p['test_acc']:>9.2f} {p['train_s']:>8.2f} "
                     f"{o['test_acc']:>6.2f} {o['train_s']:>8.2f} {c['test_acc']:>8.2f} "
                     f"{c['wall_s']:>7.2f}")
    m, n, hits = race["median"], len(race["seeds"]), race["at_least_99"]
    return lines + [
        f"medians: training {m['fast_train_s']:.2f} s (fast) / {m['published_train_s']:.2f} s "
        f"(published) = {race['train_ratio']:.2f}x; the whole train command "
        f"{m['command_wall_s']:.2f} s / the published in-process {m['published_in_process_s']:.2f}"
        f" s = {race['command_ratio']:.2f}x",
        f"seeds at >= 99.0 % test: published {hits['published']}/{n}, fast {hits['ours']}/{n} "
        f"(whole command {hits['command']}/{n})"]


def summary(report: dict) -> dict:
    """The headline ratios, each None when its parts were not measured."""
    rows = report["throughput"]

    def ratio(name: str) -> Optional[float]:
        return rows.get(name, {}).get("ratio_to_notebook")

    epochs = report["epochs"] or {}
    fast = report["time_to_accuracy"].get("fast", {})
    hit = (fast.get("reached") or {}).get("99")
    notebook_wall = epochs.get("notebook", {}).get("wall_s")
    race = report.get("race") or {}
    return {
        "fast_train_x_published": race.get("train_ratio"),
        "fast_command_x_published": race.get("command_ratio"),
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
