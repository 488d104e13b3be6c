"""Fuzzing the trainer's inputs: whatever the config file or the data files hold, the trainer
either runs (exit 0, or 75 if a tiny time limit stopped it with a checkpoint) or refuses with
exit 2 and one ``error:`` line. It never crashes: a runtime failure (exit 1) or an exception
escaping ``main`` on bad input is a bug.

Hypothesis drives ``train.main`` in this process (no interpreter start per example); a few
fixed examples then go through a real process to check that no traceback reaches the terminal.
"""

from __future__ import annotations

import gzip
import random
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_trainer, train_in_this_process
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mnist_hpc.config.options import CHOICES, FIELD_NAMES
from mnist_hpc.data import mnist_files

RAW = REPO / "data" / "MNIST" / "raw"
# the CLI wins over the file: every run that gets through stays tiny, on CPU, uncompiled
TINY = ["--limit", "32", "--epochs", "1", "--device", "cpu", "--no-compile"]
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def check_outcome(code: int, out: str, err: str, results_dir: Path) -> list[str]:
    """The property: run, stop with a checkpoint, or refuse with one line. Returns the
    error lines."""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    event(f"exit {code}")
    assert code in (0, 2, 75), f"exit {code}: {err}"
    assert "Traceback" not in err
    if code == 2:
        assert len(errors) == 1, err
        assert len(errors[0]) > len("error: ") + 10
    else:
        assert errors == [], err
        [run_dir] = [p for p in results_dir.iterdir() if p.is_dir()]
        status = "completed" if code == 0 else "preempted"
        assert f'"status": "{status}"' in (run_dir / "metrics.json").read_text()
        if code == 75:
            assert (run_dir / "checkpoint.pt").is_file()
        else:
            assert (run_dir / "model.pt").is_file()
    return errors


# --- random config files ---------------------------------------------------------------------

anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6)


def plausible(name: str) -> st.SearchStrategy:
    """Values near the valid ones for each key, so that a good share of configs train."""
    if name in CHOICES:
        return st.sampled_from(CHOICES[name] + ("bogus",))
    if name == "betas":
        return st.lists(st.floats(-0.5, 1.5), min_size=1, max_size=3)
    if name in ("batch_size", "eval_batch_size"):
        return st.integers(-2, 200)
    if name in ("lr", "weight_decay", "momentum", "label_smoothing", "warmup_fraction",
                "bucket_cap_mb", "timeout", "time_limit"):
        return st.floats(-1.0, 2.0) | st.sampled_from([0, 1e-3, float("nan"), float("inf")])
    if name in ("seed", "split_seed", "checkpoint_every", "stop_check_every"):
        return st.integers(-5, 100) | st.sampled_from([-2**63, 2**32, 2**64, 10**30])
    if name in ("resume", "run_id"):
        return st.sampled_from(["auto", "latest", "nowhere", "run-1", "../x", ""])
    return st.booleans()


KEYS = [name for name in FIELD_NAMES if name not in ("data_dir", "results_dir", "download")]


@st.composite
def configs(draw) -> dict:
    """A few known keys, each with a plausible or an arbitrary value."""
    keys = draw(st.lists(st.sampled_from(KEYS), max_size=5, unique=True))
    return {key: draw(plausible(key) | anything) for key in keys}


def run_with_config_text(text: str) -> tuple[int, str, str, Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text)
        results_dir = Path(folder) / "results"
        results_dir.mkdir()
        code, out, err = train_in_this_process(["--config", str(path), *TINY,
                                                "--results-dir", str(results_dir)])
        check_outcome(code, out, err, results_dir)
        return code, out, err, results_dir


@FUZZ
@given(configs())
# inputs that once crashed the trainer (exit 1 or a traceback), kept as regressions
@example({"seed": 2**64})
@example({"split_seed": -1})
@example({"optimizer": "sgd", "momentum": -0.5})
@example({"lr": float("nan")})
@example({"weight_decay": float("inf")})
@example({"time_limit": 0.001})
def test_any_config_mapping_runs_or_is_refused_in_one_line(values):
    run_with_config_text(yaml.safe_dump(values))


@FUZZ
@given(configs(), st.sampled_from(["learning_rate", "bach_size", "", "epoch"]) | st.text(),
       anything)
