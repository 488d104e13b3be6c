"""mnist_hpc.scaling.sweep: the sweep file checked whole, and the plan of runs it implies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scaling_helpers import cli, write_sweep

from mnist_hpc.scaling import sweep as scaling_sweep


def plan_json(capsys, sweep: Path) -> list[dict]:
    code, out, err = cli(capsys, "plan", sweep, "--json")
    assert code == 0, err
    return json.loads(out)["runs"]


def test_plan_strong_fixes_the_global_batch(tmp_path, capsys):
    sweep = write_sweep(tmp_path, """\
        mode: strong
        ranks: [1, 2, 4, 8]
        ranks_per_node: 4
        batch_size: 512
        repeats: 2
        """)
    runs = plan_json(capsys, sweep)
    assert [r["ranks"] for r in runs] == [1, 2, 4, 8] * 2  # repeats outermost
    assert [r["repeat"] for r in runs] == [0] * 4 + [1] * 4
    assert {r["global_batch"] for r in runs} == {512}
    assert [r["per_rank_batch"] for r in runs[:4]] == [512, 256, 128, 64]
    assert [r["nodes"] for r in runs[:4]] == [1, 1, 1, 2]
    assert [r["ranks_per_node"] for r in runs[:4]] == [1, 2, 4, 4]
    assert all(r["train_args"][:4] == ["--batch-size", "512", "--batch-mode", "global"]
               for r in runs)
    code, out, _ = cli(capsys, "plan", sweep)
    assert code == 0 and "n2-r8-rep1" in out and "fixed global batch 512" in out


def test_plan_weak_fixes_the_per_rank_batch(tmp_path, capsys):
    sweep = write_sweep(tmp_path, """\
        mode: weak
        nodes: [1, 2, 4]
        ranks_per_node: 4
        batch_size: 128
        """)
    runs = plan_json(capsys, sweep)
    assert [r["ranks"] for r in runs] == [4, 8, 16]
    assert [r["global_batch"] for r in runs] == [512, 1024, 2048]
    assert {r["per_rank_batch"] for r in runs} == {128}
    assert all(r["batch_mode"] == "per-rank" for r in runs)
    assert all(r["train_args"][:4] == ["--batch-size", "128", "--batch-mode", "per-rank"]
               for r in runs)


def test_plan_pairs_every_node_count_with_every_ranks_per_node(tmp_path, capsys):
    """1 and 2 nodes x 1 and 2 ranks each: the 2-rank points on one node and on two are
    points of their own."""
    sweep = write_sweep(tmp_path, """\
        mode: strong
        nodes: [2, 1]
        ranks_per_node: [1, 2]
        batch_size: 256
        """)
    runs = plan_json(capsys, sweep)
    assert [(r["label"], r["nodes"], r["ranks_per_node"]) for r in runs] == [
        ("n1-r1-rep0", 1, 1), ("n1-r2-rep0", 1, 2), ("n2-r2-rep0", 2, 1), ("n2-r4-rep0", 2, 2)]
    loaded = scaling_sweep.load_sweep(str(sweep))
    assert (loaded.ranks, loaded.nodes, loaded.ranks_per_node) == ((1, 2, 2, 4), (1, 1, 2, 2), 2)


def test_plan_takes_the_batch_and_epochs_from_the_config(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("batch_size: 256\nepochs: 5\n")
    sweep = write_sweep(tmp_path, "mode: strong\nranks: [1, 2]\nconfig: mine.yaml\n")
    code, out, err = cli(capsys, "plan", sweep, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["sweep"]["config"] == str(config)  # absolute: jobs run elsewhere
    assert data["sweep"]["epochs"] == 5
    assert {r["global_batch"] for r in data["runs"]} == {256}


@pytest.mark.parametrize("body, message", [
    ("mode: strong\nranks: [1]\nrepeat: 2\n", "unknown key 'repeat'"),
    ("mode: strong\nranks: [1]\npbs: {queues: debug}\n", "unknown key 'queues' in the pbs"),
    ("mode: strong\nranks: [1]\nslurm: {partiton: x}\n", "did you mean 'partition'"),
    ("mode: medium\nranks: [1]\n", "mode must be strong or weak"),
    ("mode: strong\n", "exactly one of ranks"),
    ("mode: strong\nranks: [1]\nnodes: [1]\n", "exactly one of ranks"),
    ("mode: strong\nnodes: [1, 2]\n", "needs ranks_per_node"),
    ("mode: strong\nranks: [1, 0]\n", "positive integer"),
    ("mode: strong\nranks: [2, 2]\n", "lists a value twice"),
    ("mode: strong\nranks: [4, 6]\nranks_per_node: 4\n", "do not fill whole nodes"),
    ("mode: strong\nranks: [2]\nranks_per_node: [1, 2]\n", "(a list only with nodes)"),
    ("mode: strong\nnodes: [1]\nranks_per_node: [2, 2]\n", "ranks_per_node lists a value"),
    ("mode: strong\nranks: [1, 8]\nbatch_size: 4\n", "raise batch_size"),
    ("mode: strong\nranks: [1]\ntrain_args: --epochs 3\n", "may not contain --epochs"),
    ("mode: strong\nranks: [1]\ntrain_args: --batch-mode per-rank\n", "use the sweep key mode"),
    ("mode: strong\nranks: [1]\ntrain_args: --lr -1\n", "lr must be > 0"),
    ("mode: strong\nranks: [1]\ntrain_args: --no-such-flag\n", "unrecognized arguments"),
    ("mode: strong\nranks: [1]\nconfig: nope\n", "no preset named 'nope'"),
    ("mode: strong\nranks: [1]\npbs: {walltime: 1:00:00}\n", "write it in quotes"),
    ("mode: strong\nranks: [1\n", "YAML syntax error"),
])
def test_bad_sweeps_exit_2_naming_the_problem(tmp_path, capsys, body, message):
    code, out, err = cli(capsys, "plan", write_sweep(tmp_path, body))
    assert code == 2
    assert message in err, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_shipped_sweeps_are_valid(capsys):
    shipped = sorted(p.stem for p in scaling_sweep.SWEEPS_DIR.glob("*.yaml"))
    assert {"local_cpu", "polaris_strong", "polaris_weak", "slurm_cpu"} <= set(shipped)
    for name in shipped:
        code, out, err = cli(capsys, "plan", name)
        assert code == 0, (name, err)
