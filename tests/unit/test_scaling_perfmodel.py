"""mnist_hpc.scaling.perfmodel: the ring all-reduce model and the ``model`` subcommand."""

from __future__ import annotations

import json

import pytest
from scaling_helpers import cli

from mnist_hpc.scaling import perfmodel


def test_ring_allreduce_model():
    nbytes = 1_199_882 * 4
    assert perfmodel.allreduce_s(1, nbytes, 25, 10) == 0.0
    two = perfmodel.allreduce_s(2, nbytes, 25, 10)
    assert two == pytest.approx(nbytes / 25e9 + 2 * 10e-6)
    big = perfmodel.allreduce_s(1024, nbytes, 25, 0)
    assert big == pytest.approx(2 * 1023 / 1024 * nbytes / 25e9)
    rows = perfmodel.predict([1, 2, 4, 512], "strong", 512, 1e-5, nbytes, 1.25, 50, 1)
    assert rows[0]["speedup"] == 1.0 and rows[0]["efficiency"] == 1.0
    assert [r["efficiency"] for r in rows] == sorted((r["efficiency"] for r in rows),
                                                     reverse=True)
    weak = perfmodel.predict([1, 8], "weak", 128, 1e-5, nbytes, 25, 10, 1)
    assert weak[1]["per_rank_batch"] == 128 and weak[1]["step_ms"] > weak[0]["step_ms"]


def test_model_subcommand(capsys):
    code, out, err = cli(capsys, "model", "--compute-ms", "20", "--network", "1.25,50",
                         "--ranks", "1,2,64")
    assert code == 0, err
    assert "| 64 |" in out and "4.80 MB" in out


@pytest.mark.parametrize("args, message", [
    (["--ranks", "1,x"], "--ranks '1,x' must be rank counts separated by commas"),
    (["--ranks", "1,2,2"], "--ranks lists a value twice"),
    (["--batch", "0"], "argument --batch: '0' is not a whole number >= 1"),
    (["--params", "-1"], "argument --params: '-1' is not a whole number >= 1"),
    (["--network", "0,10"], "--network '0,10': bandwidth must be > 0"),
    (["--network", "nan,10"], "--network 'nan,10': bandwidth must be > 0"),
    (["--network", "25"], "--network '25': give GB_PER_S,LATENCY_US"),
])
def test_model_refuses_bad_numbers(capsys, args, message):
    code, out, err = cli(capsys, "model", "--compute-ms", "20", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "x"])
def test_model_refuses_a_compute_time_that_is_not_positive(capsys, value):
    code, _, err = cli(capsys, "model", "--compute-ms", value)
    assert code == 2 and f"argument --compute-ms: '{value}' is not a number > 0" in err


def test_model_takes_the_network_from_a_doctor_report(capsys, tmp_path):
    report = tmp_path / "doctor.json"
    report.write_text(json.dumps({"allreduce": {"bus_bandwidth_gbs": 2.5,
                                                "hop_latency_us": 40.0}}))
    code, out, err = cli(capsys, "model", "--compute-ms", "20", "--from", str(report),
                         "--ranks", "1,2")
    assert code == 0, err
    assert "Network: 2.5 GB/s per link, 40 µs per hop" in out


@pytest.mark.parametrize("content, message", [
    (None, "cannot read a doctor.json"),
    ("not json", "cannot read a doctor.json"),
    ('{"allreduce": null}', "no all-reduce measurement in it"),
    ('{"allreduce": {"bus_bandwidth_gbs": 0, "hop_latency_us": 5}}', "bandwidth must be > 0"),
])
def test_model_refuses_an_unusable_doctor_report(capsys, tmp_path, content, message):
    report = tmp_path / "doctor.json"
    if content is not None:
        report.write_text(content)
    code, out, err = cli(capsys, "model", "--compute-ms", "20", "--from", str(report))
    assert code == 2 and out == "" and message in err and len(err.splitlines()) == 1, err


def test_model_takes_one_network_source(capsys, tmp_path):
    code, _, err = cli(capsys, "model", "--compute-ms", "20", "--network", "25,10",
                       "--from", str(tmp_path / "doctor.json"))
    assert code == 2 and "give --network or --from, not both" in err