def test_an_unknown_key_is_named_whatever_else_the_file_holds(values, key, value):
    if key in FIELD_NAMES:
        return
    code, out, err, _ = run_with_config_text(yaml.safe_dump({**values, key: value}))
    assert code == 2
    [line] = [l for l in err.splitlines() if l.startswith("error:")]
    assert line.startswith(f"error: unknown key {key!r} in "), line
    if key in ("bach_size", "epoch"):
        assert "did you mean" in line


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_config_text_runs_or_is_refused_in_one_line(text):
    run_with_config_text(text)


# --- random data files -----------------------------------------------------------------------

GZ = {name: (RAW / f"{name}.gz").read_bytes() for name in mnist_files.FILES}
_PLAIN: dict[str, bytes] = {}


def plain_content(name: str) -> bytes:
    if name not in _PLAIN:
        _PLAIN[name] = gzip.decompress(GZ[name])
    return _PLAIN[name]


@st.composite
def damaged_file(draw) -> tuple[str, str, bytes]:
    """(file name, which form is written: gz or plain, its bytes), never the true content."""
    name = draw(st.sampled_from(sorted(mnist_files.FILES)))
    original = GZ[name]
    kind = draw(st.sampled_from(["random gz", "truncated gz", "mutated gz", "mutated content",
                                 "random plain", "truncated plain"]))
    if kind == "random gz":
        return name, "gz", draw(st.binary(max_size=3000))
    if kind == "truncated gz":
        return name, "gz", original[:draw(st.integers(0, len(original) - 1))]
    if kind == "mutated gz":
        at = draw(st.integers(0, len(original) - 1))
        return name, "gz", original[:at] + bytes([original[at] ^ draw(st.integers(1, 255))]) \
            + original[at + 1:]
    plain = plain_content(name)
    if kind == "mutated content":
        at = draw(st.integers(0, len(plain) - 1))
        mutated = plain[:at] + bytes([plain[at] ^ draw(st.integers(1, 255))]) + plain[at + 1:]
        return name, "gz", gzip.compress(mutated, compresslevel=1)
    if kind == "random plain":
        return name, "plain", draw(st.binary(max_size=3000))
    return name, "plain", plain[:draw(st.integers(0, len(plain) - 1))]


def data_dir_with(folder: Path, name: str, form: str, content: bytes) -> Path:
    """The carried files, linked, with ``name`` replaced by ``content`` (as .gz or plain)."""
    raw = mnist_files.raw_dir(folder / "data")
    raw.mkdir(parents=True)
    for source in RAW.iterdir():
        if (source.name.removesuffix(".gz") in mnist_files.FILES
                and not source.name.startswith(name)):
            (raw / source.name).symlink_to(source)
    (raw / (f"{name}.gz" if form == "gz" else name)).write_bytes(content)
    return folder / "data"


@FUZZ
@given(damaged_file())
def test_any_damaged_data_file_is_refused_in_one_line_naming_it(damage):
    name, form, content = damage
    with tempfile.TemporaryDirectory() as folder:
        data_dir = data_dir_with(Path(folder), name, form, content)
        results_dir = Path(folder) / "results"
        code, out, err = train_in_this_process([*TINY, "--data-dir", str(data_dir),
                                                "--results-dir", str(results_dir)])
        assert code == 2, f"exit {code}: {err}"
        [line] = check_outcome(code, out, err, results_dir)
        assert name in line, line
        assert "Epoch 0" not in out


# --- the same, through a real process ------------------------------------------------------



@pytest.mark.parametrize("seed", range(3))
def test_random_inputs_never_print_a_traceback(tmp_path, seed):
    rng = random.Random(seed)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        rng.choice(FIELD_NAMES + ["bach_size"]): rng.choice([None, -1, 0, 3, 0.5, "x", [1, 2],
                                                             {"a": 1}, True])
        for _ in range(rng.randint(1, 4))}))
    name = rng.choice(sorted(mnist_files.FILES))
    data_dir = data_dir_with(tmp_path, name, "gz", GZ[name][:rng.randint(0, 5000)])
    for args in (["--config", str(config), *TINY], [*TINY, "--data-dir", str(data_dir)]):
        result = run_trainer([*args, "--results-dir", str(tmp_path / "results")], timeout=120)
        assert result.returncode in (0, 2, 75), result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
        assert len(errors) == (1 if result.returncode == 2 else 0), result.stderr
