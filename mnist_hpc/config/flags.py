"""The command line and the presets: ``python -m mnist_hpc.train`` flags and ``--config``.

Precedence: RunConfig's defaults < YAML file (``--config``, a preset name or a path) < CLI
flags. Every error is a ``UsageError`` naming the problem and the fix. Torch-free, so that
``--help`` and bad input are answered before torch loads. Every RunConfig option has a flag,
built from its declaration (``mnist_hpc.config.declare``); none is listed here by hand.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, get_args

from ..errors import UsageError
from ..files import PACKAGE_DIR, UsageParser, check_path, read_yaml, short
from .declare import TEXT_PARSERS
from .options import (
    DECLARATIONS,
    FIELD_NAMES,
    FIELD_TYPES,
    RunConfig,
    make_config,
    unknown_key,
)

PRESETS_DIR = PACKAGE_DIR / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A preset name (``seed``) or a path to a YAML file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not candidate.is_file():
            raise UsageError(f"config file {name_or_path!r} does not exist; "
                             f"give a YAML path or a preset: {', '.join(preset_names())}")
        return candidate
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise UsageError(f"no preset named {short(name_or_path)}; "
                         f"presets: {', '.join(preset_names())} "
                         "(or give a path to a .yaml file)")
    return preset


def load_yaml(path: Path) -> dict:
    """Read a config file: a mapping of RunConfig keys. Syntax errors name the line."""
    data = read_yaml(path, "config file")
    if data is None:  # allowed, but more likely a mistake than a wish for the defaults
        print(f"warning: config file {path} is empty: every option keeps its default",
              file=sys.stderr)
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of keys to values, "
                         f"not a {type(data).__name__}")
    for key in data:
        if not isinstance(key, str) or key not in FIELD_NAMES:
            raise unknown_key(str(key), str(path))
    return data


def flag_name(field: str) -> str:
    """Every option's flag is its name with dashes: batch_size -> --batch-size."""
    return "--" + field.replace("_", "-")


def _add_flag(parser: argparse.ArgumentParser, name: str, default: object) -> None:
    """One option's flag, read from its declaration: a bool is a switch with its ``--no-``
    form, choices are shown as the metavar (RunConfig checks them, with its one message).
    Its argparse default stays None, so a flag overrides the YAML file only when given;
    help prints RunConfig's real default, once (an unset default's meaning is in its help,
    or it is shown as unset)."""
    declared = DECLARATIONS[name]
    text = declared.help.replace("%", "%%")  # argparse %-formats help text
    hint = FIELD_TYPES[name]
    kind = next((a for a in get_args(hint) if a is not type(None)), hint)  # Optional[X] -> X
    if kind is bool:
        parser.add_argument(flag_name(name), dest=name, action=argparse.BooleanOptionalAction,
                            default=None, help=f"{text} (default: {'on' if default else 'off'})")
        return
    if kind is tuple:
        metavar = ",".join(f"{name[0].upper()}{i + 1}" for i in range(len(default)))
        shown = ",".join(map(str, default))
    else:
        metavar = "{" + ",".join(declared.choices) + "}" if declared.choices else None
        shown = default
    if shown is not None:
        text += f" (default: {str(shown).replace('%', '%%')})"
    elif "unset" not in text:
        text += " (default: unset)"
    parser.add_argument(flag_name(name), dest=name, type=declared.parse or TEXT_PARSERS[kind],
                        default=None, metavar=metavar, help=text)


def build_parser() -> argparse.ArgumentParser:
    defaults = RunConfig()
    parser = UsageParser(prog="python -m mnist_hpc.train",
                         description="Train a CNN on MNIST on one process or many (DDP).")
    parser.add_argument("--config", default="default",
                        help=f"preset ({', '.join(preset_names())}) or YAML file")
    parser.add_argument("--print-config", action=argparse.BooleanOptionalAction, default=False,
                        help="print the config this run would use, resolved (device, backend, "
                             "precision, CUDA graphs) as YAML, and exit without training")
    for name in FIELD_NAMES:
        _add_flag(parser, name, getattr(defaults, name))
    return parser


def parse_command_line(argv: Optional[list[str]] = None) -> tuple[RunConfig, bool]:
    """CLI -> (RunConfig, whether --print-config asks for the config instead of a run).
    Raises UsageError on any bad input. Paths stay as given (``~`` expanded), relative ones
    relative to where the run starts, so the recorded config works elsewhere too."""
    args = vars(build_parser().parse_args(argv))
    print_config = args.pop("print_config")
    check_path(args["config"], "--config")
    path = resolve_config_path(args.pop("config"))
    values = load_yaml(path)
    values.update({k: v for k, v in args.items() if v is not None})
    for key in ("data_dir", "results_dir", "resume"):
        if isinstance(values.get(key), str):
            check_path(values[key], key)
    for key in ("data_dir", "results_dir"):
        if key in values and isinstance(values[key], str):
            values[key] = os.path.expanduser(values[key])
    return make_config(values, source=str(path)), print_config


def parse_args(argv: Optional[list[str]] = None) -> RunConfig:
    """CLI -> RunConfig (``--print-config`` is the trainer's alone: ignored here)."""
    return parse_command_line(argv)[0]
