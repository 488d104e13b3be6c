"""MNIST offline: verification by content, the notebook's split, exact shards and batches."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, clean_env, run_trainer

from mnist_hpc.data import mnist_files
from mnist_hpc.errors import UsageError


@pytest.mark.parametrize("how, pattern", [
    ("truncated", r"t10k-images-idx3-ubyte.gz is corrupt or truncated"),
    ("flipped", r"t10k-images-idx3-ubyte.gz is corrupt or truncated \(md5"),
])
def test_damaged_file_is_refused(data_copy, how, pattern):
    _corrupt(mnist_files.raw_dir(data_copy) / "t10k-images-idx3-ubyte.gz", how)
    with pytest.raises(UsageError, match=pattern):
        mnist_files.load_raw(data_copy)


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_damaged_file_exits_2_with_one_line(data_copy, tmp_path, how):
    _corrupt(mnist_files.raw_dir(data_copy) / "train-images-idx3-ubyte.gz", how)
    result = run_trainer(["--data-dir", str(data_copy), "--results-dir", str(tmp_path / "r"),
                          "--limit", "64"])
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train-images-idx3-ubyte.gz is corrupt" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


@pytest.mark.waits
def test_download_behind_a_proxy_that_never_answers_gives_up_with_where_to_put_the_files(
        tmp_path):
    """Every network wait of --download is bounded: the proxy accepts and never replies."""
    result = subprocess.run([sys.executable, "-c", DOWNLOAD_BEHIND_A_SILENT_PROXY,
                             str(tmp_path)], cwd=REPO, env=clean_env(), capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    timing, message = result.stdout.strip().splitlines()[-2:]
    seconds, connections = timing.split()
    assert int(connections) >= 1, "the download never reached the proxy"
    # two mirrors for each of four files at most, 2 s a wait: 16 s plus Python's own time,
    # which a loaded 2-core machine stretches to ~27 s; unbounded waits would reach 180 s
    assert float(seconds) < 60
    raw = mnist_files.raw_dir(tmp_path)
    assert message == (f"downloading MNIST into {raw} failed (TimeoutError: timed out); copy "
                       f"the four MNIST .gz files into {raw} (this repo carries them in "
                       f"data/MNIST/raw/) or point --data-dir at a directory holding MNIST/raw/")


def _corrupt(path: Path, how: str) -> None:
    content = gzip.decompress(path.read_bytes())
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif how == "flipped":
        flipped = bytearray(content)
        flipped[5000] ^= 0x01
        path.write_bytes(gzip.compress(bytes(flipped), compresslevel=1))  # level 9: 12 s of CPU


DOWNLOAD_BEHIND_A_SILENT_PROXY = """
import socket, sys, threading, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
held = []
threading.Thread(target=lambda: [held.append(listener.accept()) for _ in iter(int, 1)],
                 daemon=True).start()
import os
proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
os.environ["HTTPS_PROXY"] = os.environ["HTTP_PROXY"] = proxy
from mnist_hpc.data import mnist_files
from mnist_hpc.errors import UsageError
mnist_files.DOWNLOAD_TIMEOUT_S = 2.0
started = time.monotonic()
try:
    mnist_files.load_raw(sys.argv[1], download=True)
except UsageError as exc:
    print(f"{time.monotonic() - started:.1f} {len(held)}")
    print(exc)
"""
