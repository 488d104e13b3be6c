"""Bad input of every kind: exit 2, one ``error:`` line that names the problem, no
traceback, nothing written.

The table covers the command line, YAML files, the data directory, the results directory,
launcher environments and resuming. The cases fail before training, so they are run together
(one module fixture) and each test only reads its case's outcome. Cases refused before torch
loads run as real processes, a few at a time; so do those that need a launcher or fewer
privileges. The others (``FAST`` cases, refused once torch is loaded) call ``train.main`` in
this process, which has torch loaded already: as real processes they cost 1.5 s of CPU each.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
from conftest import REPO, clean_env, train_in_this_process

from mnist_hpc.config.options import CHOICES
from mnist_hpc.data import mnist_files


RAW = REPO / "data" / "MNIST" / "raw"
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
SETPRIV = shutil.which("setpriv")
IS_ROOT = os.geteuid() == 0
# Root reads and writes whatever the mode bits say; without these two capabilities it obeys
# them like anyone else, so "unreadable" and "read-only" are real again.
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search"]
needs_unprivileged = pytest.mark.skipif(IS_ROOT and SETPRIV is None,
                                        reason="as root, permission bits need setpriv to bite")
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec (pip install mpich) missing")
FAST = ["--limit", "64", "--epochs", "1", "--device", "cpu"]


@dataclass
class Case:
    """Arguments (``{tmp}``, ``{data}`` and ``{results}`` are filled in), an optional set-up
    of the case's private directory, environment and launcher, and the expected error."""

    args: list[str]
    pattern: str
    setup: Optional[Callable[[Path], None]] = None
    env: dict = field(default_factory=dict)
    launcher: Optional[list[str]] = None
    drop_privileges: bool = False


# --- set-ups ---------------------------------------------------------------------------------

def data_copy(tmp: Path) -> Path:
    """A private data dir: links to the carried files (and their decompressed copies, where
    made already), so a case replaces only the file it damages."""
    raw = mnist_files.raw_dir(tmp / "data")
    raw.mkdir(parents=True)
    for source in RAW.iterdir():
        if source.name.removesuffix(".gz") in mnist_files.FILES:
            (raw / source.name).symlink_to(source)
    return raw


def replace_file(name: str, content: bytes | Callable[[bytes], bytes],
                 packed: bool = True) -> Callable[[Path], None]:
    """A set-up that replaces one MNIST file (its .gz, or the decompressed content re-gzipped)
    and removes its decompressed copy, so the damaged version is the one read."""

    def setup(tmp: Path) -> None:
        raw = data_copy(tmp)
        (raw / name).unlink(missing_ok=True)
        original = (RAW / f"{name}.gz").read_bytes()
        (raw / f"{name}.gz").unlink()
        if packed:
            new = content(original) if callable(content) else content
        else:
            plain = gzip.decompress(original)
            new = gzip.compress(content(plain) if callable(content) else content,
                                compresslevel=1)
        (raw / f"{name}.gz").write_bytes(new)

    return setup


def flip_byte(at: int) -> Callable[[bytes], bytes]:
    def flip(blob: bytes) -> bytes:
        return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1:]

    return flip


def other_file(name: str) -> Callable[[bytes], bytes]:
    return lambda _: gzip.decompress((RAW / f"{name}.gz").read_bytes())


