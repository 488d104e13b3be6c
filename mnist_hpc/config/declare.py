"""How an option of a run is declared: ``option(default, help, recipe=..., ...)`` once, as a
field of RunConfig, and everything else (choices, the command-line flag and how it reads its
text, the help, the recipe hash's fields) is read back from that declaration. A bool option's
flag is a switch with its negation (``--compile``, ``--no-compile``), from its type alone.

Torch-free, like the rest of ``config``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Optional

from ..files import parse_duration, short


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a field's metadata says about it, beyond its name, type and default."""

    help: str  # why the option exists and what its values mean; also the flag's help
    recipe: bool  # True: it decides the numbers, so a checkpoint resumes only if it matches
    choices: tuple = ()  # the values allowed (strings); empty: any value of the type
    parse: Optional[Callable[[str], Any]] = None  # reads the flag's text; None: from the type


def option(default: Any, help: str, *, recipe: bool, choices: tuple = (),
           parse: Optional[Callable[[str], Any]] = None) -> Any:
    """A RunConfig field declared once. ``recipe`` has no default: every option must say
    whether a checkpoint may resume with it changed."""
    declaration = Declaration(help, recipe, tuple(choices), parse)
    return dataclasses.field(default=default, metadata={"option": declaration})


def declaration(field: dataclasses.Field) -> Declaration:
    """The declaration behind a field; a field declared without ``option`` is a bug."""
    try:
        return field.metadata["option"]
    except KeyError:
        raise TypeError(f"RunConfig field {field.name} is not declared with option()") from None


# --- reading a flag's text (argparse turns ArgumentTypeError into a one-line exit 2) ---------

def parse_numbers(text: str) -> tuple:
    """``0.9,0.999`` -> (0.9, 0.999): a tuple option on the command line."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short(text)} is not a comma-separated list of "
                                         f"numbers (like 0.9,0.999)") from None


def parse_walltime(text: str) -> float:
    """Seconds, or [[H:]M:]S as schedulers write walltimes."""
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"time limit {short(text)} is not seconds or "
                                         f"H:MM:SS") from None


TEXT_PARSERS = {int: int, float: float, str: str, tuple: parse_numbers}
