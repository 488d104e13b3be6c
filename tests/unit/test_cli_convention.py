"""One command-line convention for every command: help on every flag, each default printed
once, booleans as switches with their --no- form, choices shown, --version; the old
``--flag true`` form refused with its fix."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest
from conftest import REPO

from mnist_hpc import __version__
from mnist_hpc.config.options import CHOICES, FIELD_NAMES, FIELD_TYPES
from mnist_hpc.errors import UsageError

# every command with a command line; a new entry point with one belongs here
COMMANDS = ["mnist_hpc.config.flags", "mnist_hpc.doctor.cli", "mnist_hpc.scaling.cli",
            "mnist_hpc.bench.cli"]
COMMANDS += [f"mnist_hpc.{name}" for name in ("evaluate", "runs", "grid")
             if (REPO / "mnist_hpc" / f"{name}.py").is_file()]


def command_parsers(module: str) -> list[argparse.ArgumentParser]:
    """A command's parser, first, and any it picks by hand (``runs compare``)."""
    command = importlib.import_module(module)
    if hasattr(command, "build_parsers"):
        return command.build_parsers()
    return [command.build_parser()]


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser and each of its subcommands'."""
    found = []
    for module in COMMANDS:
        todo = command_parsers(module)
        while todo:
            parser = todo.pop()
            found.append((parser.prog, parser))
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    todo += action.choices.values()
    return found


def flags() -> list[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    return [(f"{prog} {action.option_strings[0]}", parser, action)
            for prog, parser in parsers() for action in parser._actions
            if action.option_strings and action.dest not in ("help", "version")]


FLAGS = flags()


def test_every_command_and_subcommand_is_checked():
    progs = {prog for prog, _ in parsers()}
    assert {"python -m mnist_hpc.train", "python -m mnist_hpc.doctor",
            "python -m mnist_hpc.bench", "python -m mnist_hpc.scaling model"} <= progs
    assert len(FLAGS) > len(FIELD_NAMES) + 20


@pytest.mark.parametrize("name, parser, action", FLAGS, ids=[f[0] for f in FLAGS])
def test_every_flag_has_help_and_prints_its_default_once(name, parser, action):
    assert action.help, f"{name} has no help"
    text = parser._get_formatter()._expand_help(action)
    assert text.count("(default") <= 1, text
    assert "(default: None)" not in text, text
    if "unset:" in action.help:  # says what leaving it out does: no default beside it
        assert "(default" not in text, text


@pytest.mark.parametrize("name, parser, action", FLAGS, ids=[f[0] for f in FLAGS])
def test_booleans_are_switches_with_their_negation(name, parser, action):
    assert not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)), name
    if action.nargs == 0:
        assert isinstance(action, argparse.BooleanOptionalAction), name
        assert action.option_strings[1] == "--no-" + action.option_strings[0][2:]


@pytest.mark.parametrize("name, parser, action", FLAGS, ids=[f[0] for f in FLAGS])
def test_choices_are_shown(name, parser, action):
    trainer = parser.prog == "python -m mnist_hpc.train"  # its choices: RunConfig checks them
    choices = action.choices or (CHOICES.get(action.dest) if trainer else None)
    if choices:
        shown = parser._get_formatter()._format_args(action, action.dest.upper())
        assert shown == "{" + ",".join(choices) + "}", (name, shown)


def test_train_booleans_are_exactly_the_bool_options():
    switches = {action.dest for name, _, action in FLAGS
                if name.startswith("python -m mnist_hpc.train ") and action.nargs == 0}
    assert switches == {n for n in FIELD_NAMES if FIELD_TYPES[n] is bool} | {"print_config"}


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_prints_its_version(module, capsys):
    with pytest.raises(SystemExit) as exited:
        command_parsers(module)[0].parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"mnist_hpc {__version__}\n"


@pytest.mark.parametrize("argv, flag", [
    (["--compile", "true"], "--compile"), (["--sync-bn", "False"], "--sync-bn"),
    (["--shuffle=no"], "--shuffle"), (["--download", "on"], "--download")])
def test_the_old_value_form_names_the_switches(argv, flag):
    from mnist_hpc.config.flags import parse_args

    with pytest.raises(UsageError, match=rf"^{flag} takes no value \(got '[^']+'\); use "
                                         rf"{flag} or --no-{flag[2:]}$"):
        parse_args(argv)


def test_subcommands_refuse_the_old_form_too():
    from mnist_hpc.scaling.cli import build_parser

    with pytest.raises(UsageError, match=r"^--dry-run takes no value"):
        build_parser().parse_args(["local", "sweep.yaml", "--dry-run", "true"])


def test_bench_lists_each_case_once():
    from mnist_hpc.bench.cli import build_parser

    [only] = [a for a in build_parser()._actions if a.dest == "only"]
    names = re.split(r",\s*", only.help.split(": ", 1)[1])
    assert len(names) == len(set(names)) and "epochs" in names
