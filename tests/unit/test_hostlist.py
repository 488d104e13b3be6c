"""Slurm host lists: the Python reader against a table, and against Slurm's own scontrol.

Sources for the forms:
- slurm.conf(5), "NODE CONFIGURATION" (Slurm 22.05 man page): names "comma separated (e.g.
  "alpha,beta,gamma")"; "one pair of square brackets with a sequence of comma-separated numbers
  and/or ranges of numbers separated by a "-" (e.g. "linux[0-64,128]", or "lx[15,18,32-33]")";
  "leading zeros to indicate the numeric portion has a fixed number of digits (e.g.
  "linux[0000-1023]")"; "Multiple numeric ranges can be included in the expression (e.g.
  "rack[0-63]_blade[0-41]"). If one or more numeric expressions are included, one of them must
  be at the end of the name (e.g. "unit[0-31]rack" is invalid)".
- scontrol(1), "hostnames": "writes a list of individual host names to standard output (one
  per line)"; "tux[1-3]" is mapped to "tux1","tux2" and "tux3".
- The order of three or more bracket groups, which no manual states: Slurm's
  src/common/hostlist.c (_push_range_list) and scontrol 22.05.8 agree that the last group
  varies fastest, then the first, then each later one.

``scontrol show hostnames`` needs a slurm.conf but no running controller (seen with 22.05.8: it
answers in milliseconds with nothing listening), so these tests give it a two-line one.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from slurm_cluster import SEARCH_PATH, unavailable

from mnist_hpc.job import hostlist

TABLE = [
    ("nid001", ["nid001"]),
    ("alpha,beta,gamma", ["alpha", "beta", "gamma"]),
    ("linux[0-3,128]", ["linux0", "linux1", "linux2", "linux3", "linux128"]),
    ("lx[15,18,32-33]", ["lx15", "lx18", "lx32", "lx33"]),
    ("nid[001-003]", ["nid001", "nid002", "nid003"]),
    ("node[08-11]", ["node08", "node09", "node10", "node11"]),     # the width of 08, past 9
    ("n[9-11]", ["n9", "n10", "n11"]),                              # no padding: widths grow
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
    ("n[1,03]", ["n1", "n03"]),                                     # each range its own width
    ("a[1,3-4],b,c[7]", ["a1", "a3", "a4", "b", "c7"]),
    ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
    ("rack[0-1]_blade[0-1],login", ["rack0_blade0", "rack0_blade1", "rack1_blade0",
                                    "rack1_blade1", "login"]),
    ("a[1-2]b[3-4]c[5-6]", ["a1b3c5", "a1b3c6", "a2b3c5", "a2b3c6",
                            "a1b4c5", "a1b4c6", "a2b4c5", "a2b4c6"]),
    ("x[0-1]-[2-3]", ["x0-2", "x0-3", "x1-2", "x1-3"]),
    ("x3005c0s13b0n0,x3005c0s19b0n0", ["x3005c0s13b0n0", "x3005c0s19b0n0"]),
    ("node1.example.org,gpu[1-2]", ["node1.example.org", "gpu1", "gpu2"]),
    ("a[1-2],a[2]", ["a1", "a2", "a2"]),                            # kept as written
    ("a[1-2], b", ["a1", "a2", "b"]),
]
# Slurm rejects text after the last bracket and so never writes it into a node list; the
# reader takes it anyway, as other hostlist tools do
SUFFIX = ("gpu-[1-2]-ib", ["gpu-1-ib", "gpu-2-ib"])
INVALID = ["a[3-1]", "a[1-2", "a1-2]", "a[]", "a[x]", "a[[1]]", "a[1-2-3]", "a[-1]", "a[1,]"]


@pytest.mark.parametrize("text, hosts", TABLE + [SUFFIX], ids=lambda v: str(v))
def test_parse(text, hosts):
    assert hostlist.parse(text) == hosts


@pytest.mark.parametrize("text", INVALID)
def test_parse_rejects_what_is_no_host_list(text):
    with pytest.raises(ValueError, match=r"brackets|numbers and rising ranges"):
        hostlist.parse(text)


def test_parse_of_nothing_is_no_host():
    assert hostlist.parse("") == []


# --- against the real scontrol -------------------------------------------------------------

@pytest.fixture
def scontrol(tmp_path, monkeypatch) -> str:
    """scontrol's path, configured by a minimal slurm.conf (SLURM_CONF, for this test only)."""
    found = shutil.which("scontrol", path=SEARCH_PATH)
    if found is None:
        unavailable("scontrol not found: apt-get install -y --no-install-recommends "
                    "slurm-client")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=hostlisttest\nSlurmctldHost=localhost\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    monkeypatch.setenv("PATH", SEARCH_PATH)
    return found


def scontrol_hostnames(scontrol: str, text: str) -> subprocess.CompletedProcess:
    return subprocess.run([scontrol, "show", "hostnames", text], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("text, hosts", TABLE, ids=lambda v: str(v))
def test_parse_agrees_with_scontrol(scontrol, text, hosts):
    done = scontrol_hostnames(scontrol, text)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.split() == hostlist.parse(text) == hosts


@pytest.mark.parametrize("text", INVALID[:1] + [SUFFIX[0]])
def test_scontrol_refusal_looks_like_success(scontrol, text):
    """Why expand checks the output and not only the exit status."""
    done = scontrol_hostnames(scontrol, text)
    assert (done.returncode, done.stdout) == (0, "")
    assert "Invalid hostlist" in done.stderr


def test_expand_takes_scontrols_answer(scontrol, monkeypatch):
    monkeypatch.setattr(hostlist, "parse", lambda text: pytest.fail("scontrol answers this"))
    text = "rack[1-2]-node[01-02]"
    assert hostlist.expand(text) == dict(TABLE)[text]


def test_expand_falls_back_when_scontrol_refuses(scontrol):
    assert hostlist.expand(SUFFIX[0]) == SUFFIX[1]
    with pytest.raises(ValueError, match=r"\[3-1\]"):
        hostlist.expand("a[3-1]")


def test_expand_falls_back_when_scontrol_hangs(scontrol, tmp_path, monkeypatch):
    """A configuration file that cannot be read makes scontrol retry for a minute."""
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))
    monkeypatch.setattr(hostlist, "SCONTROL_TIMEOUT_S", 0.5)
    start = time.monotonic()
    assert hostlist.expand("nid[001-002]") == ["nid001", "nid002"]
    assert time.monotonic() - start < 10


def test_expand_without_scontrol_parses(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no scontrol on the path
    assert hostlist.expand(SUFFIX[0]) == SUFFIX[1]
