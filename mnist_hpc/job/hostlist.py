"""Slurm host lists (``SLURM_JOB_NODELIST=nid[001-003,007],login1``) as the hosts they name.

``expand`` asks Slurm's own ``scontrol show hostnames`` where Slurm's client is installed
and configured, and otherwise reads the list with ``parse``, which follows the syntax of
slurm.conf(5) ("NODE CONFIGURATION": comma-separated names, bracketed ranges and lists of
numbers, leading zeros for a fixed width, several bracket groups in one name) in the order
Slurm expands it.

``scontrol show hostnames`` reads the configuration, not the controller, and answers in
milliseconds. The timeout is for a configuration it cannot read: scontrol 22.05 then retries
for a minute (and a configless site may wait on a DNS lookup of the controller).
"""

from __future__ import annotations

import re
import shutil
import subprocess

SCONTROL_TIMEOUT_S = 5.0

_BALANCED = re.compile(r"[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*")
# a name runs to the next comma or whitespace outside brackets
_NAME = re.compile(r"(?:[^,\s\[]+|\[[^\]]*\])+")
_GROUP = re.compile(r"\[([^\[\]]*)\]")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


def expand(hostlist: str) -> list[str]:
    """The hosts of ``hostlist`` in Slurm's order; ValueError if it is not a host list."""
    # scontrol refuses a list by printing no host (Slurm 22.05 still exits 0); the parser then
    # takes it or says what is wrong with it
    return _scontrol(hostlist) or parse(hostlist)


def _scontrol(hostlist: str) -> list[str]:
    """Slurm's own expansion; empty where scontrol is missing, unconfigured or refuses."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return []
    try:
        done = subprocess.run([scontrol, "show", "hostnames", hostlist], capture_output=True,
                              text=True, timeout=SCONTROL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return []
    return done.stdout.split() if done.returncode == 0 else []


def parse(hostlist: str) -> list[str]:
    """Expand a host list in Python: ``rack[1-2]-node[01-02],login`` -> rack1-node01
    rack1-node02 rack2-node01 rack2-node02 login. Also takes text after the last bracket
    (``gpu-[1-2]-ib``), which Slurm itself rejects (slurm.conf(5): "unit[0-31]rack" is
    invalid) and so never writes into a node list."""
    if not _BALANCED.fullmatch(hostlist):
        raise ValueError(f"unbalanced or nested brackets in {hostlist!r}")
    return [host for name in _NAME.findall(hostlist) for host in _expand_name(name)]


def _expand_name(name: str) -> list[str]:
    pieces = _GROUP.split(name)
    texts, groups = pieces[0::2], [_numbers(group, name) for group in pieces[1::2]]
    if not groups:
        return [name]
    # Slurm's order (hostlist.c, _push_range_list): the last group varies fastest; the groups
    # before it vary from the first (fastest) to the next-to-last (slowest)
    prefixes = [texts[0]]
    for numbers, text in zip(groups[:-1], texts[1:-1]):
        prefixes = [prefix + number + text for number in numbers for prefix in prefixes]
    return [prefix + number + texts[-1] for prefix in prefixes for number in groups[-1]]


def _numbers(group: str, name: str) -> list[str]:
    """``08-11,13`` -> 08 09 10 11 13: each range keeps the width of its first number."""
    numbers: list[str] = []
    for part in group.split(","):
        match = _RANGE.fullmatch(part)
        low, high = match.groups() if match else (None, None)
        high = high or low
        if low is None or int(low) > int(high):
            raise ValueError(f"[{group}] in {name!r} is not a list of numbers and rising "
                             f"ranges like 1-3,7")
        numbers += [f"{n:0{len(low)}d}" for n in range(int(low), int(high) + 1)]
    return numbers
