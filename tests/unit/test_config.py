"""RunConfig: presets, precedence, and a clear UsageError for every kind of bad value."""

from __future__ import annotations

import re
import time
import tracemalloc

import pytest

from mnist_hpc.config.flags import load_yaml, parse_args, preset_names
from mnist_hpc.config.options import RunConfig, make_config
from mnist_hpc.errors import UsageError


def test_presets_exist_and_parse():
    assert {"seed", "default"} <= set(preset_names())
    for name in preset_names():
        assert isinstance(parse_args(["--config", name]), RunConfig)


def test_seed_preset_is_the_notebook():
    config = parse_args(["--config", "seed"])
    assert (config.model, config.optimizer, config.lr, config.batch_size, config.epochs,
            config.shuffle, config.split_seed) == ("seed", "adam", 0.01, 512, 3, False, 55)
    assert config.precision == "fp32" and not config.normalize


def test_default_preset_is_the_corrected_network_with_shuffling():
    config = parse_args([])
    assert config.model == "cnn" and config.shuffle and config.batch_size == 512
    assert config.epochs == 3 and config.optimizer == "adam"


def test_cli_overrides_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 5\nlr: 0.002\nmodel: seed\n")
    config = parse_args(["--config", str(path), "--epochs", "2", "--limit", "100"])
    assert (config.epochs, config.lr, config.model, config.limit) == (2, 0.002, "seed", 100)


def test_paths_stay_as_given_so_the_recorded_config_works_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_args(["--data-dir", "somewhere", "--results-dir", "~/out"])
    assert (config.data_dir, config.results_dir) == ("somewhere", str(tmp_path / "out"))


def test_time_limit_accepts_walltime_format():
    assert parse_args(["--time-limit", "1:02:03"]).time_limit == 3723
    assert parse_args(["--time-limit", "90"]).time_limit == 90


def test_checkpoint_interval_defaults_to_one_for_multi_epoch_runs():
    assert parse_args(["--epochs", "3"]).checkpoint_interval == 1
    assert parse_args(["--epochs", "1"]).checkpoint_interval is None
    assert parse_args(["--epochs", "4", "--checkpoint-every", "2"]).checkpoint_interval == 2


def test_ints_are_accepted_as_floats_but_not_the_reverse():
    assert make_config({"lr": 1}).lr == 1.0
    with pytest.raises(UsageError, match="epochs must be int"):
        make_config({"epochs": 2.5})
    with pytest.raises(UsageError, match="shuffle must be bool"):
        make_config({"shuffle": "yes"})


def test_recipe_hash_ignores_paths_and_epochs_but_not_the_recipe():
    base = RunConfig()
    assert base.recipe_hash() == make_config({"epochs": 9, "results_dir": "/x"}).recipe_hash()
    assert base.recipe_hash() != make_config({"lr": 0.5}).recipe_hash()


@pytest.mark.parametrize("argv, pattern", [
    (["--lr", "0"], r"lr must be > 0"),
    (["--lr", "-1"], r"lr must be > 0"),
    (["--batch-size", "0"], r"batch_size must be > 0"),
    (["--epochs", "0"], r"epochs must be > 0"),
    (["--limit", "0"], r"limit must be > 0"),
    (["--model", "mlp"], r"model must be one of seed, cnn"),
    (["--device", "tpu"], r"device must be one of auto, cpu, cuda, mps"),
    (["--backend", "mpi"], r"backend must be one of auto, gloo, nccl"),
    (["--batch-mode", "local"], r"batch_mode must be one of global, per-rank"),
    (["--precision", "fp16"], r"precision must be one of"),
    (["--label-smoothing", "1"], r"label_smoothing must be in \[0, 1\)"),
    (["--run-id", "../escape"], r"run_id '../escape' may hold only"),
    (["--lr", "fast"], r"argument --lr: invalid float value"),
    (["--shuffle", "false"], r"--shuffle takes no value \(got 'false'\); use --shuffle or "
                             r"--no-shuffle"),
    (["--shuffle", "maybe"], r"unrecognized arguments: maybe"),
    (["--time-limit", "1:2:3:4"], r"is not seconds or H:MM:SS"),
    (["--bogus"], r"unrecognized arguments: --bogus"),
    (["--config", "nosuch"], r"no preset named 'nosuch'; presets: .*default"),
    (["--config", "/nonexistent/run.yaml"], r"config file '/nonexistent/run.yaml' does not exist"),
])
def test_bad_cli_values_raise_one_clear_line(argv, pattern):
    with pytest.raises(UsageError, match=pattern) as info:
        parse_args(argv)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, pattern", [
    ("epochs: [1\n", r"YAML syntax error in .* at line 2"),
    ("lrr: 0.1\n", r"unknown key 'lrr' .*did you mean 'lr'\?"),
    ("epochs: three\n", r"epochs must be int, got str 'three'"),
    ("- epochs\n- 3\n", r"must hold a mapping of keys to values, not a list"),
    ("betas: [0.9]\n", r"betas must be two numbers"),
    ("lr: null\n", r"lr may not be empty"),
])
def test_bad_yaml_is_refused_with_its_reason(tmp_path, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=pattern):
        parse_args(["--config", str(path)])


