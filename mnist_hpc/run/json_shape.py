"""Parsed JSON checked against a TypedDict schema: every required key present, every value of
its annotated type (Optional, Literal, lists, dicts and nested TypedDicts), the first
mismatch named by its dotted path. Used by metrics_json.read. Torch-free.
"""

import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

from .. import files


class Mismatch(Exception):
    """A value off its type; the message names where (``final.test_acc``)."""


# what each Python type of the schema accepts in parsed JSON (no bool for a number), and
# how the error message names it
JSON_TYPES = {int: ((int,), "an integer"), float: ((int, float), "a number"),
              str: ((str,), "a string"), bool: ((bool,), "true or false"),
              list: ((list,), "a list"), dict: ((dict,), "an object")}


def kind_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_fields(value: dict, kind: Any, hints: dict, where: str) -> None:
    for key in hints:
        if key in kind.__required_keys__ and key not in value:
            raise Mismatch(f"key '{where}{key}' is missing")
    for key, hint in hints.items():
        if key in value:
            check(value[key], hint, f"{where}{key}")


def check(value: Any, kind: Any, where: str) -> None:
    """Raise Mismatch naming ``where`` unless ``value`` (parsed JSON) has type ``kind``."""
    origin, args = get_origin(kind), get_args(kind)
    if kind is Any:
        return
    if origin in (Union, types.UnionType):  # only Optional[X] is used
        if value is not None:
            check(value, next(a for a in args if a is not type(None)), where)
        return
    if origin is Literal:
        if value not in args:
            raise Mismatch(f"'{where}' is {value!r}, expected one of "
                            + ", ".join(map(str, args)))
        return
    base = dict if is_typeddict(kind) else origin or kind
    expected, name = JSON_TYPES[base]
    if not isinstance(value, expected) or (isinstance(value, bool) and base is not bool):
        found = "null" if value is None else f"{kind_name(value)} {files.short(value, 40)}"
        raise Mismatch(f"'{where}' should be {name}, found {found}")
    if is_typeddict(kind):
        check_fields(value, kind, get_type_hints(kind), f"{where}.")
    elif origin is list:
        for index, item in enumerate(value):
            check(item, args[0], f"{where}[{index}]")
    elif origin is dict:
        for key, item in value.items():
            check(item, args[1], f"{where}.{key}")
