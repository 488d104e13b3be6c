"""Checkpoints: refused when they belong to another recipe, loaded only as data, written so
that a crash never leaves a torn file, and found the way a requeued job looks for them.

Most tests call ``train.main`` in-process (a refused resume fails in well under a second);
the crash tests kill a real process in the middle of a write.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from mnist_hpc import files
from mnist_hpc.errors import UsageError
from mnist_hpc.run import checkpoint, rundir

# --- a checkpoint of another recipe ----------------------------------------------------------


# --- damaged and foreign files ---------------------------------------------------------------


# --- crashes in the middle of a write --------------------------------------------------------


def test_atomic_write_really_is_the_rename(tmp_path, monkeypatch):
    """A mutation check in-process: replacing the rename by a copy makes the crash visible."""
    target = tmp_path / "metrics.json"
    files.atomic_write(target, '{"status": "running"}\n')
    monkeypatch.setattr(rundir.os, "replace",
                        lambda src, dst: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        files.atomic_write(target, '{"status": "completed"}\n')
    assert json.loads(target.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_storage_error_names_the_file(tmp_path):
    """The OS's own message names no file (a full disk) or only the temporary one."""
    gone = tmp_path / "run"  # a run directory removed under the run
    with pytest.raises(OSError, match=rf"^\[Errno 2\] cannot write {gone}/metrics\.json: "
                                      rf"No such file or directory$"):
        files.atomic_write(gone / "metrics.json", "{}\n")
    # the temporary file's writes go to /dev/full, which fails them with ENOSPC as a full
    # disk does (the first write of a payload larger than the buffer)
    with open("/dev/full", "wb") as sink, pytest.MonkeyPatch.context() as patch:
        patch.setattr(files.os, "fdopen", lambda fd, mode: (os.close(fd), sink)[1])
        with pytest.raises(OSError, match=rf"cannot write {tmp_path}/history\.csv: No space "
                                          rf"left on device") as raised:
            files.atomic_write(tmp_path / "history.csv", "x" * 100_000)
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_written_files_get_the_usual_permissions(tmp_path):
    """mkstemp makes 0600 files; results on a shared filesystem must stay readable by the
    group, as any file the user's umask allows."""
    previous = os.umask(0o022)
    try:
        files.atomic_write(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644


# --- which run to resume ---------------------------------------------------------------------

def _fake_run(root: Path, name: str, status: str, mtime: float) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"status": status}))
    (run / "checkpoint.pt").write_bytes(b"x")
    os.utime(run / "checkpoint.pt", (mtime, mtime))
    return run


def test_resume_latest_takes_the_newest_unfinished_run(tmp_path):
    _fake_run(tmp_path, "old-preempted", "preempted", 1_000)
    newest_unfinished = _fake_run(tmp_path, "preempted", "preempted", 2_000)
    _fake_run(tmp_path, "finished-later", "completed", 3_000)
    assert rundir.find_resumable(tmp_path) == newest_unfinished
    assert checkpoint.resolve("latest", str(tmp_path), None) == newest_unfinished
    (newest_unfinished / "metrics.json").write_text('{"status": "completed"}')
    (tmp_path / "old-preempted" / "metrics.json").write_text('{"status": "completed"}')
    with pytest.raises(UsageError, match="found no unfinished run"):
        checkpoint.resolve("latest", str(tmp_path), None)


# --- completed runs stay completed -----------------------------------------------------------

def test_a_completed_run_is_never_resumed(tmp_path):
    done = _fake_run(tmp_path, "done", "completed", 1_000)
    message = f"run {done} completed; nothing to resume; start a new run with another --run-id"
    with pytest.raises(UsageError) as refused:
        checkpoint.resolve(str(done), str(tmp_path), None)
    assert str(refused.value) == message
    with pytest.raises(UsageError) as refused:
        checkpoint.resolve("auto", str(tmp_path), "done")
    assert str(refused.value) == message
    preempted = _fake_run(tmp_path, "preempted", "preempted", 2_000)
    assert checkpoint.resolve(str(preempted), str(tmp_path), None) == preempted
    assert checkpoint.resolve("auto", str(tmp_path), "preempted") == preempted


def test_resume_auto_of_a_completed_run_is_a_no_op_with_a_message(tmp_path):
    _fake_run(tmp_path, "done", "completed", 1_000)
    _fake_run(tmp_path, "preempted", "preempted", 2_000)
    assert rundir.completed_message("auto", tmp_path, "done") == (
        f"Run {tmp_path / 'done'} is complete; nothing to do (start a new run with another "
        f"--run-id)")
    assert rundir.completed_message("auto", tmp_path, "preempted") is None
    assert rundir.completed_message("auto", tmp_path, "never-ran") is None
    assert rundir.completed_message(str(tmp_path / "done"), tmp_path, None) is None


# --- every model resumes ------------------------------------------------------------------