def remove_file(name: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        raw = data_copy(tmp)
        (raw / name).unlink(missing_ok=True)
        (raw / f"{name}.gz").unlink()

    return setup


def unreadable_file(tmp: Path) -> None:
    replace_file("train-labels-idx1-ubyte", lambda blob: blob)(tmp)
    (mnist_files.raw_dir(tmp / "data") / "train-labels-idx1-ubyte.gz").chmod(0)


def yaml_file(text: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / "config.yaml").write_text(text)


def results_under_a_file(tmp: Path) -> None:
    (tmp / "a-file").write_text("not a directory\n")


def read_only_results(tmp: Path) -> None:
    (tmp / "results").mkdir()
    (tmp / "results").chmod(0o555)


def run_without_checkpoint(tmp: Path) -> None:
    (tmp / "results" / "old-run").mkdir(parents=True)
    (tmp / "results" / "old-run" / "metrics.json").write_text('{"status": "failed"}\n')


def existing_run(tmp: Path) -> None:
    (tmp / "results" / "taken").mkdir(parents=True)


def completed_run(tmp: Path) -> None:
    (tmp / "results" / "done").mkdir(parents=True)
    (tmp / "results" / "done" / "metrics.json").write_text('{"status": "completed"}\n')
    (tmp / "results" / "done" / "checkpoint.pt").write_bytes(b"the last epoch's checkpoint")


def alias_bomb() -> str:
    """A "billion laughs": 9 nested aliases of 9 items each under a list-valued key."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines + ["betas: [" + ",".join(["*h"] * 9) + "]"]) + "\n"


MODEL_CHOICES = ", ".join(CHOICES["model"])
TORCHRUN_ENV = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}

CASES = {
    # --- the command line ---
    "lr zero": Case(["--lr", "0"], r"lr must be > 0, got 0\.0$"),
    "negative batch": Case(["--batch-size", "-64"], r"batch_size must be > 0, got -64$"),
    "zero epochs": Case(["--epochs", "0"], r"epochs must be > 0, got 0$"),
    "bad device": Case(["--device", "tpu"],
                       r"device must be one of auto, cpu, cuda, mps, got 'tpu'$"),
    "bad model": Case(["--model", "lenet"],
                      rf"model must be one of {MODEL_CHOICES}, got 'lenet'$"),
    "negative limit": Case(["--limit", "-1"], r"limit must be > 0 \(or left unset\), got -1$"),
    "non-numeric lr": Case(["--lr", "fast"], r"argument --lr: invalid float value: 'fast' "
                                             r"\(see python -m mnist_hpc\.train --help\)$"),
    "unknown flag": Case(["--learning-rate", "0.1"],
                         r"unrecognized arguments: --learning-rate 0\.1 \(see python"),
    "bad time limit": Case(["--time-limit", "soon"],
                           r"argument --time-limit: time limit 'soon' is not seconds or H:MM:SS"),
    "bad run id": Case(["--run-id", "../escape"], r"run_id '\.\./escape' may hold only letters"),
    "cuda without a gpu": pytest.param(
        Case([*FAST, "--device", "cuda"], r"--device cuda but no CUDA device is visible; use "
                                          r"--device cpu"),
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")),
    # --- YAML files ---
    "yaml syntax error": Case(["--config", "{tmp}/config.yaml"],
                              r"YAML syntax error in \S+config\.yaml at line 3, column 11: "
                              r"mapping values are not allowed here; fix the file$",
                              setup=yaml_file("lr: 0.001\nepochs: 2\nmodel: cnn: x\nseed: 1\n")),
    "yaml unknown key": Case(["--config", "{tmp}/config.yaml"],
                             r"unknown key 'bach_size' in \S+config\.yaml; did you mean "
                             r"'batch_size'\?$", setup=yaml_file("bach_size: 64\n")),
    "yaml wrong type": Case(["--config", "{tmp}/config.yaml"],
                            r"epochs must be int, got str 'three'$",
                            setup=yaml_file("epochs: three\n")),
    "yaml null": Case(["--config", "{tmp}/config.yaml"], r"batch_size may not be empty \(null\)",
                      setup=yaml_file("batch_size:\n")),
    "yaml list": Case(["--config", "{tmp}/config.yaml"],
                      r"config file \S+ must hold a mapping of keys to values, not a list$",
                      setup=yaml_file("- lr\n- 0.01\n")),
    "yaml alias bomb": Case(["--config", "{tmp}/config.yaml"],
                            r"config file \S+config\.yaml holds more than 100,000 values, "
                            r"counting each alias as the values it stands for",
                            setup=yaml_file(alias_bomb())),
    "yaml 10 MB value": Case(["--config", "{tmp}/config.yaml"],
                             rf"^error: model must be one of {MODEL_CHOICES}, got "
                             r"'x{20,40}\.\.\.x{20,40}'$",
                             setup=yaml_file("model: " + "x" * 10_000_000 + "\n")),
    "yaml 5000-digit number": Case(["--config", "{tmp}/config.yaml"],
                                   r"config file \S+ holds a value YAML cannot read \('Exceeds "
                                   r"the limit .*\); fix the file$",
                                   setup=yaml_file("epochs: " + "9" * 5000 + "\n")),
    "yaml nested too deeply": Case(["--config", "{tmp}/config.yaml"],
                                   r"config file \S+ is nested too deeply to read",
                                   setup=yaml_file("[" * 5000)),
    "config file missing": Case(["--config", "{tmp}/nowhere.yaml"],
                                r"config file '\S+nowhere\.yaml' does not exist; give a YAML "
                                r"path or a preset: "),
    "unknown preset": Case(["--config", "fastest"], r"no preset named 'fastest'; presets: .*seed"),
    "run id too long": Case(["--run-id", "a" * 200], r"run_id 'a+\.\.\.a+' is 200 characters "
                                                   r"long; use at most 128$"),
    "path too long": Case([*FAST, "--data-dir", "/tmp/" + "d" * 5000],
                          r"data_dir '/tmp/d+\.\.\.d+': File name too long; give a path you can "
                          r"read$"),
    "huge flag value": Case(["--lr", "9" * 100_000 + "x"],
                            r"argument --lr: invalid float value: '9+\.\.\. \(see python"),
    "resume-force without resume": Case(["--resume-force"], r"--resume-force applies only with "
                                                          r"--resume; drop it"),
    "nccl on a cpu process": pytest.param(
        Case([*FAST, "--backend", "nccl"], r"--backend nccl needs CUDA devices, but this rank "
                                           r"uses cpu; use --backend gloo$"),
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")),
    # --- the data directory ---
    "data dir missing": Case([*FAST, "--data-dir", "{tmp}/nowhere"],
                             r"data directory \S+nowhere does not exist; copy the four MNIST"),
    "data file missing": Case([*FAST, "--data-dir", "{data}"],
                              r"MNIST file train-labels-idx1-ubyte\.gz is missing from \S+raw; "
                              r"copy the four", setup=remove_file("train-labels-idx1-ubyte")),
    "gz is garbage": Case([*FAST, "--data-dir", "{data}"],
                          r"MNIST file \S+t10k-images-idx3-ubyte\.gz is corrupt or truncated "
                          r"\(.*\); replace it with a good copy$",
                          setup=replace_file("t10k-images-idx3-ubyte", b"\x00garbage" * 999)),
    "gz truncated": Case([*FAST, "--data-dir", "{data}"],
                         r"MNIST file \S+train-images-idx3-ubyte\.gz is corrupt or truncated \(",
                         setup=replace_file("train-images-idx3-ubyte",
                                            lambda blob: blob[: len(blob) // 3])),
    "gz byte flipped": Case([*FAST, "--data-dir", "{data}"],
                            r"MNIST file \S+train-labels-idx1-ubyte\.gz is corrupt or truncated",
                            setup=replace_file("train-labels-idx1-ubyte", flip_byte(20000))),
    "pixel flipped": Case([*FAST, "--data-dir", "{data}"],
                          r"MNIST file \S+t10k-images-idx3-ubyte\.gz is corrupt or truncated "
                          r"\(md5 [0-9a-f]{32}, expected 2646ac647ad5339dbf082846283269ea\)",
                          setup=replace_file("t10k-images-idx3-ubyte", flip_byte(5000),
                                             packed=False)),
    "wrong magic": Case([*FAST, "--data-dir", "{data}"],
                        r"MNIST file \S+t10k-labels-idx1-ubyte\.gz has magic number 2051, "
                        r"expected 2049: it is not the idx file t10k-labels-idx1-ubyte",
                        setup=replace_file("t10k-labels-idx1-ubyte",
                                           other_file("t10k-images-idx3-ubyte"), packed=False)),
    "label count mismatch": Case([*FAST, "--data-dir", "{data}"],
                                 r"MNIST file \S+train-labels-idx1-ubyte\.gz holds 10000 items, "
                                 r"expected 60000; replace it with a good copy$",
                                 setup=replace_file("train-labels-idx1-ubyte",
                                                    other_file("t10k-labels-idx1-ubyte"),
                                                    packed=False)),
    "data file unreadable": pytest.param(
        Case([*FAST, "--data-dir", "{data}"],
             r"cannot read MNIST file \S+train-labels-idx1-ubyte\.gz: Permission denied; check "
             r"its permissions", setup=unreadable_file, drop_privileges=True),
        marks=needs_unprivileged),
    # --- the results directory ---
    "results dir under a file": Case([*FAST, "--results-dir", "{tmp}/a-file/results"],
                                     r"results directory \S+a-file/results is not writable "
                                     r"\(Not a directory\); pass --results-dir",
                                     setup=results_under_a_file),
    "results dir read-only": pytest.param(
        Case([*FAST, "--results-dir", "{results}"],
             r"results directory \S+results is not writable \(Permission denied\)",
             setup=read_only_results, drop_privileges=True),
        marks=needs_unprivileged),
    # --- launcher environments ---
    "too many ranks for the data": pytest.param(
        Case(["--limit", "1", "--epochs", "1", "--device", "cpu"],
             r"the train split has 1 images, fewer than the 2 ranks; raise --limit or use "
             r"fewer ranks$", launcher=[str(MPIEXEC), "-n", "2", sys.executable]),
        marks=needs_mpiexec),
    "RANK without WORLD_SIZE": Case(FAST, r"RANK is set but WORLD_SIZE is not: a half-set "
                                          r"torchrun environment; launch with torchrun or "
                                          r"unset RANK$", env={"RANK": "1"}),
    "WORLD_SIZE without RANK": Case(FAST, r"WORLD_SIZE is set but RANK is not",
                                    env={"WORLD_SIZE": "2"}),
    "non-integer RANK": Case(FAST, r"environment variable RANK='zero' is not an integer; fix or "
                                   r"unset it", env={**TORCHRUN_ENV, "RANK": "zero"}),
    "RANK beyond WORLD_SIZE": Case(FAST, r"inconsistent torchrun environment: rank 5, world "
                                         r"size 2", env={**TORCHRUN_ENV, "RANK": "5"}),
    "RANK and WORLD_SIZE without MASTER_ADDR": Case(
        FAST, r"RANK and WORLD_SIZE are set \(world size 2\) but MASTER_ADDR and MASTER_PORT "
              r"not; export MASTER_ADDR \(rank 0's host\) and MASTER_PORT \(a free port\) on "
              r"every rank, or launch with torchrun$",
        env={"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}),
    "PMI_RANK without PMI_SIZE": Case(FAST, r"PMI_RANK is set but PMI_SIZE is not: a half-set "
                                            r"mpich environment", env={"PMI_RANK": "0"}),
    # --- resuming and naming runs ---
    "resume without checkpoint": Case([*FAST, "--resume", "{results}/old-run"],
                                      r"--resume \S+old-run: no checkpoint\.pt in \S+old-run; "
                                      r"give a run directory that holds one, or latest$",
                                      setup=run_without_checkpoint),
    "resume latest with nothing": Case([*FAST, "--resume", "latest", "--results-dir",
                                        "{results}"],
                                       r"--resume latest found no unfinished run with a "
                                       r"checkpoint\.pt under \S+results",
                                       setup=run_without_checkpoint),
    "run id with resume of a directory": Case([*FAST, "--resume", "{results}/old-run",
                                               "--run-id", "new"],
                                              r"--run-id names a new run, but --resume \S+ "
                                              r"continues an existing one; drop --run-id",
                                              setup=run_without_checkpoint),
    "resume a completed run": Case([*FAST, "--resume", "{results}/done"],
                                   r"run \S+done completed; nothing to resume; start a new run "
                                   r"with another --run-id$", setup=completed_run),
    "existing run id": Case([*FAST, "--results-dir", "{results}", "--run-id", "taken"],
                            r"run directory \S+results/taken exists already; choose another "
                            r"--run-id, or continue it with --resume \S+taken$",
                            setup=existing_run),
}


def case_values(name: str) -> Case:
    value = CASES[name]
    return value.values[0] if hasattr(value, "values") else value


def written(tmp: Path) -> dict:
    """Every file (with its size and modification time) and folder below the case's folder
    but the data copy, whose decompressed cache the trainer may add. A folder's own time
    changes with the results directory's write probe, which leaves nothing behind."""
    return {str(p): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in tmp.rglob("*") if (tmp / "data") not in p.parents and p != tmp / "data"}


def in_a_real_process(case: Case) -> bool:
    return (case.launcher is not None or case.drop_privileges
            or case.args[:len(FAST)] != FAST)


def run_case(name: str, tmp: Path) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """The case's outcome, and what its folder held before and after the run."""
    case = case_values(name)
    if case.setup is not None:
        case.setup(tmp)
    before = written(tmp)
    args = [a.format(tmp=tmp, data=tmp / "data", results=tmp / "results") for a in case.args]
    if "--results-dir" not in args:  # never write into the repository's results/
        args += ["--results-dir", str(tmp / "results")]
    if in_a_real_process(case):
        launcher = case.launcher or [sys.executable]
        if case.drop_privileges and IS_ROOT:
            launcher = NO_DAC + launcher
        result = subprocess.run(launcher + ["-m", "mnist_hpc.train", *args], cwd=REPO,
                                env=clean_env(**case.env), capture_output=True, text=True,
                                timeout=180)
    else:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(REPO)
            for key, value in case.env.items():
                patch.setenv(key, value)
            code, out, err = train_in_this_process(args)
        result = subprocess.CompletedProcess(args, code, out, err)
    return result, before, written(tmp)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict:
    """Every selected case's result: the real processes three at a time, then the others."""
    wanted = [item.callspec.params["case"] for item in request.session.items
              if item.module.__name__ == request.module.__name__
              and "case" in getattr(getattr(item, "callspec", None), "params", {})]
    folders = {name: tmp_path_factory.mktemp(re.sub(r"\W+", "-", name)) for name in wanted}
    real = [name for name in wanted if in_a_real_process(case_values(name))]
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_case, name, folders[name]) for name in real}
        found = {name: future.result() for name, future in futures.items()}
    return found | {name: run_case(name, folders[name]) for name in wanted if name not in real}


def test_the_table_is_big_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", [pytest.param(name, marks=getattr(value, "marks", ()))
                                  for name, value in CASES.items()])
def test_bad_input_exits_2_with_one_clear_line(outcomes, case):
    result, before, after = outcomes[case]
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr  # printed once, also with two ranks
    assert re.search(case_values(case).pattern, lines[0]), lines[0][:3000]
    assert "Traceback" not in result.stderr
    assert result.stdout.count("Epoch 0:") == 0  # refused before any training
    assert after == before  # nothing written, nothing changed