def test_empty_yaml_means_defaults_with_a_warning(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_yaml(path) == {}
    assert parse_args(["--config", str(path)]) == RunConfig()
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"warning: config file {path} is empty: every option keeps its default")


def test_help_prints_the_real_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"(default: {RunConfig().batch_size})" in out and "--resume" in out


# --- files that would expand without bound, values too big to quote ---------------------------

def billion_laughs() -> str:
    """431 bytes that expand to 9**9 = 387,420,489 strings under a list-valued key."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    lines.append("betas: [" + ",".join(["*h"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, problem", [
    (billion_laughs(), r"holds more than 100,000 values, counting each alias as the values it "
                       r"stands for \(or an alias refers to itself\); write out the values"),
    ("betas: &loop [1, *loop]\n", r"holds more than 100,000 values"),
    ("[" * 5_000, r"is nested too deeply to read; write it as a flat mapping"),
    ("epochs: " + "9" * 5000 + "\n", r"holds a value YAML cannot read \('Exceeds the limit"),
    ("lr: !!float fast\n", r"holds a value YAML cannot read \(\"could not convert string"),
])
def test_a_file_that_cannot_be_a_config_is_refused_quickly_in_one_short_line(tmp_path, text,
                                                                            problem):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    started = time.monotonic()
    with pytest.raises(UsageError) as refused:
        parse_args(["--config", str(path)])
    # about 1 s on a 2-core CPU; unbounded, the first two would take minutes and gigabytes
    assert time.monotonic() - started < 30
    message = str(refused.value)
    assert re.search(rf"^config file {re.escape(str(path))} {problem}", message), message
    assert len(message) < 300 and "\n" not in message


def test_the_alias_bomb_is_refused_in_little_memory(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(billion_laughs())
    tracemalloc.start()
    try:
        with pytest.raises(UsageError, match="holds more than 100,000 values"):
            parse_args(["--config", str(path)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_aliases_within_bounds_still_work(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("betas: &b [0.8, 0.9]\nlr: &lr 0.002\nweight_decay: *lr\n")
    config = parse_args(["--config", str(path)])
    assert config.betas == (0.8, 0.9) and config.weight_decay == 0.002


@pytest.mark.parametrize("key, value", [
    ("model", "x" * 10_000_000), ("betas", list(range(1_000_000))), ("run_id", "r" * 10_000_000),
    ("lr", "y" * 10_000_000), ("seed", 10 ** 4000),
], ids=["model", "betas", "run_id", "lr", "seed"])
def test_a_huge_value_gives_a_short_error_line(key, value):
    with pytest.raises(UsageError) as refused:
        make_config({key: value})
    message = str(refused.value)
    assert message.startswith(key) and len(message) < 300, message[:500]


def test_a_huge_value_in_a_file_or_on_the_command_line_gives_a_short_error_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model: " + "x" * 10_000_000 + "\n")
    for argv in (["--config", str(path)], ["--lr", "z" * 100_000],
                 ["--run-id", "a" * 300], ["--data-dir", "/tmp/" + "d" * 5000]):
        with pytest.raises(UsageError) as refused:
            parse_args(argv)
        assert len(str(refused.value)) < 300, str(refused.value)[:500]


# --- flags that cannot apply are refused --------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--resume-force"], "--resume-force applies only with --resume; drop it, or resume a run "
                         "with --resume RUN_DIR"),
    (["--resume", "latest", "--run-id", "x"], "--run-id names a new run, but --resume 'latest' "
                                              "continues an existing one; drop --run-id, or use "
                                              "--resume auto"),
])
def test_a_flag_that_cannot_apply_is_refused(argv, message):
    with pytest.raises(UsageError) as refused:
        parse_args(argv)
    assert str(refused.value) == message


def test_gpu_switches_parse_and_leave_the_recipe_hash_alone():
    config = parse_args(["--cuda-graphs", "off", "--deterministic"])
    assert config.cuda_graphs == "off" and config.deterministic is True
    assert RunConfig().cuda_graphs == "auto" and RunConfig().deterministic is False
    # they change how the numbers are computed, not which: a run may resume with them changed
    assert config.recipe_hash() == RunConfig().recipe_hash()
    with pytest.raises(UsageError, match=r"^cuda_graphs must be one of auto, on, off, got 'yes'"):
        parse_args(["--cuda-graphs", "yes"])


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_cuda_graphs_on_a_device_without_cuda_is_refused(device):
    with pytest.raises(UsageError, match=r"^CUDA graphs need --device cuda, not "
                                         rf"{device}; use --cuda-graphs auto or off$"):
        parse_args(["--cuda-graphs", "on", "--device", device])
    assert parse_args(["--cuda-graphs", "on", "--device", "cuda"]).cuda_graphs == "on"
