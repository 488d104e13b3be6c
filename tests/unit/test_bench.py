"""The benchmark's options in-process: case groups, bad numbers and argparse errors exit 2,
the machine record. The quick run itself: tests/run/test_bench_cli.py."""

from __future__ import annotations

import pytest
import torch

from mnist_hpc import bench
from mnist_hpc.bench import cli, machine, names, run, settings, throughput
from mnist_hpc.errors import UsageError


def test_every_case_is_named_once():
    assert list(throughput.CASES) == [*names.THROUGHPUT_CASES, *names.CUDA_CASES]


def test_groups_expand_and_gpu_cases_need_a_gpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert run._selected("throughput", cpu, False) == list(names.THROUGHPUT_CASES)
    assert (run._selected("throughput", cuda, False)[-len(names.CUDA_CASES):]
            == list(names.CUDA_CASES))
    assert not any(throughput.CASES[n].graphs for n in run._selected(None, cpu, False)
                   if n in throughput.CASES)
    assert run._selected("notebook,tta,notebook", cpu, False) == [
        "notebook", "tta_default", "tta_fast"]
    everything = run._selected(None, cpu, False)
    assert "compiled" in everything and "epochs" in everything
    assert "compiled" not in run._selected(None, cpu, True)
    with pytest.raises(UsageError, match="unknown name"):
        run._selected("fastest", cpu, False)


def test_bad_numbers_are_refused():
    args = cli.build_parser().parse_args(["--repeats", "0"])
    with pytest.raises(UsageError, match="--repeats"):
        settings.settings_from(args, torch.device("cpu"))
    args = cli.build_parser().parse_args(["--targets", "98,x"])
    with pytest.raises(UsageError, match="--targets"):
        settings.settings_from(args, torch.device("cpu"))


def test_argparse_errors_are_one_line_and_exit_2(capsys, tmp_path):
    # bench.main: what the console script's main_exit runs
    assert bench.main(["--repeats", "many", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--repeats" in err and "'many'" in err
    assert not (tmp_path / "b.json").exists()


def test_cpu_model_is_read():
    assert machine.cpu_model()
