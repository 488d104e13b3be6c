"""One declaration per option: the dataclass field, its choices, its flag, its help and
whether it belongs to the recipe all come from it; recipe hashes of existing configs stay put
(checkpoints resume by hash)."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from mnist_hpc import train
from mnist_hpc.config.declare import Declaration, declaration
from mnist_hpc.config.flags import (
    build_parser,
    flag_name,
    load_yaml,
    parse_args,
    preset_names,
    resolve_config_path,
)
from mnist_hpc.config.options import (
    CHOICES,
    DECLARATIONS,
    FIELD_NAMES,
    FIELD_TYPES,
    RECIPE_FIELDS,
    RunConfig,
    make_config,
)
from mnist_hpc.errors import EXIT_USAGE

# measured before options were declared in one place; a change here strands every checkpoint
# (fast: its recipe changed to the small network in one epoch, on purpose)
PINNED_HASHES = {"RunConfig()": "37762bc40f2976e4", "default": "37762bc40f2976e4",
                 "fast": "bd2efe78d0035faa", "resnet": "8f9c47a9acc03f32",
                 "seed": "5e7d53ce2381c6f3", "vit": "bb7f0c6bb94f1de0"}


@pytest.mark.parametrize("name", sorted(PINNED_HASHES))
def test_recipe_hashes_of_existing_configs_do_not_move(name):
    config = (RunConfig() if name == "RunConfig()"
              else make_config(load_yaml(resolve_config_path(name)), source=name))
    assert config.recipe_hash() == PINNED_HASHES[name]


def test_every_preset_has_a_pinned_hash():
    assert set(preset_names()) <= set(PINNED_HASHES)


# --- one declaration per option, and a flag for each --------------------------------------------

def flags_by_dest() -> dict[str, list[argparse.Action]]:
    actions: dict[str, list[argparse.Action]] = {}
    for action in build_parser()._actions:
        actions.setdefault(action.dest, []).append(action)
    return actions


def test_every_field_is_declared_once_and_has_one_flag():
    actions = flags_by_dest()
    for field in dataclasses.fields(RunConfig):
        assert isinstance(declaration(field), Declaration), field.name
        [action] = actions[field.name]
        assert action.option_strings[0] == flag_name(field.name)
        assert action.help and declaration(field).help.split(";")[0] in action.help
    assert set(CHOICES) == {n for n, d in DECLARATIONS.items() if d.choices} != set()


def test_a_field_declared_without_option_is_refused():
    @dataclasses.dataclass
    class Undeclared:
        plain: int = 1

    with pytest.raises(TypeError, match="plain is not declared with option"):
        declaration(dataclasses.fields(Undeclared)[0])


def test_bools_are_switches_and_every_other_flag_takes_a_value():
    actions = flags_by_dest()
    switches = {name for name in FIELD_NAMES if actions[name][0].nargs == 0}
    assert switches == {name for name in FIELD_NAMES if FIELD_TYPES[name] is bool}
    assert parse_args(["--download"]).download is True
    assert parse_args(["--no-shuffle"]).shuffle is False
    # no switch given: the YAML file's value stands
    assert parse_args(["--config", "seed"]).shuffle is False


def test_help_lists_every_flag_with_its_real_default(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in FIELD_NAMES:
        assert flag_name(name) in out, name
    assert "--betas B1,B2" in out and "(default: 0.9,0.999)" in out
    assert f"(default: {RunConfig().stop_check_every})" in out


@pytest.mark.parametrize("argv, field, value", [
    (["--betas", "0.8,0.99"], "betas", (0.8, 0.99)),
    (["--weight-decay", "0.01"], "weight_decay", 0.01),
    (["--momentum", "0.5"], "momentum", 0.5),
    (["--warmup-fraction", "0.3"], "warmup_fraction", 0.3),
    (["--split-seed", "7"], "split_seed", 7),
    (["--bucket-cap-mb", "50"], "bucket_cap_mb", 50.0),
    (["--static-graph"], "static_graph", True),
    (["--stop-check-every", "5"], "stop_check_every", 5),
])
def test_new_flags_round_trip(argv, field, value):
    config = parse_args(argv)
    assert getattr(config, field) == value
    assert type(getattr(config, field)) is type(value)
    assert make_config({field: list(value) if isinstance(value, tuple) else value}) == config


def test_a_flag_beats_the_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("betas: [0.7, 0.9]\nsplit_seed: 3\n")
    config = parse_args(["--config", str(path), "--betas", "0.8,0.99"])
    assert (config.betas, config.split_seed) == ((0.8, 0.99), 3)


@pytest.mark.parametrize("argv, message", [
    (["--betas", "x"], r"argument --betas: 'x' is not a comma-separated list of numbers "
                       r"\(like 0\.9,0\.999\)"),
    (["--betas", "0.9"], r"betas must be two numbers in \[0, 1\), got \[0\.9\]"),
    (["--betas", "0.9,1.5"], r"betas must be two numbers in \[0, 1\), got \[0\.9, 1\.5\]"),
    (["--weight-decay", "-1"], r"weight_decay must be >= 0, got -1\.0"),
    (["--momentum", "nan"], r"momentum must be a finite number, got nan"),
    (["--warmup-fraction", "1"], r"warmup_fraction must be in \(0, 1\), got 1\.0"),
    (["--split-seed", "x"], r"argument --split-seed: invalid int value: 'x'"),
    (["--split-seed", "-1"], r"split_seed must be in \[0, 2\*\*32\), got -1"),
    (["--bucket-cap-mb", "0"], r"bucket_cap_mb must be > 0, got 0\.0"),
    (["--static-graph", "true"], r"--static-graph takes no value \(got 'true'\); use "
                                 r"--static-graph or --no-static-graph"),
    (["--static-graph=no"], r"--static-graph takes no value \(got 'no'\); use "
                            r"--static-graph or --no-static-graph"),
    (["--stop-check-every", "0"], r"stop_check_every must be > 0, got 0"),
])
def test_bad_values_of_new_flags_exit_2_with_one_clear_line(argv, message, capsys):
    assert train.main(argv) == EXIT_USAGE
    [line] = capsys.readouterr().err.splitlines()
    assert re.fullmatch(rf"error: {message}( \(see python -m mnist_hpc\.train --help\))?", line), \
        line


# --- the recipe hash: recipe options move it, the others never do ------------------------------

# a valid value other than the default for every option (and what it needs to be valid)
CHANGES = {
    "model": {"model": "resnet"}, "optimizer": {"optimizer": "sgd"}, "lr": {"lr": 0.01},
    "betas": {"betas": (0.8, 0.99)}, "weight_decay": {"weight_decay": 0.1},
    "momentum": {"momentum": 0.5}, "schedule": {"schedule": "onecycle"},
    "warmup_fraction": {"warmup_fraction": 0.3}, "label_smoothing": {"label_smoothing": 0.1},
    "batch_size": {"batch_size": 256}, "batch_mode": {"batch_mode": "per-rank"},
    "scale_lr": {"scale_lr": True}, "epochs": {"epochs": 9},
    "train_metrics": {"train_metrics": "pass"}, "shuffle": {"shuffle": False},
    "seed": {"seed": 1}, "split_seed": {"split_seed": 1}, "dropout": {"dropout": False},
    "normalize": {"normalize": True}, "limit": {"limit": 100}, "augment": {"augment": "shift"},
    "sync_bn": {"sync_bn": True}, "data_dir": {"data_dir": "/elsewhere"},
    "download": {"download": True}, "results_dir": {"results_dir": "/elsewhere"},
    "run_id": {"run_id": "r1"}, "device": {"device": "cpu"}, "backend": {"backend": "gloo"},
    "loader": {"loader": "torchvision"}, "precision": {"precision": "bf16"},
    "channels_last": {"channels_last": False}, "compile": {"compile": True},
    "cuda_graphs": {"cuda_graphs": "off"}, "deterministic": {"deterministic": True},
    "eval_batch_size": {"eval_batch_size": 64}, "bucket_cap_mb": {"bucket_cap_mb": 50.0},
    "static_graph": {"static_graph": True}, "timeout": {"timeout": 60.0},
    "checkpoint_every": {"checkpoint_every": 2}, "resume": {"resume": "latest"},
    "resume_force": {"resume_force": True, "resume": "latest"},
    "time_limit": {"time_limit": 600.0}, "stop_check_every": {"stop_check_every": 5},
    "straggler_threshold": {"straggler_threshold": 2.0}, "log_every": {"log_every": 10},
    "rank_logs": {"rank_logs": True}, "plots": {"plots": False},
    "profile": {"profile": 5, "epochs": 2},
    "profile_ranks": {"profile_ranks": "all"},
}


def test_every_option_has_a_change_to_try():
    assert set(CHANGES) == set(FIELD_NAMES)


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_recipe_options_move_the_hash_and_the_others_do_not(name):
    changed = dataclasses.replace(RunConfig(), **CHANGES[name])
    assert getattr(changed, name) != getattr(RunConfig(), name)
    moved = changed.recipe_hash() != RunConfig().recipe_hash()
    assert moved == (name in RECIPE_FIELDS), f"{name}: recipe={name in RECIPE_FIELDS}"


def test_the_recipe_is_what_it_was():
    """The recipe's fields, as the hash has always read them: moving an option in or out of
    the recipe strands (or wrongly resumes) checkpoints, so it must be a visible change."""
    assert RECIPE_FIELDS == {
        "model", "optimizer", "lr", "betas", "weight_decay", "momentum", "schedule",
        "warmup_fraction", "label_smoothing", "batch_size", "batch_mode", "scale_lr", "shuffle",
        "seed", "split_seed", "dropout", "normalize", "limit", "augment", "sync_bn",
        "precision", "channels_last", "bucket_cap_mb", "static_graph"}
