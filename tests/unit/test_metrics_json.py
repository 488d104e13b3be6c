"""metrics.json's one schema: what the writer writes, the reader gives back exactly; a file off
the schema is refused with the file and the key named; ``python -m mnist_hpc.metrics`` reads
through it."""

from __future__ import annotations

import copy
import json

import pytest
from scaling_helpers import metrics_record

from mnist_hpc import metrics as metrics_cli
from mnist_hpc.run import metrics_json


@pytest.mark.parametrize("status", metrics_json.STATUSES)
def test_a_written_file_reads_back_exactly(tmp_path, status):
    record = metrics_record(tmp_path.name, ranks=2, epoch_s=(2.0, 1.5), status=status,
                            job_id="77", comm_s=0.25)
    error = "rank 1: RuntimeError: boom" if status == metrics_json.FAILED else None
    metrics_json.write(tmp_path, record, status, error)
    expected = {**record, "status": status, **({"error": error} if error else {})}
    assert metrics_json.read(tmp_path) == expected
    assert metrics_json.read(tmp_path / metrics_json.FILENAME) == expected
    assert metrics_json.status(tmp_path) == status
    assert [p.name for p in tmp_path.iterdir()] == [metrics_json.FILENAME]  # no temp file


def test_the_writer_refuses_an_unknown_status(tmp_path):
    with pytest.raises(ValueError, match="status 'done' is not one of running, completed"):
        metrics_json.write(tmp_path, metrics_record("r"), "done")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def spoil(record: dict, path: str, value=KeyError) -> dict:
    """``record`` with the value at a dotted ``path`` replaced (KeyError: removed)."""
    spoiled = copy.deepcopy(record)
    *parents, last = path.split(".")
    inner = spoiled
    for part in parents:
        inner = inner[int(part)] if isinstance(inner, list) else inner[part]
    if value is KeyError:
        del inner[last]
    else:
        inner[last] = value
    return spoiled


REFUSED = {
    "a missing top-level key": ("versions", KeyError, "key 'versions' is missing"),
    "a missing final figure": ("final.test_acc", KeyError, "key 'final.test_acc' is missing"),
    "completed without final figures": ("final", {}, "key 'final.test_acc' is missing"),
    "a missing per-rank figure": ("epochs.0.ranks.slowest.host", KeyError,
                                  "key 'epochs[0].ranks.slowest.host' is missing"),
    "a string for a count": ("world.world_size", "2",
                             "'world.world_size' should be an integer, found str '2'"),
    "true for a count": ("batch.steps_per_epoch", True,
                         "'batch.steps_per_epoch' should be an integer, found bool True"),
    "null where a number belongs": ("epochs.0.train_s", None,
                                    "'epochs[0].train_s' should be a number, found null"),
    "a wrong list item": ("world.hostnames", ["h", 3],
                          "'world.hostnames[1]' should be a string, found int 3"),
    "an unknown status": ("status", "done", "'status' is 'done', expected one of running, "
                                            "completed, failed, preempted"),
    "another schema version": ("schema", 2, "schema 2, but this version of mnist_hpc reads "
                                            "schema 1; read it with the version that wrote it"),
    "no schema at all": ("schema", KeyError, "key 'schema' is missing"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_the_reader_refuses_a_file_off_the_schema_and_names_the_key(tmp_path, case):
    path, value, message = REFUSED[case]
    target = tmp_path / metrics_json.FILENAME
    target.write_text(json.dumps(spoil(metrics_record("r"), path, value)))
    with pytest.raises(metrics_json.MetricsError) as refused:
        metrics_json.read(tmp_path)
    assert str(refused.value) == f"{target}: {message}"


@pytest.mark.parametrize("text, message", [("{\"schema\": 1,", "is not JSON"),
                                           ("[1, 2]", "expected a JSON object, found list")])
def test_the_reader_refuses_what_is_not_a_json_object(tmp_path, text, message):
    (tmp_path / metrics_json.FILENAME).write_text(text)
    with pytest.raises(metrics_json.MetricsError, match=f"^{tmp_path}.*{message}"):
        metrics_json.read(tmp_path)
    assert metrics_json.status(tmp_path) is None


def test_a_running_file_has_no_final_figures_and_keys_may_be_added(tmp_path):
    record = {**metrics_record("r", status=metrics_json.RUNNING), "added_later": {"x": 1}}
    assert record["final"] == {}
    (tmp_path / metrics_json.FILENAME).write_text(json.dumps(record))
    assert metrics_json.read(tmp_path) == record


def test_status_alone_is_read_from_any_file_that_names_one(tmp_path):
    """A completed run must be recognised (and never reused) even from a file the reader
    refuses."""
    (tmp_path / metrics_json.FILENAME).write_text('{"status": "completed"}')
    assert metrics_json.status(tmp_path) == metrics_json.COMPLETED
    (tmp_path / metrics_json.FILENAME).write_text('{"status": "finished"}')
    assert metrics_json.status(tmp_path) is None
    assert metrics_json.status(tmp_path / "absent") is None


def test_epoch_curves_leave_out_unknown_figures():
    epoch = metrics_record("r")["epochs"][0]
    curves = metrics_json.epoch_curves(epoch)
    assert "mfu" not in curves and curves["val_acc"] == epoch["val_acc"]
    assert set(curves) == set(metrics_json.EPOCH_CURVES) - {"mfu"}


# --- python -m mnist_hpc.metrics ------------------------------------------------------------

def cli(capsys, *args) -> tuple[int, str, str]:
    code = metrics_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def run_dir(tmp_path):
    record = metrics_record("run-1", epoch_s=(2.0, 1.25))
    metrics_json.write(tmp_path, record, metrics_json.COMPLETED)
    return tmp_path


@pytest.mark.parametrize("key, printed", [("final.test_acc", "92.5"), ("status", "completed"),
                                          ("epochs.1.train_s", "1.25"),
                                          ("world.backend", "null"),
                                          ("batch.cuda_graphs", "false")])
def test_get_prints_one_value(capsys, run_dir, key, printed):
    assert cli(capsys, "get", run_dir, key) == (0, printed + "\n", "")


@pytest.mark.parametrize("key, message", [
    ("final.test_ac", "error: final.test_ac: no 'test_ac' in final; it holds one of test_acc, "),
    ("epochs.2.train_s", "error: epochs.2.train_s: no '2' in epochs; it holds an index below 2"),
    ("status.x", "error: status.x: no 'x' in status; it holds nothing"),
])
def test_get_names_a_key_that_is_not_there(capsys, run_dir, key, message):
    code, out, err = cli(capsys, "get", run_dir, key)
    assert code == 2 and out == "" and err.startswith(message)


def test_summary_is_gpu_checks_line(capsys, run_dir):
    assert cli(capsys, "summary", run_dir) == (
        0, "startup_s 2.00, warmup_s 0.00, train_s 3.25 (epochs: 2.00, 1.25), test 92.50 %, "
           "fp32, cuda_graphs False\n", "")


def test_reading_a_bad_file_exits_2_naming_it(capsys, run_dir):
    target = run_dir / metrics_json.FILENAME
    target.write_text(json.dumps(spoil(metrics_json.read(run_dir), "final.train_s")))
    assert cli(capsys, "summary", run_dir) == (
        2, "", f"error: {target}: key 'final.train_s' is missing\n")
    code, _, err = cli(capsys, "get", run_dir / "absent", "status")
    assert code == 2 and "give a run directory that holds a metrics.json" in err


@pytest.mark.parametrize("args", [[], ["status"], ["get", "x"], ["summary", "x", "y"],
                                  ["show", "x"]])
def test_usage(capsys, args):
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == "" and err.startswith("usage: python -m mnist_hpc.metrics")


def test_status_prints_nothing_where_there_is_nothing_to_read(capsys, run_dir, tmp_path):
    assert cli(capsys, "status", run_dir) == (0, "completed\n", "")
    assert cli(capsys, "status", tmp_path / "absent") == (0, "\n", "")
